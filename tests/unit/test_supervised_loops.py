"""Each background loop of the processes survives an unexpected error: the readiness
watcher, the gateway's DNS refresh and its per-replica health watches are logged, counted
and running again after an injected failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY

from services.common import server
from services.common.health import StoppableHealthServicer
from services.common.server import READINESS_WATCHER, ServedProcess, start_readiness_watcher
from services.gateway import backends
from services.gateway.backends import BackendPool, EjectionPolicy, RetryBudget, parse_targets

SERVICE = "genmedia.v1.ImageGenerationService"
SERVING = health_pb2.HealthCheckResponse.SERVING
CHECK = health_pb2.HealthCheckRequest(service=SERVICE)
# supervise() waits 0.5 s before the first restart.
RESTARTED_WITHIN_S = 5.0


def restarts(task: str) -> float:
    return REGISTRY.get_sample_value("genmedia_background_restarts_total", {"task": task}) or 0.0


def failures_logged(caplog: pytest.LogCaptureFixture, task: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.getMessage() == f"background loop {task} failed" and r.exc_info is not None
    ]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(RESTARTED_WITHIN_S):
        while not condition():
            await asyncio.sleep(0.01)


def fail_once(real: Callable[..., Awaitable[Any]], calls: list[int]) -> Callable[..., Any]:
    """``real``, except that its first call raises: the injected bug."""

    async def flaky(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return await real(*args)

    return flaky


async def test_the_readiness_watcher_is_restarted_after_an_unexpected_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(server, "_check", fail_once(server._check, calls))
    before = restarts(READINESS_WATCHER)

    async def ready() -> bool:
        return True

    servicer = StoppableHealthServicer()
    process = ServedProcess([SERVICE], lambda _: None, readiness={SERVICE: ready})
    watcher = start_readiness_watcher(process, servicer, poll_s=0.01)
    try:
        await until(lambda: len(calls) > 1)
        async with asyncio.timeout(RESTARTED_WITHIN_S):  # and keeping health in step again
            while (await servicer.Check(CHECK, None)).status != SERVING:
                await asyncio.sleep(0.01)
    finally:
        watcher.cancel()
    assert restarts(READINESS_WATCHER) == before + 1
    assert len(failures_logged(caplog, READINESS_WATCHER)) == 1


def pool(resolve_interval_s: float = 10.0) -> BackendPool:
    return BackendPool(
        "image-generation",
        SERVICE,
        parse_targets("127.0.0.1:1"),
        lambda address, host: backends.aio.insecure_channel(address),
        EjectionPolicy(),
        RetryBudget(max_tokens=10, ratio=0.5),
        resolve_interval_s=resolve_interval_s,
    )


async def test_the_dns_refresh_is_restarted_after_an_unexpected_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = "image-generation dns refresh"
    before = restarts(task)
    backends_pool = pool(resolve_interval_s=0.01)
    await backends_pool.start()
    calls: list[int] = []
    monkeypatch.setattr(backends_pool, "refresh", fail_once(backends_pool.refresh, calls))
    try:
        await until(lambda: len(calls) > 2)  # failed, restarted, refreshing again
    finally:
        await backends_pool.close()
    assert restarts(task) == before + 1
    assert len(failures_logged(caplog, task)) == 1


class FlakyHealthStub:
    """A replica's health stub whose first Watch breaks with a bug; later ones say SERVING."""

    watches = 0

    def __init__(self, channel: object) -> None:
        pass

    def Watch(self, request: health_pb2.HealthCheckRequest) -> AsyncIterator[Any]:
        FlakyHealthStub.watches += 1
        if FlakyHealthStub.watches == 1:
            raise RuntimeError("injected failure")
        return self._serving()

    @staticmethod
    async def _serving() -> AsyncIterator[health_pb2.HealthCheckResponse]:
        yield health_pb2.HealthCheckResponse(status=SERVING)
        await asyncio.sleep(3600)


async def test_a_replica_health_watch_is_restarted_after_an_unexpected_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = "image-generation health watch"
    before = restarts(task)
    FlakyHealthStub.watches = 0
    monkeypatch.setattr(backends.health_pb2_grpc, "HealthStub", FlakyHealthStub)
    backends_pool = pool()
    await backends_pool.refresh()  # adds the replica and its watch, no DNS loop
    try:
        (replica,) = backends_pool.replicas.values()
        await until(lambda: replica.healthy)
    finally:
        await backends_pool.close()
    assert FlakyHealthStub.watches == 2
    assert restarts(task) == before + 1
    assert len(failures_logged(caplog, task)) == 1
