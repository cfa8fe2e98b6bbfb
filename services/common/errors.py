"""Domain errors raised by the cores and servicers, each with its gRPC status.

Servicers never call ``context.abort`` themselves: they raise one of these
and the call interceptor turns it into a status and a message for the
caller. Anything else that escapes becomes INTERNAL with a generic message.
"""

from __future__ import annotations

import grpc


class GenmediaError(Exception):
    """Base of all errors the caller is told about verbatim."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(GenmediaError):
    """The request is malformed or out of range; the message says what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(GenmediaError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(GenmediaError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(GenmediaError):
    """A dependency (Triton, a backend) cannot be reached; safe to retry."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(GenmediaError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UpstreamError(GenmediaError):
    """An error status received from an upstream gRPC server, passed on as is."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
