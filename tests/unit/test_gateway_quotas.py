"""Admission and per-key limits: every case runs against both quota stores.

The memory store is one gateway's; the Redis store runs its Lua scripts in a
real redis-server. Both are driven by the same fake clock, so the same
figures must come out of both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
from redis.asyncio import Redis

from services.common.errors import RETRY_AFTER_HEADER, ResourceExhausted
from services.common.usage import Usage
from services.gateway.key_limits import KeyLimits, seconds_to_utc_midnight, share_of
from services.gateway.keys import UNLIMITED, DailyBudget, KeyPolicy
from services.gateway.memory_limits import MemoryLimits, TokenBucket
from services.gateway.quotas import Quotas
from services.gateway.redis_limits import RedisLimits
from services.launcher.redis_server import RedisServer
from tests.unit.redis_fixture import emptied_client

# 2024-05-01 23:59:00 UTC: a minute before the budgets renew.
BEFORE_MIDNIGHT = dt.datetime(2024, 5, 1, 23, 59, tzinfo=dt.UTC).timestamp()
LEASE_S = 60.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def policy(
    name: str = "alice",
    rate_per_s: float | None = None,
    burst: int = 1,
    max_concurrent: int | None = None,
    daily: DailyBudget = UNLIMITED,
) -> KeyPolicy:
    services = frozenset({"genmedia.v1.TextGenerationService"})
    return KeyPolicy(name, services, rate_per_s, burst, max_concurrent, daily)


def retry_after_ms(error: pytest.ExceptionInfo[ResourceExhausted]) -> int:
    assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    ((header, value),) = error.value.metadata
    assert header == RETRY_AFTER_HEADER == "retry-after-ms"
    return int(value)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(BEFORE_MIDNIGHT - 3600)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[KeyLimits]:
    if request.param == "memory":
        yield MemoryLimits(monotonic=clock, wall=clock)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    await (await emptied_client(server)).aclose()
    redis = RedisLimits.from_url(server.url, wall=clock)
    await redis.start()
    yield redis
    await redis.close()


@pytest.fixture
def quotas(store: KeyLimits, clock: FakeClock) -> Quotas:
    return Quotas(max_in_flight=100, overload_retry_after_s=0.5, store=store, wall=clock)


def gateway_on(server: RedisServer, wall: FakeClock) -> RedisLimits:
    """One more gateway's store in the test's Redis."""
    return RedisLimits.from_url(server.url, wall=wall)


async def spend(quotas: Quotas, key: KeyPolicy, usage: Usage, units: tuple[str, ...] = ()) -> None:
    """One call that generated ``usage``, admitted on that estimate."""
    ticket = await quotas.admit(key, usage, units or ("images", "megapixels", "tokens"))
    await ticket.finish(usage)


# -- TokenBucket -------------------------------------------------------------


def test_bucket_gives_its_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=4, capacity=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.25)
    assert bucket.take(0.0) == pytest.approx(0.25)  # a refusal takes nothing
    assert bucket.take(0.125) == pytest.approx(0.125)  # half a token is there


def test_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=2, capacity=2, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert bucket.take(0.5) == 0.0  # one token after half a second
    assert bucket.take(0.5) > 0
    # A long pause saves up only `capacity` tokens.
    assert [bucket.take(100.0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)


# -- the gateway-wide in-flight limit -----------------------------------------


async def test_global_in_flight_limit_sheds_load(store: KeyLimits) -> None:
    quotas = Quotas(max_in_flight=2, overload_retry_after_s=0.5, store=store)
    first, _ = await quotas.admit(None), await quotas.admit(policy())
    with pytest.raises(ResourceExhausted) as error:
        await quotas.admit(None)
    assert retry_after_ms(error) == 500
    assert "limit of 2 calls" in error.value.message
    await first.finish()
    assert quotas.in_flight == 1
    await quotas.admit(None)
    assert quotas.in_flight == 2


async def test_finishing_twice_is_harmless(quotas: Quotas) -> None:
    alice = policy(max_concurrent=1, daily=DailyBudget(images=10))
    ticket = await quotas.admit(alice, Usage(images=1))
    await ticket.finish(Usage(images=1))
    await ticket.finish(Usage(images=1))
    assert quotas.in_flight == 0
    assert await quotas.used_today("alice") == Usage(images=1)
    await quotas.admit(alice)
    with pytest.raises(ResourceExhausted, match="1 calls in flight"):
        await quotas.admit(alice)
    assert quotas.in_flight == 1


# -- per-key concurrency and rate ---------------------------------------------


async def test_per_key_concurrency(quotas: Quotas) -> None:
    alice = policy(max_concurrent=2)
    tickets = [await quotas.admit(alice), await quotas.admit(alice)]
    with pytest.raises(ResourceExhausted, match="already has 2 calls in flight") as error:
        await quotas.admit(alice)
    assert retry_after_ms(error) == 1000
    await quotas.admit(policy("bob", max_concurrent=2))  # other keys are not affected
    await tickets[0].finish()
    await quotas.admit(alice)


async def test_per_key_rate_with_retry_after_of_the_bucket_wait(
    quotas: Quotas, clock: FakeClock
) -> None:
    alice = policy(rate_per_s=4, burst=2)
    await (await quotas.admit(alice)).finish()
    await (await quotas.admit(alice)).finish()
    with pytest.raises(ResourceExhausted, match="rate of 4 calls/s") as error:
        await quotas.admit(alice)
    assert error.value.retry_after_s == pytest.approx(0.25)
    assert retry_after_ms(error) == 250
    await quotas.admit(policy("bob", rate_per_s=4, burst=2))  # bob has his own bucket
    clock.advance(0.125)
    with pytest.raises(ResourceExhausted) as error:
        await quotas.admit(alice)
    assert retry_after_ms(error) == 125
    clock.advance(0.125)
    await quotas.admit(alice)


async def test_refused_calls_take_no_lease(quotas: Quotas) -> None:
    alice = policy(rate_per_s=1, burst=1, max_concurrent=2)
    await quotas.admit(alice)
    for _ in range(3):
        with pytest.raises(ResourceExhausted, match="rate"):
            await quotas.admit(alice)
    assert quotas.in_flight == 1
    # Had the refusals taken leases, this would be a concurrency refusal.
    with pytest.raises(ResourceExhausted, match="rate"):
        await quotas.admit(alice)


async def test_a_changed_rate_renews_the_bucket_but_keeps_the_daily_usage(
    quotas: Quotas,
) -> None:
    slow = policy(rate_per_s=1, burst=1, daily=DailyBudget(images=10))
    await spend(quotas, slow, Usage(images=3))
    with pytest.raises(ResourceExhausted, match="rate"):
        await quotas.admit(slow)
    fast = replace(slow, rate_per_s=5, burst=2)
    await (await quotas.admit(fast)).finish()
    await (await quotas.admit(fast)).finish()
    with pytest.raises(ResourceExhausted, match="rate"):
        await quotas.admit(fast)
    assert await quotas.used_today("alice") == Usage(images=3)
    with pytest.raises(ResourceExhausted, match="7 of 10 left"):
        await quotas.admit(replace(fast, rate_per_s=None), Usage(images=8))


# -- daily budgets -------------------------------------------------------------


async def test_daily_budget_refuses_an_estimate_bigger_than_what_is_left(quotas: Quotas) -> None:
    alice = policy(daily=DailyBudget(images=10))
    await spend(quotas, alice, Usage(images=4))
    assert await quotas.used_today("alice") == Usage(images=4)
    with pytest.raises(ResourceExhausted) as error:
        await quotas.admit(alice, Usage(images=7))
    assert "7 image(s)" in error.value.message and "6 of 10 left" in error.value.message
    ticket = await quotas.admit(alice, Usage(images=6))
    await ticket.finish(Usage(images=6))
    assert await quotas.used_today("alice") == Usage(images=10)


async def test_a_spent_budget_refuses_even_a_zero_estimate_until_utc_midnight(
    quotas: Quotas, clock: FakeClock
) -> None:
    alice = policy(daily=DailyBudget(tokens=100))
    ticket = await quotas.admit(alice, Usage(tokens=50))
    await ticket.finish(Usage(tokens=120))  # went over the estimate
    clock.now = BEFORE_MIDNIGHT
    with pytest.raises(ResourceExhausted, match="daily tokens budget") as error:
        await quotas.admit(alice)
    assert "0 of 100 left" in error.value.message
    assert error.value.retry_after_s == pytest.approx(60.0)
    assert retry_after_ms(error) == 60_000
    clock.advance(59.5)
    with pytest.raises(ResourceExhausted) as error:
        await quotas.admit(alice)
    assert retry_after_ms(error) == 500
    clock.advance(0.5)  # 00:00:00 UTC: a new day
    await quotas.admit(alice, Usage(tokens=100))
    assert await quotas.used_today("alice") == Usage()


async def test_usage_settled_after_midnight_counts_towards_the_new_day(
    quotas: Quotas, clock: FakeClock
) -> None:
    alice = policy(daily=DailyBudget(images=10))
    ticket = await quotas.admit(alice, Usage(images=1))
    clock.now = BEFORE_MIDNIGHT + 120
    await ticket.finish(Usage(images=2))
    assert await quotas.used_today("alice") == Usage(images=2)
    await quotas.admit(alice, Usage(images=8))


async def test_a_long_stream_is_charged_as_it_goes_and_the_rest_at_its_end(
    quotas: Quotas,
) -> None:
    alice = policy(max_concurrent=1, daily=DailyBudget(megapixels=10))
    stream = await quotas.admit(alice, Usage(), ("megapixels",))
    await stream.charge_so_far(Usage(megapixels=2.5))
    await stream.charge_so_far(Usage(megapixels=2.5))  # the same total again: nothing more
    assert await quotas.used_today("alice") == Usage(megapixels=2.5)
    await stream.charge_so_far(Usage(megapixels=4))
    assert await quotas.used_today("alice") == Usage(megapixels=4)
    with pytest.raises(ResourceExhausted, match="1 calls in flight"):
        await quotas.admit(alice)  # the stream keeps its lease while it is charged
    await stream.finish(Usage(megapixels=5))
    assert await quotas.used_today("alice") == Usage(megapixels=5)  # not 9
    assert quotas.in_flight == 0


async def test_a_stream_that_spends_the_budget_is_told_to_end_with_all_of_it_charged(
    quotas: Quotas,
) -> None:
    alice = policy(daily=DailyBudget(megapixels=10))
    await spend(quotas, alice, Usage(megapixels=7))
    stream = await quotas.admit(alice, Usage(), ("megapixels",))
    await stream.charge_so_far(Usage(megapixels=2))
    with pytest.raises(ResourceExhausted, match="ran out during this stream") as error:
        await stream.charge_so_far(Usage(megapixels=3.5))
    assert "10.5 of 10 used today, 3.5 by this stream" in error.value.message
    assert error.value.retry_after_s == pytest.approx(3660.0)  # 22:59 UTC
    await stream.finish()  # the call ended without its trailer: charged what it reported
    assert await quotas.used_today("alice") == Usage(megapixels=10.5)


async def test_unlimited_units_never_refuse(quotas: Quotas) -> None:
    alice = policy(daily=DailyBudget(images=2))
    await spend(quotas, alice, Usage(tokens=1e12, megapixels=1e9))
    await (await quotas.admit(alice, Usage(images=2, tokens=1e12))).finish()
    with pytest.raises(ResourceExhausted, match="images"):
        await quotas.admit(alice, Usage(images=3))
    bob = policy("bob")  # no budget at all
    assert bob.daily_limit() is None
    for _ in range(3):
        await spend(quotas, bob, Usage(images=1e9, megapixels=1e9, tokens=1e9))


async def test_fractional_units_add_up_exactly_enough(quotas: Quotas) -> None:
    alice = policy(daily=DailyBudget(megapixels=1.0))
    for _ in range(4):
        await spend(quotas, alice, Usage(megapixels=0.25))
    with pytest.raises(ResourceExhausted, match=r"daily megapixels budget .* is spent"):
        await quotas.admit(alice, Usage(megapixels=0.25))


async def test_open_mode_has_no_per_key_limits(quotas: Quotas) -> None:
    for _ in range(50):
        ticket = await quotas.admit(None, Usage(images=1e9))
    await ticket.finish(Usage(images=1e9))  # nowhere to charge it: no error
    assert quotas.in_flight == 49


async def test_a_spent_budget_only_refuses_calls_that_draw_on_it(quotas: Quotas) -> None:
    alice = policy(daily=DailyBudget(images=1, tokens=0))
    await spend(quotas, alice, Usage(images=1), units=("images",))
    await (await quotas.admit(alice, Usage(), units=())).finish()  # a listing draws on none
    await (await quotas.admit(alice, Usage(), units=("megapixels",))).finish()  # unlimited
    with pytest.raises(ResourceExhausted, match="daily images budget"):
        await quotas.admit(alice, Usage(images=1), units=("images",))
    with pytest.raises(ResourceExhausted, match="daily tokens budget"):
        await quotas.admit(alice, Usage(), units=("tokens",))


async def test_concurrent_calls_cannot_all_pass_the_same_budget_check(quotas: Quotas) -> None:
    alice = policy(daily=DailyBudget(images=3))
    first = await quotas.admit(alice, Usage(images=2), units=("images",))
    with pytest.raises(ResourceExhausted, match="calls in flight hold 2") as error:
        await quotas.admit(alice, Usage(images=2), units=("images",))
    assert error.value.retry_after_s == 1.0  # not midnight: the hold ends with the call
    await (await quotas.admit(alice, Usage(images=1), units=("images",))).finish()  # 1 is free
    await first.finish(Usage(images=1))  # generated fewer than it asked for
    await (await quotas.admit(alice, Usage(images=2), units=("images",))).finish()


def test_seconds_to_utc_midnight() -> None:
    assert seconds_to_utc_midnight(BEFORE_MIDNIGHT) == pytest.approx(60.0)
    midnight = BEFORE_MIDNIGHT + 60
    assert seconds_to_utc_midnight(midnight) == pytest.approx(86400.0)


# -- only Redis: what outlives a gateway --------------------------------------------


async def test_redis_leases_and_holds_of_a_dead_gateway_expire(
    redis_server: RedisServer, redis_client: Redis, clock: FakeClock
) -> None:
    dead, alive = gateway_on(redis_server, wall=clock), gateway_on(redis_server, wall=clock)
    alice = policy(max_concurrent=1, daily=DailyBudget(images=4))
    await dead.admit(alice, Usage(images=4), ("images",), lease_s=5.0)  # never settled
    with pytest.raises(ResourceExhausted, match=r"1 calls in flight|hold 4"):
        await alive.admit(alice, Usage(images=1), ("images",), LEASE_S)
    clock.advance(5.001)
    hold = await alive.admit(alice, Usage(images=4), ("images",), LEASE_S)
    await alive.settle(hold, Usage(images=4))
    assert await alive.used_today("alice") == Usage(images=4)


async def test_redis_limits_are_shared_by_every_gateway(
    redis_server: RedisServer, redis_client: Redis, clock: FakeClock
) -> None:
    gateways = [gateway_on(redis_server, wall=clock) for _ in range(3)]
    alice = policy(rate_per_s=1, burst=3, daily=DailyBudget(images=5))
    for gateway in gateways:
        await gateway.settle(
            await gateway.admit(alice, Usage(images=1), ("images",), LEASE_S), Usage(images=1)
        )
    with pytest.raises(ResourceExhausted, match="rate"):
        await gateways[0].admit(alice, Usage(images=1), ("images",), LEASE_S)
    clock.advance(2.0)  # two tokens back
    hold = await gateways[1].admit(alice, Usage(images=2), ("images",), LEASE_S)
    with pytest.raises(ResourceExhausted, match="hold 2"):
        await gateways[2].admit(alice, Usage(images=1), ("images",), LEASE_S)
    await gateways[1].settle(hold, Usage(images=2))
    assert await gateways[2].used_today("alice") == Usage(images=5)


async def test_redis_scripts_come_back_after_redis_forgets_them(
    redis_server: RedisServer, redis_client: Redis, clock: FakeClock
) -> None:
    store = gateway_on(redis_server, wall=clock)
    await store.start()
    await redis_client.script_flush()  # what a restarted Redis knows of them
    hold = await store.admit(policy(max_concurrent=1), Usage(), (), LEASE_S)
    await store.settle(hold, Usage(tokens=3))
    assert await store.used_today("alice") == Usage(tokens=3)


async def test_a_day_of_usage_expires_a_day_after_it_ends(
    redis_server: RedisServer, redis_client: Redis, clock: FakeClock
) -> None:
    store = gateway_on(redis_server, wall=clock)
    await store.settle(await store.admit(policy(), Usage(), (), LEASE_S), Usage(images=1))
    (key,) = await redis_client.keys("genmedia:{alice}:used:*")
    assert key.endswith(":used:2024-05-01")
    ttl = await redis_client.ttl(key)
    assert 3660 + 86400 - 5 <= ttl <= 3660 + 86400  # 22:59 UTC: 61 minutes to midnight


# -- a replica's share --------------------------------------------------------------


def test_share_of_divides_rates_and_budgets_but_leaves_at_least_one_call() -> None:
    alice = policy(
        rate_per_s=10, burst=10, max_concurrent=4, daily=DailyBudget(images=50, megapixels=3)
    )
    third = share_of(alice, 3)
    assert third.rate_per_s == pytest.approx(10 / 3)
    assert (third.burst, third.max_concurrent) == (3, 1)
    assert third.daily == DailyBudget(images=16, megapixels=1.0, tokens=None)
    assert share_of(alice, 1) is alice
    assert share_of(policy(burst=1, max_concurrent=2), 10).max_concurrent == 1


async def test_redis_bucket_never_refills_the_same_time_twice(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    """A gateway whose clock (or call) lags another's must not move the bucket's time back."""
    ahead, behind = FakeClock(BEFORE_MIDNIGHT + 0.5), FakeClock(BEFORE_MIDNIGHT)
    gateways = gateway_on(redis_server, ahead), gateway_on(redis_server, behind)
    alice = policy(rate_per_s=1, burst=5)
    admitted = 0
    for _ in range(10):  # ten seconds of alternating calls: ten tokens, and the burst
        for gateway in gateways * 3:
            try:
                await gateway.settle(await gateway.admit(alice, Usage(), (), LEASE_S), Usage())
                admitted += 1
            except ResourceExhausted:
                pass
        ahead.advance(1.0)
        behind.advance(1.0)
    assert admitted == 5 + 9  # the tenth token is half a second away on the later clock


async def test_redis_holds_of_many_calls_add_up_and_expire_in_batches(
    redis_server: RedisServer, redis_client: Redis, clock: FakeClock
) -> None:
    """Thousands of calls in flight: the held total stays exact through expiry (in batches
    larger than one Lua unpack) and settlement."""
    dead, alive = gateway_on(redis_server, wall=clock), gateway_on(redis_server, wall=clock)
    alice = policy(daily=DailyBudget(images=5000))
    for _ in range(2500):  # a gateway that dies with these
        await dead.admit(alice, Usage(images=1), ("images",), lease_s=5.0)
    holds = [await alive.admit(alice, Usage(images=1), ("images",), LEASE_S) for _ in range(2000)]
    with pytest.raises(ResourceExhausted, match="500 of 5000 left while calls in flight hold 4500"):
        await alive.admit(alice, Usage(images=501), ("images",), LEASE_S)
    clock.advance(5.001)  # the dead gateway's 2,500 leases and holds expire
    with pytest.raises(
        ResourceExhausted, match="3000 of 5000 left while calls in flight hold 2000"
    ):
        await alive.admit(alice, Usage(images=3001), ("images",), LEASE_S)
    for hold in holds:
        await alive.settle(hold, Usage(images=1))
    assert await redis_client.exists("genmedia:{alice}:holds") == 0  # nothing left behind
    last = await alive.admit(alice, Usage(images=3000), ("images",), LEASE_S)
    await alive.settle(last, Usage(images=3000))
    assert await alive.used_today("alice") == Usage(images=5000)
