"""The CLI's commands: each module adds its parser and runs it (``add_parser``, ``run``)."""

from prunekit.commands import bench, evaluate, finetune, lottery, prune

COMMANDS = (finetune, prune, lottery, evaluate, bench)

__all__ = ["COMMANDS"]
