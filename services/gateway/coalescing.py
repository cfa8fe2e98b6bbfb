"""Which forwarded streams the gateway may coalesce, and how their raw messages merge.

The gateway forwards messages as raw bytes; only when the caller is slower
than the backend do several wait, and only then are they parsed and merged
into one (services/common/coalesce.py).
"""

from __future__ import annotations

from collections.abc import Callable

from genmedia.v1 import text_generation_pb2
from services.gateway.estimates import STREAM_TEXT


def merge_text_messages(messages: list[bytes]) -> bytes:
    """StreamText messages as one: their text in order, the newest token count, and the
    finish reason, usage and provenance that only a stream's last message carries."""
    parsed = [text_generation_pb2.StreamTextResponse.FromString(raw) for raw in messages]
    merged = parsed[-1]
    merged.text = "".join(message.text for message in parsed)
    return merged.SerializeToString()


MERGES: dict[str, Callable[[list[bytes]], bytes]] = {STREAM_TEXT: merge_text_messages}
"""Streams whose waiting messages the gateway merges (their meaning survives it)."""
