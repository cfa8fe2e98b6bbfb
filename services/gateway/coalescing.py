"""Which forwarded streams the gateway may coalesce, and how their raw messages merge.

The gateway forwards messages as raw bytes; only when the caller is slower
than the backend do several wait, and only then are they parsed and merged
into one (services/common/coalesce.py). Which streams, and which of their
fields is joined, is each backend's registry entry (services/common/registry.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from google.protobuf.message import Message

from services.common import api
from services.common.registry import BACKENDS

Merge = Callable[[list[bytes]], bytes]


def joining(message_class: type[Message], joined: str) -> Merge:
    """Merges messages into their last one, with the string field ``joined`` of all of them
    in order: the last carries the newest counts and whatever only a stream's last message
    carries (finish reason, usage, provenance)."""

    def merge(messages: list[bytes]) -> bytes:
        parsed = [message_class.FromString(raw) for raw in messages]
        merged = parsed[-1]
        setattr(merged, joined, "".join(getattr(message, joined) for message in parsed))
        return merged.SerializeToString()

    return merge


@functools.cache
def merges() -> Mapping[str, Merge]:
    """Streams whose waiting messages the gateway merges (their meaning survives it), by
    gRPC path."""
    table: dict[str, Merge] = {}
    for backend in BACKENDS:
        for stream in backend.coalesced:
            method = api.method_of(backend, stream.method)
            table[api.path(method)] = joining(
                api.message_class(method, response=True), stream.joined
            )
    return table
