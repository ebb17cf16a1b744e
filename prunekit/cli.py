"""The ``prunekit`` command line: finetune, prune, evaluate, bench (one module each in ``commands/``).

Every user error (PrunekitError, a bad flag, an OSError such as a full disk) prints one line and exits
with code 2. SIGTERM is turned into a normal exit so temp folders are removed and no --out is touched.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence

from prunekit.commands import COMMANDS
from prunekit.errors import PrunekitError
from prunekit.logs import configure_logging


class OneLineParser(argparse.ArgumentParser):
    """Bad flags get one line (``prunekit CMD: error: ...``) and exit 2, without the usage block."""

    def error(self, message: str):
        # "argument --lr: expected a number > 0, found '-1'" -> "--lr -1: expected a number > 0", like other errors
        match = re.fullmatch(r"argument (-[\w-]+)(?:/\S+)?: (.*), found '(.*)'", message)
        if match:
            message = f"{match.group(1)} {match.group(3)}: {match.group(2)}"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="prunekit", description="Compress transformer models and measure it.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # a bad flag (one line printed) or --help
        return stop.code if isinstance(stop.code, int) else 2
    configure_logging(args.verbose)
    command = " ".join(filter(None, (args.command, getattr(args, "method", None), getattr(args, "format", None))))
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below, not at interpreter exit
    except BrokenPipeError:  # `prunekit recipes ... | head`: the reader left, nothing is wrong
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a command stopped by a closed pipe
    except PrunekitError as err:
        print(f"prunekit {command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permissions changed mid-run ...: say what and where
        where = f" ({err.filename})" if err.filename else ""
        print(f"prunekit {command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunekit: interrupted; --out was left as it was", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Under torchrun / accelerate launch, leave the process group before the interpreter exits: one torn
    down at exit aborted a process now and then ("terminate called without an active exception")."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
