"""The Redis quota store, with a local fallback while Redis is down or slow.

Every Redis call has a deadline of a few milliseconds. A call that misses it
is admitted by the fallback policy; when the connection fails, or several
calls in a row miss their deadline (one slow answer on a busy host is not an
outage), the gateway opens an *episode*: it logs once, counts it, sets
``genmedia_gateway_quota_store_up`` to 0 (an alert fires on it) and admits
every call by its fallback policy without calling Redis:

``local``
    Each replica enforces the key's limits divided by the number of replicas
    it last saw in Redis (``share_of``), in a fresh in-memory store; the daily
    budgets start from what Redis last said was left.
``fail-open``
    No per-key limits; only the gateway's own in-flight limit.
``fail-closed``
    Calls that need a key's limits are refused with UNAVAILABLE.

A probe tries Redis again every ``retry_s``; the first answer ends the
episode. What is owed to Redis by then (leases to release, usage of calls
admitted locally) is written to it, one round trip per key and day, so the
shared budgets count it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from services.common.errors import ResourceExhausted, Unavailable
from services.common.supervision import supervise
from services.common.usage import Usage
from services.gateway import metrics
from services.gateway.key_limits import Hold, KeyLimits, share_of, utc_day
from services.gateway.keys import DailyBudget, KeyPolicy
from services.gateway.memory_limits import MemoryLimits
from services.gateway.redis_limits import RedisLimits
from services.gateway.redis_pipe import StoreError

logger = logging.getLogger(__name__)
T = TypeVar("T")
STORE_ERRORS = (StoreError, OSError, TimeoutError)
TIMEOUTS_TO_OPEN = 3
"""Calls in a row past their deadline that open an episode (a refused connection opens
one at once)."""
MAX_OWED_LEASES = 100_000
"""Lease releases kept for Redis during an outage; beyond this they are dropped (and
counted): those leases then end at their own expiry. Usage owed is never dropped: it is
summed by key and day."""


class FallbackPolicy(StrEnum):
    LOCAL = "local"
    FAIL_OPEN = "fail-open"
    FAIL_CLOSED = "fail-closed"


class _NoLimits:
    """The store of fail-open: admits everything, remembers nothing."""

    async def admit(
        self, policy: KeyPolicy, estimate: Usage, units: tuple[str, ...], lease_s: float
    ) -> Hold:
        return Hold(policy.name, "", estimate, self)

    async def settle(self, hold: Hold, usage: Usage) -> None:
        hold.settled = True

    async def charge_part(self, hold: Hold, usage: Usage) -> Usage:
        return Usage()

    async def used_today(self, key_name: str) -> Usage:
        return Usage()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class _Owed:
    """What one key owes Redis for one day: usage to charge and leases to release."""

    usage: Usage = field(default_factory=Usage)
    lease_ids: list[str] = field(default_factory=list)


class ResilientLimits:
    """KeyLimits over Redis that keeps admitting (by its policy) while Redis cannot answer."""

    def __init__(
        self,
        redis: RedisLimits,
        policy: FallbackPolicy,
        timeout_s: float,
        retry_s: float,
        assumed_replicas: int,
        heartbeat_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.policy = policy
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._heartbeat_s = heartbeat_s
        self._monotonic = monotonic
        self.replicas = assumed_replicas
        """Gateways sharing the limits, as last seen in Redis (the setting until then)."""
        self.degraded = False
        self._timeouts_in_a_row = 0
        self._local: KeyLimits = MemoryLimits()
        self._owed: dict[tuple[str, dt.date], _Owed] = {}
        self._owed_leases = 0
        self._settling: dict[str, set[asyncio.Task[None]]] = {}
        """Settles on their way to Redis, by key (the calls' answers do not wait for them)."""
        self._task: asyncio.Task[None] | None = None
        metrics.quota_store_up.set(1)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Loads the scripts and joins the replica count; a Redis that cannot be reached
        now starts the gateway in an episode rather than not at all."""
        try:
            await self._call(self.redis.start())
            await self._beat()
        except STORE_ERRORS as exc:
            self._open_episode(exc)
        self._task = supervise("quota store", self._watch)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        settling = [task for tasks in self._settling.values() for task in tasks]
        if settling:
            await asyncio.wait(settling, timeout=self._timeout_s * 10)
        if not self.degraded:
            with contextlib.suppress(*STORE_ERRORS):
                await self._call(self.redis.leave())
        await self.redis.close()

    async def _watch(self) -> None:
        """Heartbeats while Redis answers (and writes what is owed); probes it every
        retry_s while it does not."""
        while True:
            await asyncio.sleep(self._retry_s if self.degraded else self._heartbeat_s)
            try:
                await self._beat()
            except STORE_ERRORS as exc:
                self._open_episode(exc)
                continue
            if self.degraded:
                await self._close_episode()
            elif self._owed:  # a call or two past their deadline, no episode
                await self._pay_what_is_owed()

    async def _beat(self) -> None:
        # Heartbeats live three periods: a replica that stops is out of the count by then.
        self.replicas = max(1, await self._call(self.redis.heartbeat(3 * self._heartbeat_s)))

    # -- episodes ------------------------------------------------------------------

    async def _call(self, work: Awaitable[T]) -> T:
        async with asyncio.timeout(self._timeout_s):
            return await work

    def _failed(self, exc: BaseException) -> None:
        """A Redis call failed: a broken connection opens an episode at once, timeouts
        once several come in a row."""
        if isinstance(exc, TimeoutError):
            self._timeouts_in_a_row += 1
            if self._timeouts_in_a_row < TIMEOUTS_TO_OPEN:
                return
        self._open_episode(exc)

    def _open_episode(self, exc: BaseException) -> None:
        if self.degraded:
            return
        self.degraded = True
        self._local = self._fallback_store()
        metrics.quota_store_up.set(0)
        metrics.quota_store_episodes.inc()
        logger.error(
            "quota store unreachable (%s); admitting by the %s fallback with %d replica(s) "
            "until Redis answers again",
            type(exc).__name__ if isinstance(exc, TimeoutError) else exc,
            self.policy.value,
            self.replicas,
        )

    async def _close_episode(self) -> None:
        if not await self._pay_what_is_owed():
            return
        self.degraded = False
        self._timeouts_in_a_row = 0
        metrics.quota_store_up.set(1)
        logger.warning("quota store answers again; shared limits back in force")

    async def _pay_what_is_owed(self) -> bool:
        """Writes the owed usage and releases to Redis; False if it failed again."""
        while self._owed:
            (key_name, day), owed = next(iter(self._owed.items()))
            try:
                await self._call(self.redis.charge(key_name, owed.usage, owed.lease_ids, day))
            except STORE_ERRORS as exc:
                logger.warning("quota store answered, then failed again (%s)", exc)
                return False
            del self._owed[(key_name, day)]
            self._owed_leases -= len(owed.lease_ids)
        return True

    def _fallback_store(self) -> KeyLimits:
        if self.policy is FallbackPolicy.FAIL_OPEN:
            return _NoLimits()
        return MemoryLimits()

    def _owe(self, key_name: str, usage: Usage, lease_id: str = "") -> None:
        owed = self._owed.setdefault((key_name, self._today()), _Owed())
        owed.usage = owed.usage + usage
        if not lease_id:
            return
        if self._owed_leases >= MAX_OWED_LEASES:
            metrics.quota_releases_dropped.inc()
            return
        owed.lease_ids.append(lease_id)
        self._owed_leases += 1

    # -- KeyLimits -------------------------------------------------------------------

    async def admit(
        self, policy: KeyPolicy, estimate: Usage, units: tuple[str, ...], lease_s: float
    ) -> Hold:
        if not self.degraded:
            # A caller that got its answer may already be calling again: its previous
            # call's settle is on the same connection, ahead of this admission, so
            # Redis releases that lease first.
            lease_id = self.redis.new_lease_id()
            try:
                hold = await self._call(
                    self.redis.admit(policy, estimate, units, lease_s, lease_id)
                )
            except ResourceExhausted:
                self._timeouts_in_a_row = 0  # a refusal is an answer
                raise
            except STORE_ERRORS as exc:
                self._failed(exc)
                # Redis may have run the script after all: its lease is given back.
                self._release_later(policy.name, lease_id)
            else:
                self._timeouts_in_a_row = 0
                return hold
        metrics.quota_fallback_admissions.labels(self.policy.value).inc()
        if self.policy is FallbackPolicy.FAIL_CLOSED:
            raise Unavailable(
                "the gateway cannot check this key's limits right now (its quota store does "
                f"not answer); retry in {self._retry_s:g} s"
            )
        return await self._local.admit(self._local_share(policy), estimate, units, lease_s)

    def _today(self) -> dt.date:
        return utc_day(self.redis.wall())

    def _local_share(self, policy: KeyPolicy) -> KeyPolicy:
        """This replica's share of what the key has left, as Redis last said."""
        seen = self.redis.seen_used.get(policy.name)
        daily = policy.daily
        if seen is not None and seen[0] == self._today():
            used = seen[1]

            def left(cap: float | None, spent: float) -> float | None:
                return None if cap is None else max(0.0, cap - spent)

            daily = DailyBudget(
                images=left(daily.images, used.images),
                megapixels=left(daily.megapixels, used.megapixels),
                tokens=left(daily.tokens, used.tokens),
            )
        return share_of(replace(policy, daily=daily), self.replicas)

    async def settle(self, hold: Hold, usage: Usage) -> None:
        if hold.settled:
            return
        if hold.store is not self.redis:
            await hold.store.settle(hold, usage)  # admitted by the fallback
            if usage:
                self._owe(hold.key_name, usage)
            return
        hold.settled = True
        self._send_settle(hold.key_name, usage, hold.lease_id)

    async def charge_part(self, hold: Hold, usage: Usage) -> Usage:
        if not hold.settled and usage:
            if hold.store is not self.redis:
                await hold.store.charge_part(hold, usage)  # admitted by the fallback
                self._owe(hold.key_name, usage)
            else:
                self._send_settle(hold.key_name, usage, "")  # in line ahead; no lease ends
        return await self.used_today(hold.key_name)

    def _release_later(self, key_name: str, lease_id: str) -> None:
        self._send_settle(key_name, Usage(), lease_id)

    def _send_settle(self, key_name: str, usage: Usage, lease_id: str) -> None:
        """Puts the settle in line for Redis now (ahead of the key's next admission; the
        call's answer does not wait for it), or owes it to Redis during an episode."""
        if self.degraded:
            self._owe(key_name, usage, lease_id)
            return
        try:
            settled = self.redis.charge_soon(key_name, usage, (lease_id,) if lease_id else ())
        except STORE_ERRORS as exc:
            self._failed(exc)
            self._owe(key_name, usage, lease_id)
            return
        task = asyncio.create_task(self._settle_in_redis(settled, key_name, usage, lease_id))
        self._settling.setdefault(key_name, set()).add(task)
        task.add_done_callback(lambda done: self._settled(key_name, done))

    async def _settle_in_redis(
        self, settled: Awaitable[None], key_name: str, usage: Usage, lease_id: str
    ) -> None:
        try:
            await self._call(settled)
        except STORE_ERRORS as exc:
            self._failed(exc)
            self._owe(key_name, usage, lease_id)  # written with the next heartbeat

    def _settled(self, key_name: str, task: asyncio.Task[None]) -> None:
        tasks = self._settling.get(key_name)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._settling[key_name]

    async def used_today(self, key_name: str) -> Usage:
        """Redis's total; during an episode, or if Redis fails now, this replica's own."""
        if not self.degraded:
            try:
                return await self._call(self.redis.used_today(key_name))
            except STORE_ERRORS as exc:
                self._failed(exc)
        seen = self.redis.seen_used.get(key_name)
        before = seen[1] if seen is not None and seen[0] == self._today() else Usage()
        return before + await self._local.used_today(key_name)
