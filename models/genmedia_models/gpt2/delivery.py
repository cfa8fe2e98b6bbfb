"""Handing decode steps' tokens and endings to their sinks, off the decode loop.

Sending tokens through Triton is a round trip between the python stub and
the server that releases the GIL while it waits. With `threads` > 0 the
sends run on other threads while the loop already computes the next step:
one coordinating thread takes the steps in order, and each sink gets all of
a step's tokens in one emit (so every sink sees its tokens in order and its
finish last). When the coordinator is behind the loop, every step waiting
for it is delivered together: a sink gets the tokens of all of them in one
emit, one Triton response instead of one per token. When it keeps up, each
step goes out as soon as it is computed. With `threads` = 0 everything is
sent inline, in order, a step at a time. A sink that keeps its tokens until
its end (``keeps_tokens``) takes them inline either way: only its ending,
which sends them, goes to the thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from genmedia_models.gpt2.types import ErrorLog, FinishReason, TokenSink

logger = logging.getLogger(__name__)


def log_error(message: str, error: BaseException) -> None:
    """The default ErrorLog: Python's logging, with the traceback."""
    logger.error("%s: %s: %s", message, type(error).__name__, error, exc_info=error)


@dataclass
class Outbox:
    """Deliveries: tokens per sink (in order), then the endings."""

    tokens: dict[Any, list[int]] = field(default_factory=dict)
    endings: list[tuple[TokenSink, FinishReason, BaseException | None]] = field(
        default_factory=list
    )

    def token(self, sink: TokenSink, token: int) -> None:
        self.tokens.setdefault(sink, []).append(token)

    def finish(
        self, sink: TokenSink, reason: FinishReason, error: BaseException | None = None
    ) -> None:
        self.endings.append((sink, reason, error))

    def merge(self, later: Outbox) -> None:
        """Appends a later step's deliveries (a sink that ended takes no tokens after)."""
        for sink, tokens in later.tokens.items():
            self.tokens.setdefault(sink, []).extend(tokens)
        self.endings.extend(later.endings)

    def __bool__(self) -> bool:
        return bool(self.tokens or self.endings)


class TokenDelivery:
    """Delivers outboxes in order, coalescing those that wait; remembers failed sinks."""

    def __init__(self, threads: int = 0, log: ErrorLog = log_error) -> None:
        self._log = log
        self._senders = ThreadPoolExecutor(threads, "token-send") if threads else None
        self._coordinator = ThreadPoolExecutor(1, "token-step") if threads else None
        self._waiting: list[Outbox] = []
        self._busy = False
        self._idle = threading.Condition()
        self._failed: dict[Any, BaseException] = {}
        self._lock = threading.Lock()

    def deliver(self, outbox: Outbox) -> None:
        # A sink that only keeps its tokens (to send them all at its end) takes them here:
        # waking a thread for a list append costs more than the append.
        for sink in [sink for sink in outbox.tokens if getattr(sink, "keeps_tokens", False)]:
            self._emit((sink, outbox.tokens.pop(sink)))
        if not outbox:
            return
        if self._coordinator is None:
            self._send(outbox)
            return
        with self._idle:
            self._waiting.append(outbox)
            if self._busy:
                return  # the running coordinator takes it with whatever else waits
            self._busy = True
        self._coordinator.submit(self._coordinate)

    def _coordinate(self) -> None:
        while (combined := self._take_waiting()) is not None:
            try:
                self._send(combined)
            except Exception as error:  # noqa: BLE001 - a coordinator that died would stall every stream
                self._log("delivering a decode step failed", error)

    def _take_waiting(self) -> Outbox | None:
        """Every outbox waiting, merged in order; None (and idle) when none waits."""
        with self._idle:
            if not self._waiting:
                self._busy = False
                self._idle.notify_all()
                return None
            waiting, self._waiting = self._waiting, []
        combined = waiting[0]
        for later in waiting[1:]:
            combined.merge(later)
        return combined

    def _send(self, outbox: Outbox) -> None:
        batches = list(outbox.tokens.items())
        # One sink's sends go out from this thread: handing them to another costs more
        # than it saves (each hand-off wakes a thread and waits for the GIL).
        parallel = self._senders is not None and len(batches) > 1
        run: Callable[..., Any] = self._senders.map if parallel else map  # type: ignore[union-attr]
        list(run(self._emit, batches))
        for sink, reason, error in outbox.endings:
            self._finish(sink, reason, error)
            self.take_failure(sink)  # it has ended: nothing left to fail

    def _finish(self, sink: TokenSink, reason: FinishReason, error: BaseException | None) -> None:
        try:
            sink.finish(reason, error)
        except Exception as failure:  # noqa: BLE001 - the other sinks of the step still finish
            # Nothing is left to tell this sink's caller, who may wait until its deadline:
            # the log is the only trace.
            self._log(f"ending a stream ({reason.value}) failed; its caller was not told", failure)

    def emit_now(self, sink: TokenSink, token: int) -> None:
        """Send a sequence's first token at once, from the calling thread.

        Only for a sink that has nothing in flight: time to first token then
        waits for no other sequence's sends.
        """
        self._emit((sink, [token]))

    def _emit(self, batch: tuple[TokenSink, list[int]]) -> None:
        sink, tokens = batch
        try:
            sink.emit(tokens)
        except Exception as error:  # noqa: BLE001 - the loop ends this sequence at its next step
            with self._lock:
                self._failed[sink] = error

    def take_failure(self, sink: TokenSink) -> BaseException | None:
        """The error of `sink`'s last failed emit, once."""
        with self._lock:
            return self._failed.pop(sink, None)

    def drain(self) -> None:
        """Wait until everything handed over so far is delivered."""
        with self._idle:
            self._idle.wait_for(lambda: not self._busy)

    def close(self) -> None:
        self.drain()
        for pool in (self._coordinator, self._senders):
            if pool is not None:
                pool.shutdown(wait=True)
