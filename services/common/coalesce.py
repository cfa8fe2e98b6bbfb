"""Streams that coalesce when their consumer falls behind.

A hop that forwards a stream item by item pays its per-message cost for every
token. :func:`coalesced` reads the source in a task of its own; the consumer
gets each item as soon as it arrives when it keeps up, and everything that
arrived while it was busy (writing the previous message to a slow client)
merged into one item when it does not. Nothing waits to be merged: a lone
item goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")


class _End:
    """The source ended, normally or with ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


async def coalesced(source: AsyncIterator[T], merge: Callable[[list[T]], T]) -> AsyncIterator[T]:
    """``source``'s items, those that waited merged by ``merge`` (given two or more, in order).

    The source's error is raised after the items that came before it; closing this
    iterator (or cancelling its reader) cancels the reading task and closes the source.
    """
    waiting: asyncio.Queue[T | _End] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
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
            items: list[T] = ready  # type: ignore[assignment] - an _End only ever comes last
            if items:
                yield items[0] if len(items) == 1 else merge(items)
            if end is not None:
                if end.error is not None:
                    raise end.error
                return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        closer = getattr(source, "aclose", None)
        if closer is not None:
            await closer()
