"""Server-sent events and newline-delimited JSON out of a stream of messages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

T = TypeVar("T")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
"""No cache or proxy may hold events back (nginx buffers unless told)."""


def sse_event(value: Any) -> bytes:
    return b"data: " + json.dumps(value, separators=(",", ":")).encode() + b"\n\n"


def ndjson_line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


async def started_stream(stream: AsyncIterator[T]) -> T | None:
    """The stream's first message (None if it ends without one): waiting for it before the
    response starts lets admission's refusals and a backend's early errors answer with
    their own HTTP status instead of a 200 that fails later."""
    return await anext(stream, None)
