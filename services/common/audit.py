"""The audit trail: one JSON line per generation, to stdout or a file.

Each event says who asked (the API key's name, hashed: the log must not
become a directory of customers), what ran (model, version, parameters),
what came out (SHA-256 of each output, so a file found later can be traced
to its call) and how it is marked (Content Credentials, watermark). Never
the API key; never the prompt unless ``GENMEDIA_AUDIT_PROMPTS`` allows it.

Events are written by one thread per log, in the order they were recorded:
a write and flush per generation (and the SHA-256 of an input of up to
32 MiB, given as :func:`deferred_sha256`) would otherwise hold the event
loop. What was recorded is written at shutdown (:func:`close_all`, from the
server) and at interpreter exit.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import queue
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from services.common import image_watermark
from services.common.request_context import caller_var

logger = logging.getLogger(__name__)

STDOUT = "stdout"
# What marks an image (the "watermark" field).
IMAGE_WATERMARK = "image-tile/v1"


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


class Sha256Of:
    """The SHA-256 of ``data``, computed when the event is written, on the writer's thread."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | str) -> None:
        self.data = data

    def hexdigest(self) -> str:
        return sha256(self.data)


def deferred_sha256(data: bytes | str) -> Sha256Of:
    """An event field that becomes ``sha256(data)`` off the event loop (for large inputs)."""
    return Sha256Of(data)


def image_watermark_label(width: int, height: int) -> str:
    """The image watermark an image of this size got: small ones get none."""
    return IMAGE_WATERMARK if image_watermark.applies(width, height) else "none"


def hashed_caller() -> str:
    """The calling key's name as the gateway passed it on, hashed; "-" without a caller."""
    caller = caller_var.get()
    return "-" if caller in ("", "-") else sha256(caller)[:16]


def _json_value(value: object) -> str:
    if isinstance(value, Sha256Of):
        return value.hexdigest()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def event_line(event: dict[str, Any]) -> str:
    """One event as its JSON line (deferred hashes computed here)."""
    return json.dumps(event, sort_keys=True, default=_json_value) + "\n"


_Item = dict[str, Any] | threading.Event | None
"""An event to write, a flush to signal once what came before is written, or the end."""


class AuditLog:
    """Writes audit events to ``sink``: "stdout" or a file path (appended to)."""

    def __init__(self, sink: str, service: str) -> None:
        self._service = service
        self._stream: TextIO = (
            sys.stdout if sink == STDOUT else Path(sink).open("a", encoding="utf-8")  # noqa: SIM115 - kept open for the process's life
        )
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._closed = False
        # Writes after close come from the recording thread while the writer may finish its
        # last batch: one write at a time keeps lines whole.
        self._write_lock = threading.Lock()
        self._writer = threading.Thread(
            target=self._write_forever, name="audit-writer", daemon=True
        )
        self._writer.start()
        _open_logs.add(self)

    def record(self, request_id: str, model: str, model_version: str, **fields: Any) -> None:
        """Queues one event; the caller and the time are taken now, on the caller's side."""
        event = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": "generation",
            "service": self._service,
            "request_id": request_id,
            "caller_sha256": hashed_caller(),
            "model": model,
            "model_version": model_version,
            **fields,
        }
        if self._closed:  # after shutdown: no writer left, so write it here
            self._write([event])
        else:
            self._queue.put(event)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Waits until every event recorded so far is written; False on timeout."""
        if self._closed:
            return True
        written = threading.Event()
        self._queue.put(written)
        return written.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Writes what is queued, then stops the writer. The file stays open: an event
        recorded later (a call outliving the shutdown grace) is written inline."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join(timeout_s)
        _open_logs.discard(self)

    def _write_forever(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():  # one flush for everything that waited
                batch.append(self._queue.get_nowait())
            events = [item for item in batch if isinstance(item, dict)]
            self._write(events)
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
            if None in batch:
                return

    def _write(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        try:
            text = "".join(event_line(event) for event in events)
            with self._write_lock:
                self._stream.write(text)
                self._stream.flush()
        except Exception:  # a full disk must not stop the writer for good
            logger.exception("could not write %d audit events", len(events))


_open_logs: set[AuditLog] = set()


def close_all() -> None:
    """Writes every open log's queued events and stops its writer (shutdown, exit)."""
    for log in list(_open_logs):
        log.close()


# Daemon writers still run when atexit handlers do: what was recorded gets written.
atexit.register(close_all)
