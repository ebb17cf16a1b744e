"""The CLI's commands: each module adds its parser and runs it (``add_parser``, ``run``)."""

from prunekit.commands import (
    bench,
    compress,
    distill,
    evaluate,
    export,
    finetune,
    lottery,
    merge,
    prune,
    report,
    run,
    study,
)

COMMANDS = (run, compress, study, finetune, prune, lottery, distill, merge, evaluate, bench, export, report)

__all__ = ["COMMANDS"]
