"""Per-key limits shared by every gateway replica, kept in Redis.

Each admission is one Lua script (``lua/admit.lua``): bucket refill and take,
concurrency lease, budget hold, all or nothing, in one round trip. Settling is
one more (``lua/settle.lua``). The scripts are loaded at start and again when
Redis answers NOSCRIPT (after a restart); commands go over one multiplexed
connection (``redis_pipe``).

Keys of one API key share a hash tag, ``genmedia:{name}:...``, so each
script touches one slot. Leases and holds carry the call's deadline plus a
margin and end by themselves when the gateway that took them dies; a day's
usage expires a day after that UTC day ends.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
import time
from collections.abc import Coroutine, Sequence
from importlib import resources
from typing import Any

from services.common.usage import Usage
from services.gateway.key_limits import (
    UNITS,
    Hold,
    budget_refusal,
    concurrency_refusal,
    rate_refusal,
    seconds_to_utc_midnight,
    utc_day,
)
from services.gateway.keys import KeyPolicy
from services.gateway.memory_limits import Clock
from services.gateway.redis_pipe import RedisPipe

GATEWAYS_KEY = "genmedia:gateways"
"""Sorted set of gateway instances by heartbeat expiry: how many replicas share the limits."""
KEEP_DAY_S = 86400
"""A day's usage stays readable this long after the day ends (for reports), then expires."""


def _script(name: str) -> str:
    return resources.files("services.gateway").joinpath("lua", name).read_text()


def _number(value: float) -> str:
    return repr(float(value))


class RedisLimits:
    """The KeyLimits store over one Redis (standalone or managed; not Cluster or Sentinel)."""

    def __init__(self, pipe: RedisPipe, wall: Clock = time.time) -> None:
        self.pipe = pipe
        self.wall = wall
        self._admit = pipe.register(_script("admit.lua"))
        self._settle = pipe.register(_script("settle.lua"))
        self._heartbeat = pipe.register(_script("heartbeat.lua"))
        self.instance = secrets.token_hex(6)
        """This gateway's name in lease ids and heartbeats."""
        self._lease_ids = itertools.count()
        self.seen_used: dict[str, tuple[dt.date, Usage]] = {}
        """Each key's usage today as Redis last told this gateway (for the fallback)."""

    @classmethod
    def from_url(
        cls, url: str, password: str | None = None, wall: Clock = time.time
    ) -> RedisLimits:
        """The store in the Redis at ``url``; ``password`` is used when the URL has none."""
        return cls(RedisPipe.from_url(url, password), wall)

    async def start(self) -> None:
        """Loads the scripts (a first round trip that also proves the URL and password)."""
        await self.pipe.load_scripts()

    # -- keys ----------------------------------------------------------------------

    @staticmethod
    def _key(name: str, part: str) -> str:
        return f"genmedia:{{{name}}}:{part}"

    def _day_key(self, name: str, day: dt.date) -> str:
        return self._key(name, f"used:{day.isoformat()}")

    # -- KeyLimits -------------------------------------------------------------------

    def new_lease_id(self) -> str:
        return f"{self.instance}:{next(self._lease_ids)}"

    async def admit(
        self,
        policy: KeyPolicy,
        estimate: Usage,
        units: tuple[str, ...],
        lease_s: float,
        lease_id: str = "",
    ) -> Hold:
        """``lease_id``: the caller's (to release it should the answer not come back)."""
        now = self.wall()
        limit = policy.daily_limit()
        caps = [
            -1.0 if limit is None or unit not in units else getattr(limit, unit) for unit in UNITS
        ]
        lease_id = lease_id or self.new_lease_id()
        name = policy.name
        reply = await self.pipe.run(
            self._admit,
            keys=[
                self._key(name, "bucket"),
                self._key(name, "leases"),
                self._key(name, "holds"),
                self._day_key(name, utc_day(now)),
            ],
            args=[
                int(now * 1000),
                _number(policy.rate_per_s or 0),
                policy.burst,
                policy.max_concurrent or 0,
                lease_id,
                max(1, int(lease_s * 1000)),
                *(_number(getattr(estimate, unit)) for unit in UNITS),
                *(-1 if cap == float("inf") else _number(cap) for cap in caps),
            ],
        )
        verdict = reply[0]
        if verdict == "ok":
            return Hold(name, lease_id, estimate, self)
        if verdict == "budget":
            unit = UNITS[int(reply[1]) - 1]
            refusal = budget_refusal(
                policy,
                unit,
                cap=caps[UNITS.index(unit)],
                spent=float(reply[2]),
                held=float(reply[3]),
                asked=getattr(estimate, unit),
                wall_time=now,
            )
            assert refusal is not None, reply  # the script and budget_refusal agree
            raise refusal
        if verdict == "concurrency":
            raise concurrency_refusal(policy, int(reply[1]))
        raise rate_refusal(policy, float(reply[1]))

    async def settle(self, hold: Hold, usage: Usage) -> None:
        if hold.settled:
            return
        hold.settled = True
        await self.charge(hold.key_name, usage, (hold.lease_id,))

    async def charge_part(self, hold: Hold, usage: Usage) -> Usage:
        return await self.charge(hold.key_name, Usage() if hold.settled else usage)

    def _settle_script(
        self, key_name: str, usage: Usage, lease_ids: Sequence[str], day: dt.date
    ) -> tuple[list[str], list[Any]]:
        keys = [
            self._key(key_name, "leases"),
            self._key(key_name, "holds"),
            self._day_key(key_name, day),
        ]
        args = [
            *(_number(getattr(usage, unit)) for unit in UNITS),
            int(seconds_to_utc_midnight(self.wall())) + KEEP_DAY_S,
            *lease_ids,
        ]
        return keys, args

    def _saw(self, key_name: str, day: dt.date, totals: list[str]) -> None:
        if day == utc_day(self.wall()):
            self.seen_used[key_name] = (day, Usage(*(float(total) for total in totals)))

    async def charge(
        self,
        key_name: str,
        usage: Usage,
        lease_ids: Sequence[str] = (),
        day: dt.date | None = None,
    ) -> Usage:
        """Ends the leases (and their holds) and adds ``usage`` to ``day``'s total (today's);
        returns that total."""
        day = day or utc_day(self.wall())
        keys, args = self._settle_script(key_name, usage, lease_ids, day)
        totals = await self.pipe.run(self._settle, keys, args)
        self._saw(key_name, day, totals)
        return Usage(*(float(total) for total in totals))

    def charge_soon(
        self, key_name: str, usage: Usage, lease_ids: Sequence[str]
    ) -> Coroutine[Any, Any, None]:
        """:meth:`charge` put in line now, ahead of any admission that follows (see
        ``RedisPipe.run_soon``); await the result to know it was done."""
        day = utc_day(self.wall())
        keys, args = self._settle_script(key_name, usage, lease_ids, day)
        reply = self.pipe.run_soon(self._settle, keys, args)

        async def done() -> None:
            self._saw(key_name, day, await reply)

        return done()

    async def used_today(self, key_name: str) -> Usage:
        totals = await self.pipe.execute(
            "HMGET", self._day_key(key_name, utc_day(self.wall())), *UNITS
        )
        return Usage(*(float(total or 0) for total in totals))

    async def heartbeat(self, ttl_s: float) -> int:
        """Says this gateway is alive for ``ttl_s``; returns how many are."""
        count = await self.pipe.run(
            self._heartbeat,
            keys=[GATEWAYS_KEY],
            args=[int(self.wall() * 1000), self.instance, int(ttl_s * 1000)],
        )
        return int(count)

    async def leave(self) -> None:
        """Takes this gateway out of the replica count (a clean shutdown)."""
        await self.pipe.execute("ZREM", GATEWAYS_KEY, self.instance)

    async def close(self) -> None:
        await self.pipe.close()
