"""gRPC-JSON transcoding: every RPC at the HTTP route its ``google.api.http`` annotation
names, its messages in the proto3 JSON mapping (as grpc-gateway and Envoy transcode).

Unary answers are one JSON object; a server stream is newline-delimited JSON, one
``{"result": ...}`` a line (grpc-gateway's framing), or server-sent events when the caller
accepts ``text/event-stream``. Errors are grpc-gateway's ``{"code", "message",
"details"}`` with the HTTP status that fits the gRPC code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from services.common import api
from services.common.errors import GenmediaError
from services.gateway.http.body import DoorLimits
from services.gateway.http.call import HttpCall
from services.gateway.http.errors import HttpError
from services.gateway.http.routes import JsonRoute
from services.gateway.http.rpc import Rpcs
from services.gateway.http.sse import SSE_HEADERS, ndjson_line, sse_event, started_stream

Endpoint = Callable[[Request], Awaitable[Response]]
NDJSON = "application/x-ndjson"


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


class Transcoder:
    def __init__(self, rpcs: Rpcs, limits: DoorLimits) -> None:
        self._rpcs = rpcs
        self._limits = limits

    def endpoint(self, route: JsonRoute) -> Endpoint:
        path = api.path(route.method)
        request_class = api.message_class(route.method)

        async def handle(request: Request) -> Response:
            call = self._limits.call(request)
            try:
                call.check_headers()
                if route.body:
                    message = parse_json(request_class, await self._limits.body(call, request))
                else:
                    message = parse_query(request_class, request.query_params.multi_items())
                if route.method.server_streaming:
                    return await self._stream(call, path, message, request)
                response = await self._rpcs.unary(call, path, message)
                return JSONResponse(to_json(response), headers={"x-request-id": call.request_id})
            except GenmediaError as exc:
                return HttpError.from_genmedia(exc).rpc_response(call.request_id)
            except HttpError as error:
                return error.rpc_response(call.request_id)

        return handle

    async def _stream(
        self, call: HttpCall, path: str, message: Message, request: Request
    ) -> Response:
        stream = self._rpcs.stream(call, path, message)
        first = await started_stream(stream)
        sse = "text/event-stream" in request.headers.get("accept", "")
        frame = sse_event if sse else ndjson_line

        async def lines() -> AsyncIterator[bytes]:
            current = first
            try:
                while current is not None:
                    yield frame({"result": to_json(current)})
                    current = await anext(stream, None)
            except GenmediaError as exc:
                yield frame({"error": HttpError.from_genmedia(exc).rpc_body()})
            finally:
                await stream.aclose()  # type: ignore[attr-defined]

        headers = {"x-request-id": call.request_id, **(SSE_HEADERS if sse else {})}
        return StreamingResponse(
            lines(), headers=headers, media_type="text/event-stream" if sse else NDJSON
        )


def parse_json(message_class: type[Message], body: bytes) -> Message:
    message = message_class()
    if not body.strip():
        return message
    try:
        json_format.Parse(body, message, max_recursion_depth=32)
    except (json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise HttpError(
            400, f"request body does not fit {message_class.DESCRIPTOR.name}: {exc}"
        ) from None
    return message


def parse_query(message_class: type[Message], items: list[tuple[str, str]]) -> Message:
    """Query parameters as the request's scalar fields (by JSON or proto name)."""
    descriptor = message_class.DESCRIPTOR
    fields = {**descriptor.fields_by_name, **{f.json_name: f for f in descriptor.fields}}
    values: dict[str, Any] = {}
    for name, value in items:
        field = fields.get(name)
        if field is None or field.type == FieldDescriptor.TYPE_MESSAGE:
            known = ", ".join(sorted(f.json_name for f in descriptor.fields)) or "none"
            raise HttpError(400, f"unknown query parameter {name!r} (known: {known})", name)
        scalar: Any = (
            {"true": True, "false": False}.get(value, value)
            if field.type == FieldDescriptor.TYPE_BOOL
            else value
        )
        if field.is_repeated:
            values.setdefault(field.json_name, []).append(scalar)
        else:
            values[field.json_name] = scalar
    message = message_class()
    try:
        json_format.ParseDict(values, message)
    except json_format.ParseError as exc:
        raise HttpError(400, f"query parameters do not fit {descriptor.name}: {exc}") from None
    return message
