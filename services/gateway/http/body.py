"""Request bodies read within a size limit, and parsed into what a route expects, each
failure a 4xx that says what to fix."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request

from services.gateway.http.call import HttpCall
from services.gateway.http.errors import CLIENT_CLOSED_REQUEST, HttpError

JsonObject = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class DoorLimits:
    """What every HTTP route holds a request to: its deadline, its body's size and pace."""

    default_deadline_s: float
    max_body_bytes: int
    body_timeout_s: float

    def call(self, request: Request) -> HttpCall:
        return HttpCall(request, self.default_deadline_s)

    def _body_timeout_s(self, call: HttpCall) -> float:
        call.check_headers()
        return min(self.body_timeout_s, call.time_remaining())

    async def body(self, call: HttpCall, request: Request) -> bytes:
        return await read_body(request, self.max_body_bytes, self._body_timeout_s(call))


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, refused with 413 as soon as it is known to be over ``max_bytes``
    (from Content-Length, or while it streams in without one), and with 408 when it takes
    longer than ``timeout_s`` to arrive (a slow sender must not hold the door)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read(request, max_bytes)
    except TimeoutError:
        raise HttpError(
            408, f"the request body did not arrive within {timeout_s:.3g} s; send it faster"
        ) from None


async def _read(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and int(declared) > max_bytes
    ):
        raise HttpError(413, f"request body is {declared} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise HttpError(413, f"request body is over the limit of {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HttpError(CLIENT_CLOSED_REQUEST, "the caller went away while sending") from None
    return b"".join(chunks)


def json_object(body: bytes) -> JsonObject:
    if not body.strip():
        raise HttpError(400, "request body is empty; send a JSON object")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HttpError(400, f"request body must be a JSON object, not {type(value).__name__}")
    return value
