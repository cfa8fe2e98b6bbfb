"""Reading a request that protobuf refused, to say which field was wrong.

Python's protobuf rejects a message with a string field that is not UTF-8
as a whole ("Error parsing message"). Walking the wire format with the
message's descriptor finds the field, so the caller is told what to fix.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class _Malformed(Exception):
    """The bytes are not protobuf wire format at all."""


def _varint(data: bytes, position: int) -> tuple[int, int]:
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


def _first_invalid_utf8(data: bytes, descriptor: Descriptor, prefix: str) -> str | None:
    seen: dict[int, int] = {}
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            _, position = _varint(data, position)
        elif wire_type in (_FIXED64, _FIXED32):
            position += 8 if wire_type == _FIXED64 else 4
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _varint(data, position)
            chunk = data[position : position + length]
            position += length
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            index = seen.get(number, 0)
            seen[number] = index + 1
            path = prefix + field.name + (f"[{index}]" if field.is_repeated else "")
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return path
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                found = _first_invalid_utf8(chunk, field.message_type, path + ".")
                if found is not None:
                    return found
        else:
            raise _Malformed  # groups (not in proto3) or garbage
    return None


def invalid_utf8_field(data: bytes, descriptor: Descriptor) -> str | None:
    """The path of the first string field whose bytes are not UTF-8 (``prompt``,
    ``classes[1].name``), or None when there is none or the bytes are no message."""
    try:
        return _first_invalid_utf8(data, descriptor, "")
    except _Malformed:
        return None
