"""A weighted semaphore of bytes: verifications hold what their decode will take.

A count of calls does not bound memory when one 16-megapixel WebP takes as
much as fifteen small PNGs, so each check first reserves its estimated
bytes (from the image's header) and waits, in arrival order, until they fit.
A reservation larger than the whole budget runs alone.
"""

from __future__ import annotations

import asyncio
from collections import deque


class MemoryBudget:
    def __init__(self, total_bytes: int) -> None:
        self.total = total_bytes
        self.available = total_bytes
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _capped(self, amount: int) -> int:
        return max(0, min(amount, self.total))

    async def acquire(self, amount: int) -> int:
        """Reserves ``amount`` bytes (at most the total), waiting behind earlier callers;
        returns what was reserved, to hand back to :meth:`release`."""
        amount = self._capped(amount)
        if not self._waiters and amount <= self.available:
            self.available -= amount
            return amount
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (amount, granted)
        self._waiters.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(amount)  # granted just as the caller gave up
            else:
                self._waiters.remove(entry)
                self._wake()  # those behind it may fit now
            raise
        return amount

    def release(self, amount: int) -> None:
        """Hands ``amount`` back (call on the event loop's thread)."""
        self.available = min(self.total, self.available + amount)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            amount, granted = self._waiters.popleft()
            self.available -= amount
            granted.set_result(None)
