"""The CLI's commands: each module adds its parser and runs it (``add_parser``, ``run``)."""

from prunekit.commands import bench, evaluate, finetune, prune

COMMANDS = (finetune, prune, evaluate, bench)

__all__ = ["COMMANDS"]
