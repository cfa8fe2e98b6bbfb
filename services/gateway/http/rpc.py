"""Every RPC of the gateway, called with protobuf messages from the HTTP side.

Forwarded methods go through the gRPC door's own ``Forwarder`` (admission, quotas,
retries, usage) and provenance methods through its ``ProvenanceServicer``: the HTTP door
adds no second implementation of either. Each call is recorded like a gRPC call: RED
metrics (``protocol="http"``) and one access log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError, Message

from services.common import api, metrics
from services.common.errors import GenmediaError
from services.common.interceptor import log_access
from services.common.registry import PROVENANCE_SERVICE
from services.gateway.http.call import HttpCall
from services.gateway.provenance import ProvenanceServicer
from services.gateway.proxy import Forwarder, Route

PROTOCOL = "http"
logger = logging.getLogger(__name__)

Unary = Callable[[Message, HttpCall], Awaitable[Message]]
Stream = Callable[[Message, HttpCall], AsyncIterator[Message]]


@dataclass(frozen=True)
class Method:
    descriptor: MethodDescriptor
    path: str
    red: metrics.RedChildren
    call: Unary | Stream

    @property
    def streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    def request_class(self) -> type[Message]:
        return api.message_class(self.descriptor)


class Rpcs:
    """The gateway's methods by gRPC path (``/genmedia.v1.X/Y``)."""

    def __init__(
        self, forwarder: Forwarder, routes: dict[str, Route], provenance: ProvenanceServicer
    ) -> None:
        self.methods: dict[str, Method] = {}
        for path, route in routes.items():
            descriptor = _descriptor(path)
            if not descriptor.client_streaming:  # client streams are gRPC only
                self._add(descriptor, _forwarded(forwarder, route, descriptor))
        for descriptor in api.service(PROVENANCE_SERVICE).methods:
            self._add(descriptor, getattr(provenance, descriptor.name))

    def _add(self, descriptor: MethodDescriptor, call: Unary | Stream) -> None:
        path = api.path(descriptor)
        red = metrics.RedChildren(
            metrics.SERVER,
            descriptor.containing_service.full_name,
            descriptor.name,
            metrics.grpc_type_of(descriptor),
            PROTOCOL,
        )
        self.methods[path] = Method(descriptor, path, red, call)

    async def unary(self, call: HttpCall, path: str, request: Message) -> Any:
        method = self.methods[path]
        with _recorded(method) as outcome:
            response = await call.unless_gone(method.call(request, call))  # type: ignore[arg-type]
            outcome.code = grpc.StatusCode.OK
            return response

    async def stream(self, call: HttpCall, path: str, request: Message) -> AsyncIterator[Any]:
        method = self.methods[path]
        with _recorded(method) as outcome:
            responses = method.call(request, call)
            async with contextlib.aclosing(responses):  # type: ignore[type-var]
                async for response in responses:  # type: ignore[union-attr]
                    yield response
            outcome.code = grpc.StatusCode.OK


@dataclass
class _Outcome:
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


@contextlib.contextmanager
def _recorded(method: Method) -> Any:
    outcome = _Outcome()
    started = method.red.start()
    try:
        yield outcome
    except GenmediaError as exc:
        outcome.code = exc.code
        if exc.detail:
            logger.warning("%s: %s (%s)", exc.code.name, exc.message, exc.detail)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        outcome.code = grpc.StatusCode.CANCELLED
        raise
    except BaseException:
        outcome.code = grpc.StatusCode.INTERNAL
        raise
    finally:
        log_access(
            method.path, outcome.code, method.red.finish(started, outcome.code), protocol=PROTOCOL
        )


def _descriptor(path: str) -> MethodDescriptor:
    service_name, _, name = path.lstrip("/").partition("/")
    return api.service(service_name).methods_by_name[name]


def _forwarded(forwarder: Forwarder, route: Route, descriptor: MethodDescriptor) -> Unary | Stream:
    response_class = api.message_class(descriptor, response=True)

    def parse(data: bytes) -> Message:
        try:
            return response_class.FromString(data)
        except DecodeError as exc:  # a backend's bug, not the caller's
            raise GenmediaError(f"{route.path}: the backend's answer did not decode") from exc

    if descriptor.server_streaming:

        async def stream(request: Message, call: HttpCall) -> AsyncIterator[Message]:
            data = request.SerializeToString()
            messages = forwarder.forward_stream(route, data, call)  # type: ignore[arg-type]
            async with contextlib.aclosing(messages):
                async for message in messages:
                    yield parse(message)

        return stream

    async def unary(request: Message, call: HttpCall) -> Message:
        return parse(await forwarder.forward_unary(route, request.SerializeToString(), call))  # type: ignore[arg-type]

    return unary
