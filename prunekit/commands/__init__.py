"""The CLI's commands: each module adds its parser and runs it (``add_parser``, ``run``)."""

from prunekit.commands import bench, distill, evaluate, finetune, lottery, prune

COMMANDS = (finetune, prune, lottery, distill, evaluate, bench)

__all__ = ["COMMANDS"]
