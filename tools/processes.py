"""The processes of a running local stack, by name: each genmedia process, tritonserver and
each python-backend stub it started (one per model instance: where the models live)."""

from __future__ import annotations

from pathlib import Path

import psutil

from services.common.registry import BACKENDS, GATEWAY
from services.launcher.stack import Stack


def _stub_name(process: psutil.Process) -> str:
    """The model a python-backend stub serves, from its model.py path on the command line."""
    for argument in process.cmdline():
        if argument.endswith("model.py"):
            return f"stub {Path(argument).parents[1].name}"
    return f"stub {process.pid}"


def triton_pids(stack: Stack) -> dict[str, int]:
    """tritonserver and each python-backend stub it started, by name."""
    triton_pid = stack.triton.pid
    if triton_pid is None:
        raise RuntimeError("Triton is not running")
    pids = {"tritonserver": triton_pid}
    for child in psutil.Process(triton_pid).children(recursive=True):
        pids[_stub_name(child)] = child.pid
    return pids


def service_pids(stack: Stack) -> dict[str, int]:
    return {process.name: stack.pid_of(process) for process in (*BACKENDS, GATEWAY)}
