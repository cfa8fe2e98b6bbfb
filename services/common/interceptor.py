"""One server interceptor for every process: request ids, errors, metrics.

It wraps each registered handler so that
- the call's request id is in the log context and returned in trailing
  metadata: a backend keeps the one its gateway sent (``x-request-id``); the
  gateway, facing callers, mints its own and keeps a caller's
  ``x-request-id`` as the correlation id (logged and passed on, never
  signed into credentials or audit events);
- a request that does not decode is INVALID_ARGUMENT, not UNKNOWN;
- :class:`GenmediaError` becomes its status code and message (its internal
  detail logged, not sent), and anything unexpected becomes INTERNAL with a
  generic message and a logged trace;
- the RED metrics are recorded after the call (or whole stream) completes,
  with the status the caller saw (aborts, cancellations and deadlines too);
- one access log line per call (health and reflection only at debug level);
- pairs added with :func:`add_trailing_metadata` during the call are sent in
  its trailing metadata, beside the request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from services.common import metrics
from services.common.errors import GenmediaError, InvalidArgument
from services.common.request_context import (
    CORRELATION_ID_HEADER,
    REQUEST_ID_HEADER,
    caller_from_metadata,
    caller_var,
    correlation_id_from_metadata,
    correlation_id_var,
    new_request_id,
    request_id_from_metadata,
    request_id_var,
    trailing_metadata_var,
)
from services.common.wire import MAX_FIELDS, invalid_utf8_field, too_many_fields

logger = logging.getLogger(__name__)
access_log = logging.getLogger("genmedia.access")
# Probes and tooling call these often; their lines would drown the API's.
_QUIET_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.")

UnaryBehavior = Callable[[Any, aio.ServicerContext], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext], AsyncIterator[Any]]


class _Undecodable:
    """Stands for a request whose bytes were not parsed, so the handler can say why."""

    def __init__(self, message: str) -> None:
        self.message = message


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The deserializer, refusing what it cannot or should not parse with a precise message.

    It runs on the event loop: a large message is counted first (within a budget) and one
    with more fields than any genmedia request is refused unparsed; protobuf alone would
    stall the process for a good part of a second on 32 MiB of tiny fields.
    """
    if deserializer is None:
        return None
    # A generated message class's FromString: its descriptor names the fields.
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)

    def deserialize(data: bytes) -> Any:
        if descriptor is not None and too_many_fields(data, descriptor):
            return _Undecodable(
                f"request holds more than {MAX_FIELDS} fields ({len(data)} bytes); "
                "no genmedia request needs that many"
            )
        try:
            return deserializer(data)
        except DecodeError as error:
            field = None if descriptor is None else invalid_utf8_field(data, descriptor)
            if field is not None:
                return _Undecodable(f"{field} is not valid UTF-8; send strings as UTF-8 text")
            return _Undecodable(f"request is not a valid protobuf message: {error}")

    return deserialize


class _MethodMetrics:
    """What every call of one method shares: its metric children and log level."""

    def __init__(self, method: str, grpc_type: str) -> None:
        service, _, name = method.lstrip("/").partition("/")
        self.red = metrics.RedChildren(metrics.SERVER, service, name, grpc_type, "grpc")
        self.log_level = (
            logging.DEBUG if method.lstrip("/").startswith(_QUIET_SERVICES) else logging.INFO
        )


class _CallScope:
    """Bookkeeping of one call: request id, status and metrics."""

    def __init__(
        self,
        method: str,
        recorded: _MethodMetrics,
        context: aio.ServicerContext,
        trust_caller_header: bool,
    ) -> None:
        self.recorded = recorded
        self.context = context
        self.code = grpc.StatusCode.OK
        self.outcome: BaseException | None = None
        """What ended the call, if not a normal return (read by finish())."""
        self.method = method
        metadata = context.invocation_metadata()
        self.extra_trailing: list[tuple[str, str]] = []
        # Each RPC runs in its own task, hence its own context: no reset needed
        # (a reset from a generator finalised elsewhere would fail).
        if trust_caller_header:
            # Behind the gateway: its request id, caller name and the caller's own id.
            self.request_id = request_id_from_metadata(metadata)
            caller_var.set(caller_from_metadata(metadata))
            correlation_id_var.set(correlation_id_from_metadata(metadata, CORRELATION_ID_HEADER))
        else:
            # Facing callers: an id they chose must not end up in signed credentials.
            self.request_id = new_request_id()
            caller_var.set("-")
            correlation_id_var.set(correlation_id_from_metadata(metadata, REQUEST_ID_HEADER))
        request_id_var.set(self.request_id)
        trailing_metadata_var.set(self.extra_trailing)
        context.set_trailing_metadata(self.trailing_metadata)
        self._start = recorded.red.start()

    @property
    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((REQUEST_ID_HEADER, self.request_id), *self.extra_trailing)

    def check_request(self, request: Any) -> None:
        if isinstance(request, _Undecodable):
            raise InvalidArgument(request.message)

    async def fail(self, exc: BaseException) -> None:
        """Ends the call with the status that ``exc`` stands for."""
        if isinstance(exc, GenmediaError):
            self.code, message = exc.code, exc.message
            self.extra_trailing.extend(exc.metadata)
            if exc.detail:
                logger.warning("%s: %s (%s)", self.code.name, message, exc.detail)
        else:
            logger.exception("unexpected error")
            self.code = grpc.StatusCode.INTERNAL
            message = f"internal error; quote request id {self.request_id} when reporting it"
        await self.context.abort(self.code, message, self.trailing_metadata)

    async def answer(self, exc: BaseException) -> NoReturn:
        """Records ``exc`` as the call's outcome and raises it again, or the abort that
        reports it to the caller (aborts and cancellations pass through as they are)."""
        self.outcome = exc
        if _passes_through(exc):
            raise exc
        try:
            await self.fail(exc)
        except aio.AbortError as abort:
            self.outcome = abort
            raise
        raise exc  # fail() always aborts; never reached

    def finish(self) -> None:
        exc = self.outcome
        if exc is None and self.extra_trailing:
            self.context.set_trailing_metadata(self.trailing_metadata)
        if isinstance(exc, aio.AbortError):
            # Aborted by fail() above or by the handler itself (health's NOT_FOUND).
            self.code = self.context.code() or self.code
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            remaining = self.context.time_remaining()
            expired = remaining is not None and remaining <= 0
            self.code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
        elapsed = self.recorded.red.finish(self._start, self.code)
        log_access(self.method, self.code, elapsed, self.recorded.log_level)


def log_access(
    method: str,
    code: grpc.StatusCode,
    elapsed_s: float,
    level: int = logging.INFO,
    protocol: str = "grpc",
) -> None:
    """The one access log line of a call (the HTTP door writes its RPCs' with this too)."""
    access_log.log(
        level,
        "%s %s %.1f ms",
        method,
        code.name,
        elapsed_s * 1000,
        extra={
            "method": method,
            "code": code.name,
            "duration_ms": round(elapsed_s * 1000, 3),
            "protocol": protocol,
        },
    )


def _passes_through(exc: BaseException) -> bool:
    """Outcomes that are not errors of the handler: aborts and cancellations."""
    return isinstance(exc, (aio.AbortError, asyncio.CancelledError, GeneratorExit))


def _wrap_unary(
    method: str, grpc_type: str, behavior: UnaryBehavior, trust_caller_header: bool
) -> UnaryBehavior:
    recorded = _MethodMetrics(method, grpc_type)

    async def handle(request: Any, context: aio.ServicerContext) -> Any:
        scope = _CallScope(method, recorded, context, trust_caller_header)
        try:
            scope.check_request(request)
            return await behavior(request, context)
        except BaseException as exc:  # noqa: BLE001 (answer() records it, then re-raises)
            await scope.answer(exc)
        finally:
            scope.finish()

    return handle


def _wrap_stream(
    method: str, grpc_type: str, behavior: StreamBehavior, trust_caller_header: bool
) -> StreamBehavior:
    recorded = _MethodMetrics(method, grpc_type)

    async def handle(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        scope = _CallScope(method, recorded, context, trust_caller_header)
        try:
            scope.check_request(request)
            # aclosing: the inner stream (and its upstream call) ends with this one.
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response
        except BaseException as exc:  # noqa: BLE001 (answer() records it, then re-raises)
            await scope.answer(exc)
        finally:
            scope.finish()

    return handle


BidiBehavior = Callable[[AsyncIterator[Any], aio.ServicerContext], AsyncIterator[Any]]


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client stream's messages, a message that did not decode refused by its position."""
    index = 0
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise InvalidArgument(f"message {index} of the stream: {request.message}")
        yield request
        index += 1


def _wrap_bidi(method: str, behavior: BidiBehavior, trust_caller_header: bool) -> BidiBehavior:
    recorded = _MethodMetrics(method, "bidi_stream")

    async def handle(
        requests: AsyncIterator[Any], context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        scope = _CallScope(method, recorded, context, trust_caller_header)
        try:
            async with contextlib.aclosing(behavior(_checked(requests), context)) as responses:
                async for response in responses:
                    yield response
        except BaseException as exc:  # noqa: BLE001 (answer() records it, then re-raises)
            await scope.answer(exc)
        finally:
            scope.finish()

    return handle


class ServerCallInterceptor(aio.ServerInterceptor):
    def __init__(self, trust_caller_header: bool = True) -> None:
        """``trust_caller_header``: believe the request id and key name a gateway passed on
        (backends only; the gateway mints its own request ids)."""
        self._trust_caller_header = trust_caller_header
        # Registered handlers are fixed objects: each is wrapped once, not per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        trust = self._trust_caller_header
        common = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            wrapped = _wrap_unary(method, "unary", handler.unary_unary, trust)
            return grpc.unary_unary_rpc_method_handler(wrapped, **common)
        if handler.unary_stream and not inspect.isasyncgenfunction(handler.unary_stream):
            # Written with context.write() (health's Watch): a coroutine.
            wrapped = _wrap_unary(method, "server_stream", handler.unary_stream, trust)
            return grpc.unary_stream_rpc_method_handler(wrapped, **common)
        if handler.unary_stream:
            wrapped_stream = _wrap_stream(method, "server_stream", handler.unary_stream, trust)
            return grpc.unary_stream_rpc_method_handler(wrapped_stream, **common)
        if handler.stream_stream and inspect.isasyncgenfunction(handler.stream_stream):
            wrapped_bidi = _wrap_bidi(method, handler.stream_stream, trust)
            return grpc.stream_stream_rpc_method_handler(wrapped_bidi, **common)
        # Other client-streaming handlers (reflection's, written as coroutines over the
        # request iterator) pass through untouched.
        return handler
