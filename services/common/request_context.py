"""The request id of the call being served, visible to every log line."""

from __future__ import annotations

import atexit
import contextvars
import logging
import logging.handlers
import os
import queue
import re

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "x-request-id"
CALLER_HEADER = "x-genmedia-caller"
"""Key name of the caller, set by the gateway for backends' logs (never the key)."""
CORRELATION_ID_HEADER = "x-correlation-id"
"""The id a caller sent the gateway as its x-request-id, passed on for backends' logs: the
gateway mints the request id itself (it goes into signed credentials and the audit log)."""
_MAX_REQUEST_ID_LENGTH = 128

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
caller_var: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="-")
"""Name of the API key the call came with (never the key itself); "-" if none."""
correlation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "correlation_id", default="-"
)
"""The caller's own id for the call, when it sent one; "-" if none."""
trailing_metadata_var: contextvars.ContextVar[list[tuple[str, str]] | None] = (
    contextvars.ContextVar("trailing_metadata", default=None)
)


def current_request_id() -> str:
    return request_id_var.get()


# No spaces or brackets: a value must not be able to forge fields of a log line.
_SAFE_VALUE = re.compile(rf"[A-Za-z0-9._:/+=@-]{{1,{_MAX_REQUEST_ID_LENGTH}}}")


def _safe_value(metadata: tuple[tuple[str, str | bytes], ...] | None, header: str) -> str | None:
    for key, value in metadata or ():
        if key == header and isinstance(value, str) and _SAFE_VALUE.fullmatch(value):
            return value
    return None


def new_request_id() -> str:
    return os.urandom(16).hex()


def request_id_from_metadata(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    """Keeps a caller's x-request-id (1-128 of A-Z a-z 0-9 . _ : / + = @ -), else makes one."""
    return _safe_value(metadata, REQUEST_ID_HEADER) or new_request_id()


def correlation_id_from_metadata(
    metadata: tuple[tuple[str, str | bytes], ...] | None, header: str
) -> str:
    """The caller's id for the call from ``header`` (validated like a request id), or "-"."""
    return _safe_value(metadata, header) or "-"


def caller_from_metadata(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    """The key name the gateway passed on, or "-"."""
    return _safe_value(metadata, CALLER_HEADER) or "-"


def add_trailing_metadata(key: str, value: str) -> None:
    """Adds a pair to the trailing metadata of the call being served.

    The call interceptor sends these with the request id when the call ends,
    whatever its status. Outside a call this does nothing.
    """
    pairs = trailing_metadata_var.get()
    if pairs is not None:
        pairs.append((key, value))


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.caller = caller_var.get()
        record.correlation_id = correlation_id_var.get()
        return True


def configure_logging(level: str, log_format: str = "json") -> None:
    """One line per event on stderr: JSON for log pipelines, or text for people.

    Every line carries the request id, the caller's key name (never the
    key) and the caller's own correlation id; access lines add method, code
    and duration_ms. A record is only queued where it is logged (on the event
    loop, with the call's ids); a thread of its own formats and writes it, so
    the access line of every call costs the loop microseconds, not the 0.2 ms
    that formatting JSON and writing it took there (docs/PERFORMANCE.md).
    """
    # The logging HOWTO's optimizations: no caller lookup (nothing prints it), no
    # thread or process names.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{request_id}{caller}{correlation_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(caller)s] %(message)s"
            )
        )
    _stop_writing()
    queued = _Enqueue(queue.SimpleQueue())
    queued.addFilter(RequestIdLogFilter())  # here: the ids live in the caller's context
    _writers.append(logging.handlers.QueueListener(queued.queue, handler))
    _writers[-1].start()
    logging.basicConfig(level=level.upper(), handlers=[queued], force=True)


class _Enqueue(logging.handlers.QueueHandler):
    """Queues the record as it is: the writer thread formats it. (The standard handler
    formats and copies every record first, on the logging thread: what it exists to save.)
    Records' arguments here are strings and numbers, safe to format later."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info and not record.exc_text:
            # A traceback refers to live frames: render it now, where it was raised.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


_writers: list[logging.handlers.QueueListener] = []
"""The thread writing log lines (one; a list so that it can be replaced without a global)."""


@atexit.register
def _stop_writing() -> None:
    """Writes what is queued, then stops the writer (at exit, or before a new one)."""
    while _writers:
        _writers.pop().stop()
