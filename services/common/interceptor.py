"""One server interceptor for every process: request ids, errors, metrics.

It wraps each registered handler so that
- the call's request id (the caller's ``x-request-id`` or a new one) is in
  the log context and returned in trailing metadata;
- :class:`GenmediaError` becomes its status code and message, and anything
  unexpected becomes INTERNAL with a generic message and a logged trace;
- the RED metrics are recorded after the call (or whole stream) completes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from services.common import metrics
from services.common.errors import GenmediaError
from services.common.request_context import (
    REQUEST_ID_HEADER,
    request_id_from_metadata,
    request_id_var,
)

logger = logging.getLogger(__name__)

UnaryBehavior = Callable[[Any, aio.ServicerContext], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext], AsyncIterator[Any]]


class _CallScope:
    """Bookkeeping of one call: request id, status and metrics."""

    def __init__(self, method: str, grpc_type: str, context: aio.ServicerContext) -> None:
        service, _, name = method.lstrip("/").partition("/")
        self.labels = (service, name, grpc_type)
        self.context = context
        self.code = grpc.StatusCode.OK
        self.request_id = request_id_from_metadata(context.invocation_metadata())
        self._token = request_id_var.set(self.request_id)
        self._start = time.perf_counter()
        metrics.server_started.labels(*self.labels).inc()
        metrics.server_in_flight.labels(*self.labels).inc()

    async def fail(self, exc: BaseException) -> None:
        """Ends the call with the status that ``exc`` stands for."""
        if isinstance(exc, GenmediaError):
            self.code, message = exc.code, exc.message
        else:
            logger.exception("unexpected error")
            self.code = grpc.StatusCode.INTERNAL
            message = f"internal error; quote request id {self.request_id} when reporting it"
        self.context.set_trailing_metadata(((REQUEST_ID_HEADER, self.request_id),))
        await self.context.abort(self.code, message)

    def finish(self, cancelled: bool) -> None:
        if cancelled:
            self.code = grpc.StatusCode.CANCELLED
        elif self.code is grpc.StatusCode.OK:
            self.context.set_trailing_metadata(((REQUEST_ID_HEADER, self.request_id),))
        metrics.server_in_flight.labels(*self.labels).dec()
        metrics.server_handled.labels(*self.labels, self.code.name).inc()
        metrics.server_handling_seconds.labels(*self.labels).observe(
            time.perf_counter() - self._start
        )
        request_id_var.reset(self._token)


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises this to unwind the handler; it is not an error.
    return isinstance(exc, aio.AbortError)


def _wrap_unary(method: str, grpc_type: str, behavior: UnaryBehavior) -> UnaryBehavior:
    async def handle(request: Any, context: aio.ServicerContext) -> Any:
        scope = _CallScope(method, grpc_type, context)
        cancelled = False
        try:
            return await behavior(request, context)
        except BaseException as exc:
            cancelled = _is_cancellation(exc)
            if cancelled or _is_abort(exc):
                raise
            await scope.fail(exc)
        finally:
            scope.finish(cancelled)

    return handle


def _wrap_stream(method: str, grpc_type: str, behavior: StreamBehavior) -> StreamBehavior:
    async def handle(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        scope = _CallScope(method, grpc_type, context)
        cancelled = False
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            cancelled = _is_cancellation(exc)
            if cancelled or _is_abort(exc):
                raise
            await scope.fail(exc)
        finally:
            scope.finish(cancelled)

    return handle


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, (asyncio.CancelledError, GeneratorExit))


class ServerCallInterceptor(aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        common = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            wrapped = _wrap_unary(method, "unary", handler.unary_unary)
            return grpc.unary_unary_rpc_method_handler(wrapped, **common)
        if handler.unary_stream and not inspect.isasyncgenfunction(handler.unary_stream):
            # Written with context.write() (health's Watch): a coroutine.
            wrapped = _wrap_unary(method, "server_stream", handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(wrapped, **common)
        if handler.unary_stream:
            wrapped_stream = _wrap_stream(method, "server_stream", handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(wrapped_stream, **common)
        # Client- and bidi-streaming methods (none in genmedia's API; health's
        # Watch is unary-stream) pass through untouched.
        return handler
