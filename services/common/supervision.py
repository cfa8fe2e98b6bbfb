"""Background loops that do not die silently.

A process's background loops (readiness watching, DNS refresh, health watches,
key reloading) are meant to run for the process's lifetime. :func:`supervise`
runs one as a task: an unexpected exception is logged with its traceback,
counted in ``genmedia_background_restarts_total{task}``, and the loop is
started again after a backoff that doubles up to a limit (and resets once a
run has lasted a while). Cancelling the task stops it for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

logger = logging.getLogger(__name__)

restarts = Counter(
    "genmedia_background_restarts_total",
    "Background loops restarted after an unexpected error, by loop.",
    ("task",),
)
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
HEALTHY_RUN_S = 60.0
"""A run that lasted this long was healthy: the next failure starts from the first backoff."""


def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    first_backoff_s: float = FIRST_BACKOFF_S,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> asyncio.Task[None]:
    """Runs ``run()`` as a task, again after every unexpected exception (see the module)."""
    restarts.labels(name)  # the series exists at 0 from the start

    async def keep_running() -> None:
        backoff = first_backoff_s
        while True:
            started = time.monotonic()
            try:
                await run()
                outcome = "returned"
            except asyncio.CancelledError:
                raise
            except Exception:
                outcome = "failed"
                logger.exception("background loop %s failed", name)
            if time.monotonic() - started >= HEALTHY_RUN_S:
                backoff = first_backoff_s
            logger.warning("background loop %s %s; restarting in %.1f s", name, outcome, backoff)
            restarts.labels(name).inc()
            await asyncio.sleep(backoff)
            backoff = min(max_backoff_s, backoff * 2)

    return asyncio.create_task(keep_running(), name=f"supervised {name}")
