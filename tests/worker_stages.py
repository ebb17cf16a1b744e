"""Stages the worker tests register: one that the kernel kills (as the out-of-memory killer would) and
one that runs out of memory as Python sees it. Imported by the worker process too (by module name)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from prunekit.stages import STAGES, StageResult, register_stage
from prunekit.stages.inputs import load_saved


@dataclass
class Nothing:
    """No options."""


def _register() -> None:
    if "killed-by-kernel" in STAGES:
        return

    @register_stage("killed-by-kernel", Nothing, "a stage the kernel kills", load=load_saved)
    def killed(context, config) -> StageResult:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    @register_stage("out-of-memory", Nothing, "a stage that cannot allocate", load=load_saved)
    def out_of_memory(context, config) -> StageResult:
        raise MemoryError("cannot allocate 1 TB")


_register()
