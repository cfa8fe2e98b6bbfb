"""Per-key limits kept in this gateway's memory (``GENMEDIA_QUOTA_STORE=memory``).

Exact for one gateway; with N replicas each enforces the limits on the calls
it sees, so a key can get up to N times them (use the Redis store there).
State is kept by key name, so a rotated key keeps its budget.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.usage import Usage
from services.gateway.key_limits import (
    Hold,
    budget_refusal,
    concurrency_refusal,
    rate_refusal,
    utc_day,
)
from services.gateway.keys import KeyPolicy

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._updated = now

    def take(self, now: float) -> float:
        """Takes one token; returns 0, or the seconds until one will be there (none taken)."""
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self._updated) * self.rate)
        self._updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class _KeyState:
    bucket: TokenBucket | None
    in_flight: int = 0
    day: dt.date | None = None
    used: Usage = field(default_factory=Usage)
    reserved: Usage = field(default_factory=Usage)
    """What calls in flight said they would generate: held until they end,
    so concurrent calls cannot all pass the same budget check."""


def _bucket_matches(bucket: TokenBucket | None, policy: KeyPolicy) -> bool:
    if policy.rate_per_s is None:
        return bucket is None
    return bucket is not None and (bucket.rate, bucket.capacity) == (
        policy.rate_per_s,
        policy.burst,
    )


class MemoryLimits:
    """The KeyLimits store of one gateway process; every method is synchronous inside."""

    def __init__(self, monotonic: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._keys: dict[str, _KeyState] = {}
        self._lease_ids = itertools.count()
        self._day = dt.date.min
        self._day_starts_at = self._day_ends_at = -math.inf

    def _today(self) -> dt.date:
        """The UTC date, recomputed only once the next midnight has passed."""
        now = self._wall()
        if not self._day_starts_at <= now < self._day_ends_at:
            self._day = utc_day(now)
            self._day_starts_at = dt.datetime.combine(self._day, dt.time(), dt.UTC).timestamp()
            self._day_ends_at = self._day_starts_at + 86400
        return self._day

    def _state(self, policy: KeyPolicy) -> _KeyState:
        state = self._keys.get(policy.name)
        if state is None:
            state = self._keys[policy.name] = _KeyState(bucket=None)
        if not _bucket_matches(state.bucket, policy):
            # A new key, or its rate changed in the keys file: renew the bucket only.
            rate = policy.rate_per_s
            state.bucket = TokenBucket(rate, policy.burst, self._monotonic()) if rate else None
        self._roll_day(state)
        return state

    def _roll_day(self, state: _KeyState) -> None:
        today = self._today()
        if state.day != today:
            state.day, state.used = today, Usage()

    async def admit(
        self, policy: KeyPolicy, estimate: Usage, units: tuple[str, ...], lease_s: float
    ) -> Hold:
        state = self._state(policy)
        limit = policy.daily_limit()
        if limit is not None:
            for unit in units:
                refusal = budget_refusal(
                    policy,
                    unit,
                    cap=getattr(limit, unit),
                    spent=getattr(state.used, unit),
                    held=getattr(state.reserved, unit),
                    asked=getattr(estimate, unit),
                    wall_time=self._wall(),
                )
                if refusal is not None:
                    raise refusal
        if policy.max_concurrent is not None and state.in_flight >= policy.max_concurrent:
            raise concurrency_refusal(policy, state.in_flight)
        if state.bucket is not None:
            wait_s = state.bucket.take(self._monotonic())
            if wait_s > 0:
                raise rate_refusal(policy, wait_s)
        state.in_flight += 1
        state.reserved = state.reserved + estimate
        return Hold(policy.name, str(next(self._lease_ids)), estimate, self)

    async def settle(self, hold: Hold, usage: Usage) -> None:
        if hold.settled:
            return
        hold.settled = True
        state = self._keys.get(hold.key_name)
        if state is None:
            return
        state.in_flight -= 1
        state.reserved = state.reserved - hold.estimate
        self._roll_day(state)
        state.used = state.used + usage

    async def charge_part(self, hold: Hold, usage: Usage) -> Usage:
        state = self._keys.get(hold.key_name)
        if state is None:
            return usage
        self._roll_day(state)
        if not hold.settled:
            state.used = state.used + usage
        return state.used

    async def used_today(self, key_name: str) -> Usage:
        state = self._keys.get(key_name)
        if state is None:
            return Usage()
        self._roll_day(state)
        return state.used

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
