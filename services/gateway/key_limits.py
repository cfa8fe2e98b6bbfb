"""What a quota store does for the gateway, and the refusals every store words the same.

A store enforces each key's rate, concurrency and daily budgets. ``admit``
takes a concurrency lease and holds the call's estimate against the budgets,
all or nothing; ``settle`` gives both back and charges what the call really
generated. Two stores implement it: ``memory_limits`` (one gateway) and
``redis_limits`` (shared by every replica); ``resilient_limits`` falls back
from the second to the first while Redis cannot answer.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from typing import Protocol

from services.common.errors import ResourceExhausted
from services.common.usage import Usage
from services.gateway.keys import DailyBudget, KeyPolicy

UNITS = ("images", "megapixels", "tokens")
CONCURRENCY_RETRY_AFTER_S = 1.0
"""What to wait when a key's own calls in flight are in the way: about one call."""


@dataclass
class Hold:
    """One admitted call's lease and budget hold, until it is settled."""

    key_name: str
    lease_id: str
    estimate: Usage
    store: KeyLimits
    """The store that admitted it (a fallback store settles what it admitted itself)."""
    settled: bool = False


class KeyLimits(Protocol):
    async def start(self) -> None:
        """Connects (a store kept elsewhere); called once before the first admission."""
        ...

    async def admit(
        self, policy: KeyPolicy, estimate: Usage, units: tuple[str, ...], lease_s: float
    ) -> Hold:
        """Raises ResourceExhausted with a retry-after, or returns the call's hold.

        ``units`` are the budgets the call draws on; ``estimate`` is what the
        request says it will generate; ``lease_s`` is how long the lease and
        hold may outlive a gateway that dies before settling them.
        """
        ...

    async def settle(self, hold: Hold, usage: Usage) -> None:
        """Ends the lease and the hold, and charges ``usage`` to today."""
        ...

    async def charge_part(self, hold: Hold, usage: Usage) -> Usage:
        """Charges ``usage`` to today while the call goes on (a long stream): its lease and
        hold stay until it is settled. Returns the key's usage today, this included."""
        ...

    async def used_today(self, key_name: str) -> Usage: ...

    async def close(self) -> None: ...


# -- days ----------------------------------------------------------------------


def utc_day(wall_time: float) -> dt.date:
    return dt.datetime.fromtimestamp(wall_time, dt.UTC).date()


def seconds_to_utc_midnight(wall_time: float) -> float:
    tomorrow = utc_day(wall_time) + dt.timedelta(days=1)
    midnight = dt.datetime.combine(tomorrow, dt.time(), dt.UTC)
    return midnight.timestamp() - wall_time


# -- refusals --------------------------------------------------------------------


def _amount(unit: str, amount: float) -> str:
    return f"{amount:g} {unit}" if unit != "images" else f"{amount:g} image(s)"


def budget_refusal(
    policy: KeyPolicy,
    unit: str,
    *,
    cap: float,
    spent: float,
    held: float,
    asked: float,
    wall_time: float,
) -> ResourceExhausted | None:
    """None if ``asked`` fits in what is left of ``unit`` today, else the refusal."""
    left = max(0.0, cap - spent - held)
    if spent + held < cap and asked <= left:
        return None
    asks = f"this call asks for {_amount(unit, asked)}; " if asked else ""
    if spent >= cap or asked > cap - spent:
        return ResourceExhausted(
            f"daily {unit} budget of key {policy.name!r} is spent: "
            f"{asks}{left:g} of {cap:g} left today; it renews at 00:00 UTC",
            seconds_to_utc_midnight(wall_time),
        )
    return ResourceExhausted(
        f"daily {unit} budget of key {policy.name!r}: {asks}{left:g} of {cap:g} left "
        f"while calls in flight hold {held:g}; retry when they finish",
        CONCURRENCY_RETRY_AFTER_S,
    )


def concurrency_refusal(policy: KeyPolicy, running: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"key {policy.name!r} already has {running} calls in flight, its limit; "
        "retry when one finishes",
        CONCURRENCY_RETRY_AFTER_S,
    )


def rate_refusal(policy: KeyPolicy, wait_s: float) -> ResourceExhausted:
    return ResourceExhausted(
        f"key {policy.name!r} is over its rate of {policy.rate_per_s:g} calls/s "
        f"(burst {policy.burst}); retry in {wait_s:.2f} s",
        wait_s,
    )


# -- a replica's share -------------------------------------------------------------


def share_of(policy: KeyPolicy, replicas: int) -> KeyPolicy:
    """The limits one of ``replicas`` gateways enforces alone so that together they
    stay within the key's: rates and budgets divided, counts rounded down but at
    least one (a key is never shut out by the division)."""
    if replicas <= 1:
        return policy

    def part(value: float | None) -> float | None:
        return None if value is None else value / replicas

    daily = policy.daily
    return replace(
        policy,
        rate_per_s=part(policy.rate_per_s),
        burst=max(1, policy.burst // replicas),
        max_concurrent=(
            None if policy.max_concurrent is None else max(1, policy.max_concurrent // replicas)
        ),
        daily=DailyBudget(
            images=None if daily.images is None else math.floor(daily.images / replicas),
            megapixels=part(daily.megapixels),
            tokens=None if daily.tokens is None else math.floor(daily.tokens / replicas),
        ),
    )
