"""Handing a decode step's tokens and endings to their sinks, off the decode loop.

Sending a token through Triton is a round trip between the python stub and
the server that releases the GIL while it waits. With `threads` > 0 a step's
sends run in parallel across sequences (in order within each) while the
loop already computes the next step; one coordinating thread takes the
steps in order, so every sink sees its tokens in order and its finish last.
With `threads` = 0 everything is sent inline, in order.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genmedia_models.continuous_batching import FinishReason, TokenSink


@dataclass
class Outbox:
    """One step's deliveries: tokens per sink (in order), then the endings."""

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

    def __bool__(self) -> bool:
        return bool(self.tokens or self.endings)


class TokenDelivery:
    """Delivers outboxes in order; remembers sinks whose emit failed."""

    def __init__(self, threads: int = 0) -> None:
        self._senders = ThreadPoolExecutor(threads, "token-send") if threads else None
        self._steps = ThreadPoolExecutor(1, "token-step") if threads else None
        self._previous: Future[None] | None = None
        self._failed: dict[Any, BaseException] = {}
        self._lock = threading.Lock()

    def deliver(self, outbox: Outbox) -> None:
        if not outbox:
            return
        if self._steps is None:
            self._send(outbox)
            return
        # One coordinating thread: a step's sends start after the previous step's.
        self._previous = self._steps.submit(self._send, outbox)

    def _send(self, outbox: Outbox) -> None:
        batches = list(outbox.tokens.items())
        run: Callable[..., Any] = self._senders.map if self._senders else map
        list(run(self._emit_all, batches))
        for sink, reason, error in outbox.endings:
            # A sink that fails to finish has no way left to reach its caller.
            with contextlib.suppress(Exception):
                sink.finish(reason, error)
            self.take_failure(sink)  # it has ended: nothing left to fail

    def emit_now(self, sink: TokenSink, token: int) -> None:
        """Send a sequence's first token at once, from the calling thread.

        Only for a sink that has nothing in flight: time to first token then
        waits for no other sequence's sends.
        """
        self._emit_all((sink, [token]))

    def _emit_all(self, batch: tuple[TokenSink, list[int]]) -> None:
        sink, tokens = batch
        try:
            for token in tokens:
                sink.emit(token)
        except Exception as error:  # noqa: BLE001 - the loop ends this sequence at its next step
            with self._lock:
                self._failed[sink] = error

    def take_failure(self, sink: TokenSink) -> BaseException | None:
        """The error of `sink`'s last failed emit, once."""
        with self._lock:
            return self._failed.pop(sink, None)

    def drain(self) -> None:
        """Wait until everything handed over so far is delivered."""
        if self._previous is not None:
            self._previous.result()

    def close(self) -> None:
        self.drain()
        for pool in (self._steps, self._senders):
            if pool is not None:
                pool.shutdown(wait=True)
