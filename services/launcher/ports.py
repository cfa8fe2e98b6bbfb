"""Which process holds a port: checked before the launcher starts anything, and again
once a process it started answers, so it never takes another stack's health for its own."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
_COMMAND_CHARS = 60


@dataclass(frozen=True)
class PortUse:
    """A port the stack will listen on, and what for (e.g. "gateway gRPC")."""

    port: int
    purpose: str


class PortInUse(RuntimeError):
    """A port the stack needs is already taken."""


class NotOurListener(RuntimeError):
    """Something answered, but not (only) the process the launcher started."""


def listening_pids(port: int) -> set[int | None]:
    """Pids listening on TCP ``port`` on any address; None for one this user may not see."""
    return {
        connection.pid
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }


def _short_command(argv: list[str]) -> str:
    # One line, whatever the arguments hold (python -c scripts span several).
    text = " ".join(" ".join([Path(argv[0]).name, *argv[1:]]).split()) if argv else "?"
    return text if len(text) <= _COMMAND_CHARS else text[: _COMMAND_CHARS - 3] + "..."


def describe_process(pid: int | None) -> str:
    """``pid 1234 (python -m services.gateway)``, or ``another process`` when unknown."""
    if pid is None:
        return "another process"
    try:
        return f"pid {pid} ({_short_command(psutil.Process(pid).cmdline())})"
    except psutil.Error:
        return f"pid {pid}"


def describe_holders(port: int) -> str:
    known = sorted(pid for pid in listening_pids(port) if pid is not None)
    return " and ".join(describe_process(pid) for pid in known) or describe_process(None)


def is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers bind: what a stack just stopped left in TIME_WAIT does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _in_use_by(uses: list[PortUse], holder: str) -> str:
    named = [f"{use.port} ({use.purpose})" for use in uses]
    if len(named) == 1:
        return f"port {named[0]} is in use by {holder}"
    return f"ports {', '.join(named[:-1])} and {named[-1]} are in use by {holder}"


def check_free(uses: Iterable[PortUse], host: str = LOOPBACK) -> None:
    """Raises PortInUse naming every taken port and what holds it, one clause per holder."""
    by_holder: dict[str, list[PortUse]] = {}
    for use in uses:
        if not is_free(use.port, host):
            by_holder.setdefault(describe_holders(use.port), []).append(use)
    if by_holder:
        raise PortInUse("; ".join(_in_use_by(taken, who) for who, taken in by_holder.items()))


def _with_descendants(pid: int) -> set[int | None]:
    try:
        return {pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))}
    except psutil.NoSuchProcess:
        return {pid}


def confirm_listener(name: str, pid: int, port: int) -> None:
    """Raises NotOurListener unless ``pid`` listens on ``port`` and nothing else does.

    gRPC servers set SO_REUSEPORT, so a second server may share a port without an error:
    an answer on it proves nothing until the listeners are known. Children of ``pid``
    count as its own (a socket a model stub inherited).
    """
    holders = listening_pids(port)
    others = holders - _with_descendants(pid)
    who = " and ".join(describe_process(p) for p in others) or describe_process(None)
    ours = f"the {name} this launcher started (pid {pid})"
    if pid not in holders:
        raise NotOurListener(f"port {port} answered, but {ours} does not listen on it: {who} does")
    if others:
        raise NotOurListener(f"{ours} shares port {port} with {who}")
