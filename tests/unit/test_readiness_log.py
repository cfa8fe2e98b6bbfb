"""A service that turns NOT_SERVING says why in the log: once per change, not once per poll."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.common.health import StoppableHealthServicer
from services.common.server import ServedProcess, start_readiness_watcher

SERVICE = "genmedia.v1.TextGenerationService"
REFUSED = "readiness check failed: ConnectionError: triton refused the connection"


class Upstream:
    """A readiness check whose answer the test sets: "ready", "not ready" or "broken"."""

    def __init__(self) -> None:
        self.state = "broken"
        self.checks = 0

    async def check(self) -> bool:
        self.checks += 1
        if self.state == "broken":
            raise ConnectionError("triton refused the connection")
        return self.state == "ready"

    async def polled(self, times: int) -> None:
        target = self.checks + times
        async with asyncio.timeout(5):
            while self.checks < target:
                await asyncio.sleep(0.005)


async def test_each_change_to_not_serving_is_logged_once_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.common.server")
    upstream = Upstream()
    process = ServedProcess([SERVICE], lambda _: None, readiness={SERVICE: upstream.check})
    watcher = start_readiness_watcher(process, StoppableHealthServicer(), poll_s=0.001)
    try:
        for state in ("broken", "ready", "broken", "not ready", "ready"):
            upstream.state = state
            await upstream.polled(5)
    finally:
        watcher.cancel()

    logged = [
        (r.levelno, r.getMessage(), r.exc_info is not None)
        for r in caplog.records
        if r.name == "services.common.server"
    ]
    assert logged == [
        (logging.WARNING, f"{SERVICE} is NOT_SERVING: {REFUSED}", True),
        (logging.INFO, f"{SERVICE} is SERVING", False),
        (logging.WARNING, f"{SERVICE} is NOT_SERVING: {REFUSED}", True),
        (logging.WARNING, f"{SERVICE} is NOT_SERVING: its upstream is not ready", False),
        (logging.INFO, f"{SERVICE} is SERVING", False),
    ]
