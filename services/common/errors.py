"""Domain errors raised by the cores and servicers, each with its gRPC status.

Servicers never call ``context.abort`` themselves: they raise one of these
and the call interceptor turns it into a status and a message for the
caller. Anything else that escapes becomes INTERNAL with a generic message.
"""

from __future__ import annotations

import math

import grpc

RETRY_AFTER_HEADER = "retry-after-ms"
"""Trailing metadata of RESOURCE_EXHAUSTED: milliseconds to wait before trying again."""


class GenmediaError(Exception):
    """Base of all errors the caller is told about verbatim.

    ``detail`` is for the log only (with the request id): what an upstream said,
    addresses, anything internal the caller must not see.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self, message: str, metadata: tuple[tuple[str, str], ...] = (), detail: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata
        """Extra trailing metadata sent with the status."""
        self.detail = detail


class InvalidArgument(GenmediaError):
    """The request is malformed or out of range; the message says what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(GenmediaError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(GenmediaError):
    """The deployment cannot serve this call as configured; the message says what is missing."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(GenmediaError):
    """A limit was reached; ``retry_after_s`` says when trying again can succeed."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        metadata: tuple[tuple[str, str], ...] = ()
        if retry_after_s is not None:
            metadata = ((RETRY_AFTER_HEADER, str(max(1, math.ceil(retry_after_s * 1000)))),)
        super().__init__(message, metadata)
        self.retry_after_s = retry_after_s


class Unauthenticated(GenmediaError):
    """No credentials, or credentials that match no key."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(GenmediaError):
    """Valid credentials without access to what was asked for."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(GenmediaError):
    """A dependency (Triton, a backend) cannot be reached; safe to retry."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(GenmediaError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UpstreamError(GenmediaError):
    """An error status received from an upstream gRPC server, passed on with ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str, detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.code = code
