"""Forwarding of the public API to the backends, built from the proto descriptors.

The gateway serves exactly the services its backends serve: for every
method of every backend service, a handler that calls the same method on
the backend with the caller's remaining deadline and request id, streams
responses back as they arrive, and cancels the backend call when the caller
goes away. Backend errors are passed on with their status code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc import aio

# Importing the generated modules registers their descriptors.
from genmedia.v1 import (  # noqa: F401
    image_generation_pb2,
    image_translation_pb2,
    text_generation_pb2,
)
from services.common.errors import UpstreamError
from services.common.request_context import REQUEST_ID_HEADER, current_request_id


def _metadata() -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_HEADER, current_request_id()),)


def _unary_forwarder(
    call_backend: aio.UnaryUnaryMultiCallable,
) -> Callable[[Any, aio.ServicerContext], Any]:
    async def forward(request: Any, context: aio.ServicerContext) -> Any:
        call = call_backend(request, timeout=context.time_remaining(), metadata=_metadata())
        try:
            return await call
        except aio.AioRpcError as exc:
            raise UpstreamError(exc.code(), exc.details() or "") from None
        finally:
            call.cancel()

    return forward


def _stream_forwarder(
    call_backend: aio.UnaryStreamMultiCallable,
) -> Callable[[Any, aio.ServicerContext], AsyncIterator[Any]]:
    async def forward(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        call = call_backend(request, timeout=context.time_remaining(), metadata=_metadata())
        try:
            async for response in call:
                yield response
        except aio.AioRpcError as exc:
            raise UpstreamError(exc.code(), exc.details() or "") from None
        finally:
            # The caller cancelled or went away: stop the backend's work too.
            call.cancel()

    return forward


def forwarding_handler(service_name: str, channel: aio.Channel) -> grpc.GenericRpcHandler:
    """A handler serving ``service_name`` by forwarding each call over ``channel``."""
    service = descriptor_pool.Default().FindServiceByName(service_name)
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        path = f"/{service.full_name}/{method.name}"
        serializers = {
            "request_deserializer": request_class.FromString,
            "response_serializer": response_class.SerializeToString,
        }
        if method.client_streaming:
            raise ValueError(f"{path}: client streaming is not part of genmedia's API")
        if method.server_streaming:
            backend = channel.unary_stream(
                path, request_class.SerializeToString, response_class.FromString
            )
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _stream_forwarder(backend), **serializers
            )
        else:
            backend_unary = channel.unary_unary(
                path, request_class.SerializeToString, response_class.FromString
            )
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary_forwarder(backend_unary), **serializers
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
