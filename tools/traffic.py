"""Steady traffic from a few threads, every call's start, end and status recorded.

Fault tests run it, break something on purpose, and then judge each call by
when it started against when the fault happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

# What a call that ended without an error status but without its last
# message (a stream cut short) is recorded as.
INCOMPLETE = "INCOMPLETE"
PAUSE_AFTER_FAILURE_S = 0.01


class Incomplete(Exception):
    """Raised by a call function when a reply is missing what a finished reply has."""


@dataclass(frozen=True)
class Call:
    worker: int
    started: float
    ended: float
    code: str
    details: str = ""

    def started_before(self, moment: float) -> bool:
        return self.started < moment

    def spans(self, moment: float) -> bool:
        return self.started < moment < self.ended


CallFunction = Callable[[int, int], Any]
"""(worker, n) -> anything; raises grpc.RpcError or Incomplete when the call failed."""


@dataclass
class Traffic:
    """``workers`` threads each calling ``call`` in a loop until the block ends."""

    call: CallFunction
    workers: int = 4
    pause_s: float = 0.0
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Traffic:
        for worker in range(self.workers):
            thread = threading.Thread(target=self._loop, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "a traffic thread hung"

    def _loop(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.call(worker, n)
                code, details = "OK", ""
            except grpc.RpcError as error:
                code, details = error.code().name, error.details() or ""
            except Incomplete as error:
                code, details = INCOMPLETE, str(error)
            with self._lock:
                self.calls.append(Call(worker, started, time.monotonic(), code, details))
            n += 1
            # A refusal comes back at once: do not spin on it while the
            # process under test drains with the same two cores.
            pause = self.pause_s if code == "OK" else max(self.pause_s, PAUSE_AFTER_FAILURE_S)
            if pause:
                time.sleep(pause)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def codes(self, calls: list[Call] | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for call in self.snapshot() if calls is None else calls:
            counts[call.code] = counts.get(call.code, 0) + 1
        return counts


def failures(calls: list[Call]) -> list[str]:
    return [f"{c.code}: {c.details}" for c in calls if c.code != "OK"]
