"""Per-key limits (rate, concurrency, daily budget) and the gateway's load shedding.

State is kept in this gateway's memory, by key name (so a rotated key keeps
its budget). With several gateway replicas each enforces the limits on the
calls it sees; exact cluster-wide budgets would need a shared store.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.errors import ResourceExhausted
from services.common.usage import Usage
from services.gateway.keys import KeyPolicy

Clock = Callable[[], float]
UNITS = ("images", "megapixels", "tokens")
CONCURRENCY_RETRY_AFTER_S = 1.0
NOTHING = Usage()


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._updated = now

    def take(self, now: float) -> float:
        """Takes one token; returns 0, or the seconds until one will be there (none taken)."""
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _utc_day(wall_time: float) -> dt.date:
    return dt.datetime.fromtimestamp(wall_time, dt.UTC).date()


def seconds_to_utc_midnight(wall_time: float) -> float:
    tomorrow = _utc_day(wall_time) + dt.timedelta(days=1)
    midnight = dt.datetime.combine(tomorrow, dt.time(), dt.UTC)
    return midnight.timestamp() - wall_time


@dataclass
class _CallerState:
    bucket: TokenBucket | None
    in_flight: int = 0
    day: dt.date | None = None
    used: Usage = field(default_factory=Usage)
    reserved: Usage = field(default_factory=Usage)
    """What calls in flight said they would generate: held until they end,
    so concurrent calls cannot all pass the same budget check."""


@dataclass
class Ticket:
    """An admitted call: release it when the call ends, charge what it generated."""

    _state: _CallerState | None
    _book: Quotas
    _reserved: Usage = field(default_factory=Usage)
    _released: bool = False

    def charge(self, usage: Usage) -> None:
        if self._state is not None:
            self._book.charge(self._state, usage)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._book.in_flight -= 1
        if self._state is not None:
            self._state.in_flight -= 1
            self._state.reserved = self._state.reserved - self._reserved


def _bucket_matches(bucket: TokenBucket | None, policy: KeyPolicy) -> bool:
    if policy.rate_per_s is None:
        return bucket is None
    return bucket is not None and (bucket.rate, bucket.capacity) == (
        policy.rate_per_s,
        policy.burst,
    )


def _unit_name(unit: str, amount: float) -> str:
    return f"{amount:g} {unit}" if unit != "images" else f"{amount:g} image(s)"


class Quotas:
    """Admits calls within the global in-flight limit and each key's limits."""

    def __init__(
        self,
        max_in_flight: int,
        overload_retry_after_s: float,
        monotonic: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._overload_retry_after_s = overload_retry_after_s
        self._monotonic = monotonic
        self._wall = wall
        self._callers: dict[str, _CallerState] = {}
        self._day = dt.date.min
        self._day_starts_at = self._day_ends_at = -math.inf

    def _state(self, policy: KeyPolicy) -> _CallerState:
        state = self._callers.get(policy.name)
        if state is None:
            state = self._callers[policy.name] = _CallerState(bucket=None)
        if not _bucket_matches(state.bucket, policy):
            # A new key, or its rate changed in the keys file: renew the bucket only.
            rate = policy.rate_per_s
            state.bucket = TokenBucket(rate, policy.burst, self._monotonic()) if rate else None
        today = self._today()
        if state.day != today:
            state.day, state.used = today, Usage()
        return state

    def _today(self) -> dt.date:
        """The UTC date, recomputed only once the next midnight has passed."""
        now = self._wall()
        if not self._day_starts_at <= now < self._day_ends_at:
            self._day = _utc_day(now)
            self._day_starts_at = dt.datetime.combine(self._day, dt.time(), dt.UTC).timestamp()
            self._day_ends_at = self._day_starts_at + 86400
        return self._day

    def admit(
        self, policy: KeyPolicy | None, estimate: Usage = NOTHING, units: tuple[str, ...] = UNITS
    ) -> Ticket:
        """Raises ResourceExhausted (with a retry-after hint) or returns a Ticket.

        ``units`` are the budgets the call draws on (a text call is not refused
        because the image budget is spent); ``estimate`` is what the request
        will generate as far as it says (images asked for, max_new_tokens).
        The actual usage is charged later.
        """
        if self.in_flight >= self.max_in_flight:
            raise ResourceExhausted(
                f"the gateway is handling its limit of {self.max_in_flight} calls; "
                "retry after the retry-after-ms in the trailing metadata",
                self._overload_retry_after_s,
            )
        state = None
        if policy is not None:
            state = self._state(policy)
            self._check_budget(policy, state, estimate, units)
            self._check_concurrency(policy, state)
            self._check_rate(policy, state)
            state.in_flight += 1
            state.reserved = state.reserved + estimate
        self.in_flight += 1
        return Ticket(state, self, estimate)

    def _check_budget(
        self, policy: KeyPolicy, state: _CallerState, estimate: Usage, units: tuple[str, ...]
    ) -> None:
        limit = policy.daily_limit()
        if limit is None:
            return
        for unit in units:
            cap, spent = getattr(limit, unit), getattr(state.used, unit)
            held = getattr(state.reserved, unit)
            asked = getattr(estimate, unit)
            left = max(0.0, cap - spent - held)
            if spent + held < cap and asked <= left:
                continue
            asks = f"this call asks for {_unit_name(unit, asked)}; " if asked else ""
            if spent >= cap or asked > cap - spent:
                raise ResourceExhausted(
                    f"daily {unit} budget of key {policy.name!r} is spent: "
                    f"{asks}{left:g} of {cap:g} left today; it renews at 00:00 UTC",
                    seconds_to_utc_midnight(self._wall()),
                )
            raise ResourceExhausted(
                f"daily {unit} budget of key {policy.name!r}: {asks}{left:g} of {cap:g} left "
                f"while calls in flight hold {held:g}; retry when they finish",
                CONCURRENCY_RETRY_AFTER_S,
            )

    @staticmethod
    def _check_concurrency(policy: KeyPolicy, state: _CallerState) -> None:
        if policy.max_concurrent is not None and state.in_flight >= policy.max_concurrent:
            raise ResourceExhausted(
                f"key {policy.name!r} already has {state.in_flight} calls in flight, its limit; "
                "retry when one finishes",
                CONCURRENCY_RETRY_AFTER_S,
            )

    def _check_rate(self, policy: KeyPolicy, state: _CallerState) -> None:
        if state.bucket is None:
            return
        wait_s = state.bucket.take(self._monotonic())
        if wait_s > 0:
            raise ResourceExhausted(
                f"key {policy.name!r} is over its rate of {policy.rate_per_s:g} calls/s "
                f"(burst {policy.burst}); retry in {wait_s:.2f} s",
                wait_s,
            )

    def charge(self, state: _CallerState, usage: Usage) -> None:
        today = self._today()
        if state.day != today:
            state.day, state.used = today, Usage()
        state.used = state.used + usage

    def used_today(self, key_name: str) -> Usage:
        state = self._callers.get(key_name)
        return state.used if state is not None else Usage()
