import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import pairwise

import grpc
import pytest
from grpc import aio

from services.common.errors import Unavailable
from services.gateway.backends import (
    BackendPool,
    EjectionPolicy,
    Replica,
    RetryBudget,
    parse_targets,
)

NAME = "image-generation"
A, B, C = "127.0.0.1:50901", "127.0.0.1:50902", "127.0.0.1:50903"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def insecure_channel(address: str, host: str) -> aio.Channel:
    return aio.insecure_channel(address)  # never connected: nothing calls it


PoolFactory = Callable[..., Awaitable[BackendPool]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


@pytest.fixture
async def make_pool(clock: FakeClock) -> AsyncIterator[PoolFactory]:
    """Builds pools of healthy replicas at the given addresses; closes them afterwards."""
    pools: list[BackendPool] = []

    async def make(
        addresses: list[str],
        ejection: EjectionPolicy | None = None,
        healthy: bool = True,
    ) -> BackendPool:
        pool = BackendPool(
            NAME,
            "genmedia.v1.ImageGenerationService",
            parse_targets(",".join(addresses)),
            insecure_channel,
            ejection or EjectionPolicy(after_failures=3, base_s=10, max_s=25),
            RetryBudget(max_tokens=10, ratio=0.5),
            clock=clock,
        )
        pools.append(pool)
        await pool.refresh()
        # Health is set by hand: stop the watchers so they cannot race with the test.
        for replica in pool.replicas.values():
            assert replica.watcher is not None
            replica.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replica.watcher
            replica.healthy = healthy
        return pool

    yield make
    for pool in pools:
        await pool.close()
        assert pool.replicas == {}


def picks(pool: BackendPool, count: int, avoid: set[str] | None = None) -> list[str]:
    return [pool.pick(avoid or set()).address for _ in range(count)]


def fail(pool: BackendPool, replica: Replica, times: int, code: grpc.StatusCode) -> None:
    for _ in range(times):
        pool.record(replica, code)


def is_ejected(pool: BackendPool, replica: Replica, clock: FakeClock) -> bool:
    return replica.ejected_until > clock()


# -- parse_targets -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a:1,b:2", [("a", 1), ("b", 2)]),
        ("dns:///svc.ns:50052", [("svc.ns", 50052)]),
        ("dns:svc:7", [("svc", 7)]),
        ("[::1]:5", [("::1", 5)]),
        (" a:1 , [fe80::1]:65535 ", [("a", 1), ("fe80::1", 65535)]),
        ("10.0.0.1:50052", [("10.0.0.1", 50052)]),
    ],
)
def test_parse_targets(value: str, expected: list[tuple[str, int]]) -> None:
    assert parse_targets(value) == expected


@pytest.mark.parametrize("value", ["a", "a:x", "a:0", ":5", "a:65536", "a:-1", "a:1,", ""])
def test_parse_targets_refuses_bad_entries(value: str) -> None:
    with pytest.raises(ValueError, match="not host:port"):
        parse_targets(value)


# -- RetryBudget -------------------------------------------------------------


def test_retry_budget_allows_retries_until_half_the_tokens_are_gone() -> None:
    budget = RetryBudget(max_tokens=10, ratio=0.5)
    for _ in range(4):
        budget.on_failure()
    assert budget.allows_retry()  # 6 > 5
    budget.on_failure()
    assert not budget.allows_retry()  # 5 is not above half
    budget.on_success()
    assert budget.allows_retry()  # 5.5
    for _ in range(100):
        budget.on_failure()
    assert budget.tokens == 0
    for _ in range(10):
        budget.on_success()
    assert budget.tokens == 5 and not budget.allows_retry()
    for _ in range(100):
        budget.on_success()
    assert budget.tokens == 10  # capped


async def test_record_feeds_the_retry_budget(make_pool: PoolFactory) -> None:
    pool = await make_pool([A])
    replica = pool.replicas[A]
    fail(pool, replica, 2, grpc.StatusCode.UNAVAILABLE)
    fail(pool, replica, 3, grpc.StatusCode.INVALID_ARGUMENT)
    assert pool.retry_budget.tokens == 8
    pool.record(replica, grpc.StatusCode.OK)
    assert pool.retry_budget.tokens == 8.5


# -- choice ------------------------------------------------------------------


async def test_round_robin_alternates_over_healthy_replicas(make_pool: PoolFactory) -> None:
    pool = await make_pool([A, B])
    chosen = picks(pool, 6)
    assert set(chosen) == {A, B}
    assert all(x != y for x, y in pairwise(chosen))
    pool3 = await make_pool([A, B, C])
    chosen = picks(pool3, 9)
    assert sorted(chosen) == sorted([A, B, C] * 3)


async def test_unhealthy_replicas_are_skipped(make_pool: PoolFactory) -> None:
    pool = await make_pool([A, B, C])
    pool.replicas[B].healthy = False
    assert set(picks(pool, 8)) == {A, C}
    pool.replicas[A].healthy = False
    assert picks(pool, 3) == [C, C, C]


async def test_avoid_is_preferred_but_falls_back(make_pool: PoolFactory) -> None:
    pool = await make_pool([A, B, C])
    assert set(picks(pool, 6, avoid={A})) == {B, C}
    assert picks(pool, 3, avoid={A, B}) == [C, C, C]
    assert set(picks(pool, 6, avoid={A, B, C})) == {A, B, C}  # all tried: any will do
    pool.replicas[B].healthy = pool.replicas[C].healthy = False
    assert picks(pool, 2, avoid={A}) == [A, A]


async def test_no_healthy_replica_is_unavailable(make_pool: PoolFactory) -> None:
    pool = await make_pool([A, B], healthy=False)
    assert not pool.ready()
    with pytest.raises(Unavailable) as error:
        pool.pick()
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert f"no healthy {NAME} backend" in error.value.message
    assert "2 known" in error.value.message
    pool.replicas[B].healthy = True
    assert pool.ready()
    assert pool.pick().address == B


async def test_no_replicas_at_all_is_unavailable(clock: FakeClock) -> None:
    pool = BackendPool(
        NAME, "svc", [], insecure_channel, EjectionPolicy(), RetryBudget(10, 0.5), clock=clock
    )
    assert not pool.ready()
    with pytest.raises(Unavailable, match="0 known"):
        pool.pick()


# -- outcomes and ejection ---------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.CANCELLED,
    ],
)
async def test_caller_side_statuses_never_eject(
    make_pool: PoolFactory, clock: FakeClock, code: grpc.StatusCode
) -> None:
    pool = await make_pool([A, B])
    fail(pool, pool.replicas[A], 50, code)
    assert not is_ejected(pool, pool.replicas[A], clock)
    assert set(picks(pool, 4)) == {A, B}


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    ],
)
async def test_consecutive_server_faults_eject(
    make_pool: PoolFactory, clock: FakeClock, code: grpc.StatusCode
) -> None:
    pool = await make_pool([A, B])
    a = pool.replicas[A]
    fail(pool, a, 2, code)
    assert not is_ejected(pool, a, clock)
    fail(pool, a, 1, code)
    assert a.ejected_until == 110.0
    assert picks(pool, 4) == [B, B, B, B]
    assert pool.ready()


async def test_a_success_resets_the_consecutive_count(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    pool = await make_pool([A, B])
    a = pool.replicas[A]
    fail(pool, a, 2, grpc.StatusCode.UNAVAILABLE)
    pool.record(a, grpc.StatusCode.OK)
    fail(pool, a, 2, grpc.StatusCode.INTERNAL)
    assert not is_ejected(pool, a, clock)
    fail(pool, a, 1, grpc.StatusCode.UNAVAILABLE)  # third in a row, mixed faults
    assert is_ejected(pool, a, clock)


async def test_ejection_doubles_up_to_the_cap_and_ends(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    pool = await make_pool([A, B])
    a = pool.replicas[A]
    durations = []
    for _ in range(4):
        fail(pool, a, 3, grpc.StatusCode.UNAVAILABLE)
        assert is_ejected(pool, a, clock)
        durations.append(a.ejected_until - clock.now)
        assert A not in picks(pool, 4)
        clock.now = a.ejected_until  # the ejection is over
        assert not is_ejected(pool, a, clock)
        assert set(picks(pool, 4)) == {A, B}
    assert durations == [10, 20, 25, 25]


async def test_failures_while_ejected_do_not_extend_the_ejection(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    pool = await make_pool([A, B])
    a = pool.replicas[A]
    fail(pool, a, 3, grpc.StatusCode.UNAVAILABLE)
    until = a.ejected_until
    fail(pool, a, 10, grpc.StatusCode.UNAVAILABLE)  # calls already on it when ejected
    assert a.ejected_until == until
    assert a.ejections == 1


async def test_max_ejected_percent_keeps_replicas_in_service(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    pool = await make_pool([A, B])  # 50 % of 2: one may be ejected
    fail(pool, pool.replicas[A], 3, grpc.StatusCode.UNAVAILABLE)
    fail(pool, pool.replicas[B], 30, grpc.StatusCode.UNAVAILABLE)
    assert is_ejected(pool, pool.replicas[A], clock)
    assert not is_ejected(pool, pool.replicas[B], clock)
    assert pool.ready()
    assert picks(pool, 2) == [B, B]

    single = await make_pool([C])
    fail(single, single.replicas[C], 30, grpc.StatusCode.INTERNAL)
    assert not is_ejected(single, single.replicas[C], clock)
    assert single.pick().address == C


async def test_the_last_available_replica_is_never_ejected(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    pool = await make_pool([A, B], EjectionPolicy(after_failures=1, max_ejected_percent=100))
    fail(pool, pool.replicas[A], 1, grpc.StatusCode.UNAVAILABLE)
    assert pool.replicas[A].ejected_until > clock.now
    fail(pool, pool.replicas[B], 3, grpc.StatusCode.UNAVAILABLE)
    assert pool.replicas[B].ejected_until <= clock.now
    assert pool.pick() is pool.replicas[B]


async def test_an_unhealthy_replica_does_not_count_as_a_spare(
    make_pool: PoolFactory, clock: FakeClock
) -> None:
    # localhost:port resolving to ::1 and 127.0.0.1 with the backend on one of them.
    pool = await make_pool([A, B], EjectionPolicy(after_failures=1, max_ejected_percent=50))
    pool.replicas[A].healthy = False
    fail(pool, pool.replicas[B], 5, grpc.StatusCode.UNAVAILABLE)
    assert pool.ready()
    assert pool.pick() is pool.replicas[B]


async def test_no_available_replica_is_unavailable_naming_the_backend(
    make_pool: PoolFactory,
) -> None:
    pool = await make_pool([A, B])
    for replica in pool.replicas.values():
        replica.healthy = False
    assert not pool.ready()
    with pytest.raises(Unavailable, match="no healthy image-generation backend"):
        pool.pick()


# -- discovery ---------------------------------------------------------------


async def test_a_host_name_resolves_to_its_addresses(clock: FakeClock) -> None:
    pool = BackendPool(
        NAME,
        "svc",
        [("localhost", 50999)],
        insecure_channel,
        EjectionPolicy(),
        RetryBudget(10, 0.5),
        clock=clock,
    )
    try:
        await pool.refresh()
        assert len(pool.replicas) >= 1
        assert set(pool.replicas) <= {"127.0.0.1:50999", "[::1]:50999"}
        assert all(r.watcher is not None for r in pool.replicas.values())
    finally:
        await pool.close()


async def test_a_removed_target_is_removed_on_the_next_refresh(make_pool: PoolFactory) -> None:
    pool = await make_pool([A, B])
    assert set(pool.replicas) == {A, B}
    pool.targets = parse_targets(A)
    await pool.refresh()
    assert set(pool.replicas) == {A}


async def test_addresses_follow_dns_and_a_failed_lookup_keeps_them(
    make_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: list[list[str]] = [["10.0.0.1", "10.0.0.2"]]

    async def getaddrinfo(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
        assert host == "svc.ns"
        if not answers[-1]:
            raise socket.gaierror("temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[-1]]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    pool = await make_pool(["svc.ns:50052"])
    assert set(pool.replicas) == {"10.0.0.1:50052", "10.0.0.2:50052"}
    kept = pool.replicas["10.0.0.2:50052"]

    answers.append(["10.0.0.2", "10.0.0.3"])  # a pod replaced
    await pool.refresh()
    assert set(pool.replicas) == {"10.0.0.2:50052", "10.0.0.3:50052"}
    assert pool.replicas["10.0.0.2:50052"] is kept  # same channel and state

    answers.append([])  # DNS down: keep what was known
    await pool.refresh()
    assert set(pool.replicas) == {"10.0.0.2:50052", "10.0.0.3:50052"}
