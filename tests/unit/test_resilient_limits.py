"""The Redis quota store's fallback, against a real redis-server that is killed,
stopped (SIGSTOP: a Redis that hangs) and restarted."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from services.common.errors import ResourceExhausted, Unavailable
from services.common.usage import Usage
from services.gateway import metrics
from services.gateway.keys import DailyBudget, KeyPolicy
from services.gateway.quotas import Quotas
from services.gateway.redis_limits import RedisLimits
from services.gateway.resilient_limits import TIMEOUTS_TO_OPEN, FallbackPolicy, ResilientLimits
from services.launcher.redis_server import RedisServer
from services.launcher.stack import free_port

TIMEOUT_S = 0.05
RETRY_S = 0.1
ALL_UNITS = ("images", "megapixels", "tokens")


def policy(**limits: object) -> KeyPolicy:
    return KeyPolicy("alice", frozenset({"genmedia.v1.ImageGenerationService"}), **limits)  # type: ignore[arg-type]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(port=free_port(), work_dir=tmp_path / "redis")
    redis.start()
    yield redis
    redis.kill()


async def resilient(
    url: str, fallback: FallbackPolicy = FallbackPolicy.LOCAL, assumed_replicas: int = 1
) -> ResilientLimits:
    store = ResilientLimits(
        RedisLimits.from_url(url),
        fallback,
        timeout_s=TIMEOUT_S,
        retry_s=RETRY_S,
        assumed_replicas=assumed_replicas,
        heartbeat_s=0.2,
    )
    await store.start()
    return store


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[ResilientLimits]:
    limits = await resilient(server.url)
    yield limits
    await limits.close()


async def until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def outages() -> float:
    return metrics.quota_store_episodes._value.get()


async def test_a_redis_that_cannot_be_reached_at_start_starts_the_gateway_degraded() -> None:
    before = outages()
    store = await resilient(f"redis://127.0.0.1:{free_port()}/0", assumed_replicas=2)
    try:
        assert store.degraded and metrics.quota_store_up._value.get() == 0
        assert outages() == before + 1
        quotas = Quotas(100, 1.0, store)
        alice = policy(max_concurrent=4)
        await quotas.admit(alice)
        await quotas.admit(alice)  # half of 4, as one of 2 replicas
        with pytest.raises(ResourceExhausted, match="2 calls in flight"):
            await quotas.admit(alice)
    finally:
        await store.close()


async def test_killed_redis_falls_back_then_comes_back_with_what_was_served_meanwhile(
    server: RedisServer, store: ResilientLimits, caplog: pytest.LogCaptureFixture
) -> None:
    quotas = Quotas(100, 1.0, store)
    alice = policy(max_concurrent=2, daily=DailyBudget(images=10))
    await (await quotas.admit(alice, Usage(images=4))).finish(Usage(images=4))
    in_redis = await quotas.admit(alice, Usage(images=1))  # holds a Redis lease
    server.kill()
    with caplog.at_level(logging.ERROR, logger="services.gateway.resilient_limits"):
        # The 6 images left, as Redis last said, for this single replica.
        local = await quotas.admit(alice, Usage(images=5))
        with pytest.raises(ResourceExhausted, match="1 of 6 left"):
            await quotas.admit(alice, Usage(images=2))
        await local.finish(Usage(images=5))
        await in_redis.finish(Usage(images=1))  # kept until Redis answers
    assert store.degraded
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "quota store unreachable" in caplog.records[0].message

    server.start()  # an empty Redis on the same port, as after a crash without persistence
    await until(lambda: not store.degraded, timeout_s=RETRY_S * 20)
    assert metrics.quota_store_up._value.get() == 1
    # Written back: the usage of both calls, and the Redis lease is gone.
    assert await quotas.used_today("alice") == Usage(images=6)
    both = [await quotas.admit(alice), await quotas.admit(alice)]
    with pytest.raises(ResourceExhausted, match="2 calls in flight"):
        await quotas.admit(alice)
    for ticket in both:
        await ticket.finish()


async def test_a_stream_charged_as_it_goes_while_redis_is_down_pays_redis_later(
    server: RedisServer, store: ResilientLimits
) -> None:
    quotas = Quotas(100, 1.0, store)
    alice = policy(daily=DailyBudget(megapixels=10))
    in_redis = await quotas.admit(alice, Usage(), ("megapixels",))
    await in_redis.charge_so_far(Usage(megapixels=1))
    assert await quotas.used_today("alice") == Usage(megapixels=1)
    server.kill()
    await in_redis.charge_so_far(Usage(megapixels=3))  # 2 more, owed to Redis
    local = await quotas.admit(alice, Usage(), ("megapixels",))
    await local.charge_so_far(Usage(megapixels=2))
    # While Redis is away: what it last said (1), and what this replica charged since (2).
    assert await quotas.used_today("alice") == Usage(megapixels=3)
    await local.finish(Usage(megapixels=2))
    await in_redis.finish(Usage(megapixels=3))
    server.start()  # an empty Redis, as after a crash without persistence
    await until(lambda: not store.degraded, timeout_s=RETRY_S * 20)
    # Written back: everything charged while it was away (the first 1 went with it).
    assert await quotas.used_today("alice") == Usage(megapixels=4)


async def test_a_hanging_redis_costs_a_call_no_more_than_the_timeout(
    server: RedisServer, store: ResilientLimits
) -> None:
    quotas = Quotas(100, 1.0, store)
    alice = policy(max_concurrent=1)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        waits = []
        while not store.degraded:  # each answered by the fallback after a timeout
            started = time.monotonic()
            ticket = await quotas.admit(alice)
            waits.append(time.monotonic() - started)
            await ticket.finish()
        # Timeouts in a row (the admissions' and their leases' releases) open an episode.
        assert len(waits) <= TIMEOUTS_TO_OPEN
        started = time.monotonic()
        await (await quotas.admit(alice)).finish()
        later = time.monotonic() - started
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert waits[0] >= TIMEOUT_S
    # At most the key's previous settle's timeout, then its own.
    assert all(wait < 2 * TIMEOUT_S + 0.5 for wait in waits), waits
    assert later < 0.02  # no Redis call at all while the episode lasts
    await until(lambda: not store.degraded, timeout_s=RETRY_S * 30)


async def test_one_slow_answer_is_not_an_outage_and_its_lease_is_given_back(
    server: RedisServer, store: ResilientLimits
) -> None:
    quotas = Quotas(100, 1.0, store)
    alice = policy(max_concurrent=1)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        ticket = await quotas.admit(alice)  # by the fallback, after the timeout
    finally:
        os.kill(server.pid, signal.SIGCONT)
    await ticket.finish()
    assert not store.degraded
    # Redis ran the stalled admission once it woke up; its lease was released after it.
    await until(lambda: not store._settling)
    await (await quotas.admit(alice)).finish()
    await (await quotas.admit(alice)).finish()


async def test_fail_closed_refuses_with_unavailable_and_fail_open_admits(
    server: RedisServer,
) -> None:
    closed = await resilient(server.url, FallbackPolicy.FAIL_CLOSED)
    opened = await resilient(server.url, FallbackPolicy.FAIL_OPEN)
    try:
        server.kill()
        alice = policy(max_concurrent=1, daily=DailyBudget(images=1))
        with pytest.raises(Unavailable, match="cannot check this key's limits") as error:
            await Quotas(100, 1.0, closed).admit(alice, Usage(images=1))
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        quotas = Quotas(100, 1.0, opened)
        tickets = [await quotas.admit(alice, Usage(images=5)) for _ in range(5)]
        assert len(tickets) == 5
        assert await Quotas(100, 1.0, opened).admit(None) is not None  # open mode unaffected
    finally:
        await closed.close()
        await opened.close()


async def test_the_replica_count_comes_from_the_gateways_heartbeats(server: RedisServer) -> None:
    stores = [await resilient(server.url) for _ in range(3)]
    try:
        await until(lambda: all(store.replicas == 3 for store in stores))
        await stores[2].close()  # a clean shutdown leaves the count at once
        await until(lambda: all(store.replicas == 2 for store in stores[:2]))
        server.kill()
        alice = policy(rate_per_s=10, burst=10)
        admitted = 0
        for _ in range(20):
            try:
                await stores[0].admit(alice, Usage(), (), 60.0)
                admitted += 1
            except ResourceExhausted:
                pass
        assert admitted == 5  # burst 10 shared by the 2 replicas it last saw
    finally:
        for store in stores[:2]:
            await store.close()


async def test_a_call_ends_before_its_settle_and_the_next_admission_waits_for_it(
    store: ResilientLimits,
) -> None:
    quotas = Quotas(100, 1.0, store)
    alice = policy(max_concurrent=1, daily=DailyBudget(images=1000))
    for _ in range(200):  # one caller, one call after the other: never its own limit
        ticket = await quotas.admit(alice, Usage(images=1))
        await ticket.finish(Usage(images=1))
    await store.close()  # waits for the settles on their way
    assert await store.redis.used_today("alice") == Usage(images=200)
