"""The CLI's commands: each module adds its parser and runs it (``add_parser``, ``run``)."""

from prunekit.commands import bench, distill, evaluate, finetune, lottery, merge, prune

COMMANDS = (finetune, prune, lottery, distill, merge, evaluate, bench)

__all__ = ["COMMANDS"]
