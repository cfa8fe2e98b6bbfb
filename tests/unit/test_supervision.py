"""Background loops are restarted, logged and counted when they fail, and stop when cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from prometheus_client import REGISTRY

from services.common.supervision import supervise


def restarts(task: str) -> float:
    return REGISTRY.get_sample_value("genmedia_background_restarts_total", {"task": task}) or 0.0


async def test_a_failing_loop_is_logged_counted_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError(f"broken {len(runs)}")
        await asyncio.sleep(3600)

    assert restarts("flaky-test") == 0  # the series exists before any failure
    task = supervise("flaky-test", flaky, first_backoff_s=0.01, max_backoff_s=0.02)
    async with asyncio.timeout(5):
        while len(runs) < 3:
            await asyncio.sleep(0.01)
    assert restarts("flaky-test") == 2
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2 and failures[0].exc_info is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
