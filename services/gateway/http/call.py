"""One HTTP request as the gRPC side reads a call: who sent it (its metadata), until when
(its deadline), from where (its peer); and the request scope the gRPC interceptor keeps
for a call: a request id minted here, the caller's own x-request-id kept as the
correlation id, the log context."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable
from typing import TypeVar

import grpc
from starlette.requests import Request

from services.common.errors import GenmediaError
from services.common.request_context import (
    REQUEST_ID_HEADER,
    caller_var,
    correlation_id_from_metadata,
    correlation_id_var,
    new_request_id,
    request_id_var,
    trailing_metadata_var,
)
from services.gateway.auth import AUTHORIZATION_HEADER
from services.gateway.http.errors import HttpError

T = TypeVar("T")
TIMEOUT_HEADERS = ("timeout", "x-stainless-timeout")
"""Seconds the caller will wait: ours, then the one the OpenAI SDKs send by themselves."""
FORWARDED_HEADERS = (AUTHORIZATION_HEADER,)
"""Headers the gRPC side reads as metadata (the key); nothing else a caller sends."""


class CallerGone(GenmediaError):
    """The HTTP caller disconnected before its answer: the call is cancelled downstream."""

    code = grpc.StatusCode.CANCELLED


class HttpCall:
    """What ``Forwarder`` and ``ProvenanceServicer`` ask of a gRPC call's context."""

    def __init__(self, request: Request, default_deadline_s: float) -> None:
        self._receive = request.receive
        headers = request.headers
        self._metadata = tuple(
            (name, headers[name]) for name in FORWARDED_HEADERS if name in headers
        )
        self._header_error: HttpError | None = None
        try:
            timeout_s = _timeout_s(request, default_deadline_s)
        except HttpError as error:
            self._header_error, timeout_s = error, default_deadline_s
        self.deadline = time.monotonic() + timeout_s
        client = request.client
        self._peer = f"ipv4:{client.host}:{client.port}" if client else ""
        self.request_id = new_request_id()
        self.trailing: list[tuple[str, str]] = []
        # Each request runs in its own task: these stay with it (and its stream's tasks).
        request_id_var.set(self.request_id)
        caller_var.set("-")
        correlation_id_var.set(
            correlation_id_from_metadata(
                ((REQUEST_ID_HEADER, headers.get(REQUEST_ID_HEADER, "")),), REQUEST_ID_HEADER
            )
        )
        trailing_metadata_var.set(self.trailing)

    def check_headers(self) -> None:
        """Raises the error of a header the call cannot be served with (a bad timeout)."""
        if self._header_error is not None:
            raise self._header_error

    async def unless_gone(self, work: Awaitable[T]) -> T:
        """``work``, cancelled (down to the backend) if the caller disconnects first: uvicorn
        cancels only a streaming response's work, and the gRPC door cancels every call's."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.create_task(self._disconnected())
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise CallerGone("the caller went away before the answer")
        finally:
            watcher.cancel()

    async def _disconnected(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass  # the rest of an already read body

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def peer(self) -> str:
        return self._peer

    def trailer(self, key: str) -> str | None:
        """A value a backend or the gateway added to the call's trailing metadata."""
        for name, value in self.trailing:
            if name == key:
                return value
        return None


def _timeout_s(request: Request, default_s: float) -> float:
    for header in TIMEOUT_HEADERS:
        value = request.headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise HttpError(
                400, f"header {header} must be a positive number of seconds, not {value!r}", header
            )
        return min(seconds, default_s)
    return default_s
