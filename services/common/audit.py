"""The audit trail: one JSON line per generation, to stdout or a file.

Each event says who asked (the API key's name, hashed: the log must not
become a directory of customers), what ran (model, version, parameters),
what came out (SHA-256 of each output, so a file found later can be traced
to its call) and how it is marked (Content Credentials, watermark). Never
the API key; never the prompt unless ``GENMEDIA_AUDIT_PROMPTS`` allows it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common import image_watermark
from services.common.request_context import caller_var

STDOUT = "stdout"
# What marks an image (the "watermark" field).
IMAGE_WATERMARK = "image-tile/v1"


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def image_watermark_label(width: int, height: int) -> str:
    """The image watermark an image of this size got: small ones get none."""
    return IMAGE_WATERMARK if image_watermark.applies(width, height) else "none"


def hashed_caller() -> str:
    """The calling key's name as the gateway passed it on, hashed; "-" without a caller."""
    caller = caller_var.get()
    return "-" if caller in ("", "-") else sha256(caller)[:16]


class AuditLog:
    """Writes audit events to ``sink``: "stdout" or a file path (appended to)."""

    def __init__(self, sink: str, service: str) -> None:
        self._service = service
        self._stream = sys.stdout if sink == STDOUT else Path(sink).open("a", encoding="utf-8")  # noqa: SIM115 - kept open for the process's life

    def record(self, request_id: str, model: str, model_version: str, **fields: Any) -> None:
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
        self._stream.write(json.dumps(event, sort_keys=True) + "\n")
        self._stream.flush()
