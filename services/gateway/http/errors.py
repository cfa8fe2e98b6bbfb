"""HTTP answers to errors: the status that fits each gRPC code, in OpenAI's error body for
the OpenAI routes and in grpc-gateway's (``{"code", "message", "details"}``) for the JSON
transcoding of the RPCs."""

from __future__ import annotations

import math
from typing import Any

import grpc
from starlette.responses import JSONResponse

from services.common.errors import RETRY_AFTER_HEADER, GenmediaError
from services.common.request_context import REQUEST_ID_HEADER

CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a caller that went away; nobody reads it but the access log."""

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: CLIENT_CLOSED_REQUEST,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

OPENAI_TYPE: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    CLIENT_CLOSED_REQUEST: "cancelled",
    501: "not_implemented_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class HttpError(Exception):
    """A caller's mistake found by the HTTP door itself, or a gRPC status translated."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: grpc.StatusCode | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code or _code_of(status)
        self.retry_after_s = retry_after_s

    @classmethod
    def from_genmedia(cls, exc: GenmediaError, params: dict[str, str] | None = None) -> HttpError:
        """The HTTP form of a gRPC status; ``params`` renames the request field a message
        starts with to the HTTP parameter the caller sent (``max_new_tokens`` -> ``max_tokens``)."""
        retry_after_s = None
        for key, value in exc.metadata:
            if key == RETRY_AFTER_HEADER:
                retry_after_s = int(value) / 1000
        return cls(
            HTTP_STATUS.get(exc.code, 500),
            exc.message,
            _param_of(exc.message, params or {}),
            exc.code,
            retry_after_s,
        )

    def headers(self, request_id: str) -> dict[str, str]:
        headers = {REQUEST_ID_HEADER: request_id}
        if self.retry_after_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after_s)))
            headers["retry-after-ms"] = str(round(self.retry_after_s * 1000))
        return headers

    def openai_response(self, request_id: str) -> JSONResponse:
        return JSONResponse(self.openai_body(), self.status, self.headers(request_id))

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": OPENAI_TYPE.get(self.status, "server_error"),
                "param": self.param,
                "code": self.code.name.lower(),
            }
        }

    def rpc_response(self, request_id: str) -> JSONResponse:
        return JSONResponse(self.rpc_body(), self.status, self.headers(request_id))

    def rpc_body(self) -> dict[str, Any]:
        """grpc-gateway's error body: the gRPC code's number, its message, no details."""
        return {"code": self.code.value[0], "message": self.message, "details": []}


def _code_of(status: int) -> grpc.StatusCode:
    if status == 500:
        return grpc.StatusCode.INTERNAL
    for code, http_status in HTTP_STATUS.items():
        if http_status == status:
            return code
    return grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL


def _param_of(message: str, params: dict[str, str]) -> str | None:
    """The HTTP parameter a backend's message names first, if it names one we know."""
    words = message.replace(":", " ").replace(";", " ").split()
    for word in words[:3]:
        field = word.strip("'\"`.,()").split(".", 1)[0].split("[", 1)[0]
        if field in params:
            return params[field]
    return None
