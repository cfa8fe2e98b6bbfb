"""Reading a request's wire format before and after protobuf does, within a budget.

Two jobs, both on the event loop, so both bounded by a number of fields
walked (never by the message's size: bytes and strings are skipped, not read):

- Before parsing a large message: protobuf's own parser takes about 0.1 s
  for 32 MiB of tiny fields and 0.4 s for 32 MiB of tiny nested messages,
  during which every other call in the process waits. genmedia's requests
  hold a few dozen fields at most, so a message with more than
  ``MAX_FIELDS`` is refused without being parsed.
- After protobuf refused a message: Python's protobuf rejects a message with
  a string field that is not UTF-8 as a whole ("Error parsing message");
  walking the fields with the message's descriptor finds the field, so the
  caller is told what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
MAX_FIELDS = 1024
"""Fields walked in one message, nested ones included; a real request has far fewer."""
MAX_DEPTH = 32
"""Nesting walked; genmedia's requests nest two deep."""
LARGE_MESSAGE_BYTES = 64 * 1024
"""From this size a message is counted before protobuf parses it (smaller ones parse in
under a millisecond whatever they hold)."""


class _Malformed(Exception):
    """The bytes are not protobuf wire format at all."""


class _OverBudget(Exception):
    """More fields than the walk may look at."""


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise _Malformed
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


@dataclass
class _Walk:
    fields_left: int
    find_invalid_utf8: bool

    def first_invalid_utf8(
        self, data: memoryview, descriptor: Descriptor, prefix: str, depth: int = 0
    ) -> str | None:
        if depth > MAX_DEPTH:
            raise _OverBudget
        seen: dict[int, int] = {}
        position = 0
        while position < len(data):
            self.fields_left -= 1
            if self.fields_left < 0:
                raise _OverBudget
            key, position = _varint(data, position)
            number, wire_type = key >> 3, key & 7
            if wire_type == _VARINT:
                _, position = _varint(data, position)
            elif wire_type in (_FIXED64, _FIXED32):
                position += 8 if wire_type == _FIXED64 else 4
            elif wire_type == _LENGTH_DELIMITED:
                length, position = _varint(data, position)
                if position + length > len(data):
                    raise _Malformed
                chunk = data[position : position + length]  # a view: nothing copied
                position += length
                field = descriptor.fields_by_number.get(number)
                found = self._field(chunk, field, seen, prefix, depth)
                if found is not None:
                    return found
            else:
                raise _Malformed  # groups (not in proto3) or garbage
        return None

    def _field(
        self,
        chunk: memoryview,
        field: FieldDescriptor | None,
        seen: dict[int, int],
        prefix: str,
        depth: int,
    ) -> str | None:
        if field is None:
            return None
        if not self.find_invalid_utf8:  # only counting: no names to build
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                self.first_invalid_utf8(chunk, field.message_type, prefix, depth + 1)
            return None
        index = seen.get(field.number, 0)
        seen[field.number] = index + 1
        path = prefix + field.name + (f"[{index}]" if field.is_repeated else "")
        if field.type == FieldDescriptor.TYPE_STRING:
            try:
                str(chunk, "utf-8")
            except UnicodeDecodeError:
                return path
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            return self.first_invalid_utf8(chunk, field.message_type, path + ".", depth + 1)
        return None


def invalid_utf8_field(
    data: bytes, descriptor: Descriptor, max_fields: int = MAX_FIELDS
) -> str | None:
    """The path of the first string field whose bytes are not UTF-8 (``prompt``,
    ``classes[1].name``), or None when there is none, the bytes are no message, or it
    has more than ``max_fields`` fields."""
    try:
        return _Walk(max_fields, True).first_invalid_utf8(memoryview(data), descriptor, "")
    except (_Malformed, _OverBudget):
        return None


def too_many_fields(data: bytes, descriptor: Descriptor, max_fields: int = MAX_FIELDS) -> bool:
    """Whether a large message holds more than ``max_fields`` fields (nested ones included):
    then it is no genmedia request, and parsing it would stall the process. Small messages
    are not counted (False)."""
    if len(data) < LARGE_MESSAGE_BYTES:
        return False
    try:
        _Walk(max_fields, False).first_invalid_utf8(memoryview(data), descriptor, "")
    except _OverBudget:
        return True
    except _Malformed:
        return False  # protobuf will refuse it, at once
    return False
