"""Streams that coalesce when their consumer falls behind.

A hop that forwards a stream item by item pays its per-message cost for every
token. :func:`coalesced` hands items on one by one, at the cost of a plain
``async for``, while its consumer keeps up. Once the consumer takes longer
than ``behind_s`` over an item (writing it to a slow client, or waiting for a
busy CPU), it starts reading the source in a task of its own, and from then
on everything that arrived while the consumer was busy comes merged into one
item. Nothing waits to be merged: a lone item goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")

BEHIND_S = 0.002
"""A consumer that spends longer than this on one item is behind: read ahead from then on.
(One token's text through a service or the gateway takes a few tenths of a millisecond.)"""


class _End:
    """The source ended, normally or with ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


async def coalesced(
    source: AsyncIterator[T], merge: Callable[[list[T]], T], behind_s: float = BEHIND_S
) -> AsyncIterator[T]:
    """``source``'s items, those that waited merged by ``merge`` (given two or more, in order).

    The source's error is raised after the items that came before it; closing this
    iterator (or cancelling its reader) closes the source and any reading task.
    """
    items = source.__aiter__()
    try:
        while True:  # keeping up: no task, no queue
            try:
                item = await items.__anext__()
            except StopAsyncIteration:
                return
            handed = time.perf_counter()
            yield item
            if time.perf_counter() - handed > behind_s:
                break
        async with contextlib.aclosing(_read_ahead(items, merge)) as ahead:
            async for merged in ahead:
                yield merged
    finally:
        closer = getattr(items, "aclose", None)
        if closer is not None:
            await closer()


async def _read_ahead(items: AsyncIterator[T], merge: Callable[[list[T]], T]) -> AsyncIterator[T]:
    """Reads ``items`` in a task; yields what waited, merged."""
    waiting: asyncio.Queue[T | _End] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in items:
                waiting.put_nowait(item)
        except BaseException as error:
            task = asyncio.current_task()
            if isinstance(error, asyncio.CancelledError) and task and task.cancelling():
                raise  # we were told to stop: nobody is waiting any more
            # The source's own error, a CancelledError included (its channel closed
            # under it), is the consumer's to judge.
            waiting.put_nowait(_End(error))
        else:
            waiting.put_nowait(_End())

    reader = asyncio.create_task(pump())
    try:
        while True:
            ready = [await waiting.get()]
            while not waiting.empty():
                ready.append(waiting.get_nowait())
            end = ready.pop() if isinstance(ready[-1], _End) else None
            arrived: list[T] = ready  # type: ignore[assignment] - an _End only ever comes last
            if arrived:
                yield arrived[0] if len(arrived) == 1 else merge(arrived)
            if end is not None:
                if end.error is not None:
                    raise end.error
                return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
