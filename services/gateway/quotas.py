"""Admission: the gateway's own in-flight limit (load shedding) and each key's limits.

The key limits live in a quota store (``key_limits.KeyLimits``): this gateway's
memory by default, or Redis shared by every replica
(``GENMEDIA_QUOTA_STORE``). The in-flight limit protects this process and
stays local.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.common.errors import ResourceExhausted
from services.common.usage import Usage
from services.gateway.key_limits import UNITS, Hold, KeyLimits, seconds_to_utc_midnight
from services.gateway.keys import KeyPolicy
from services.gateway.memory_limits import MemoryLimits

NOTHING = Usage()


class Ticket:
    """An admitted call: finish it once, with what it generated."""

    __slots__ = ("_charged", "_finished", "_hold", "_policy", "_quotas", "_units")

    def __init__(
        self,
        quotas: Quotas,
        hold: Hold | None,
        policy: KeyPolicy | None = None,
        units: tuple[str, ...] = UNITS,
    ) -> None:
        self._quotas = quotas
        self._hold = hold
        self._policy = policy
        self._units = units
        self._finished = False
        self._charged = NOTHING
        """What :meth:`charge_so_far` has charged already (``finish`` charges the rest)."""

    async def charge_so_far(self, usage: Usage) -> None:
        """Charges a long call's running total ``usage`` as it goes, and raises
        ResourceExhausted once the key's daily budget for one of its units is spent: the
        call should end there (what it generated up to now is charged)."""
        if self._hold is None or self._finished or self._policy is None:
            return
        more = usage - self._charged
        if not more:
            return
        self._charged = self._charged + more
        used = await self._quotas.store.charge_part(self._hold, more)
        limit = self._policy.daily_limit()
        if limit is None:
            return
        for unit in self._units:
            cap, spent = getattr(limit, unit), getattr(used, unit)
            if spent >= cap:
                raise ResourceExhausted(
                    f"daily {unit} budget of key {self._policy.name!r} ran out during this "
                    f"stream ({spent:g} of {cap:g} used today, {getattr(usage, unit):g} by "
                    "this stream, all charged); it renews at 00:00 UTC",
                    seconds_to_utc_midnight(self._quotas.wall()),
                )

    async def finish(self, usage: Usage = NOTHING) -> None:
        """Ends the call's lease and hold and charges ``usage`` (less what was charged as it
        went); a second call does nothing."""
        if self._finished:
            return
        self._finished = True
        try:
            if self._hold is not None:
                await self._quotas.store.settle(self._hold, usage - self._charged)
        finally:
            self._quotas.in_flight -= 1


class Quotas:
    """Admits calls within the gateway-wide in-flight limit and each key's limits."""

    def __init__(
        self,
        max_in_flight: int,
        overload_retry_after_s: float,
        store: KeyLimits | None = None,
        lease_margin_s: float = 10.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.wall = wall
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.store: KeyLimits = store or MemoryLimits()
        self._overload_retry_after_s = overload_retry_after_s
        self._lease_margin_s = lease_margin_s

    async def admit(
        self,
        policy: KeyPolicy | None,
        estimate: Usage = NOTHING,
        units: tuple[str, ...] = UNITS,
        deadline_s: float = 0.0,
    ) -> Ticket:
        """Raises ResourceExhausted (with a retry-after hint) or returns a Ticket.

        ``units`` are the budgets the call draws on (a text call is not refused
        because the image budget is spent); ``estimate`` is what the request
        will generate as far as it says (images asked for, max_new_tokens);
        ``deadline_s`` is the time the call has, which bounds its lease.
        """
        if self.in_flight >= self.max_in_flight:
            raise ResourceExhausted(
                f"the gateway is handling its limit of {self.max_in_flight} calls; "
                "retry after the retry-after-ms in the trailing metadata",
                self._overload_retry_after_s,
            )
        self.in_flight += 1  # before the store's await, so concurrent admissions see it
        try:
            hold = None
            if policy is not None:
                lease_s = deadline_s + self._lease_margin_s
                hold = await self.store.admit(policy, estimate, units, lease_s)
        except BaseException:
            self.in_flight -= 1
            raise
        return Ticket(self, hold, policy, units)

    async def used_today(self, key_name: str) -> Usage:
        return await self.store.used_today(key_name)
