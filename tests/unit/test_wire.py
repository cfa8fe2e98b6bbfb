"""Naming the string field whose bytes are not UTF-8 in a request protobuf refused."""

from __future__ import annotations

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import text_generation_pb2 as text_pb
from services.common.wire import invalid_utf8_field

TEXT = text_pb.GenerateTextRequest.DESCRIPTOR
IMAGES = gen_pb.GenerateImagesRequest.DESCRIPTOR


def with_bad_bytes(message: bytes, good: str) -> bytes:
    """``message`` with the UTF-8 text ``good`` replaced by the same number of 0xff bytes."""
    encoded = good.encode()
    assert message.count(encoded) == 1
    return message.replace(encoded, b"\xff" * len(encoded))


def test_names_a_top_level_string() -> None:
    request = text_pb.GenerateTextRequest(prompt="PROMPT", max_new_tokens=5, seed=3)
    assert invalid_utf8_field(with_bad_bytes(request.SerializeToString(), "PROMPT"), TEXT) == (
        "prompt"
    )


def test_names_the_element_of_a_repeated_string() -> None:
    request = text_pb.GenerateTextRequest(prompt="ok", stop=["a", "b", "THIRD"])
    assert invalid_utf8_field(with_bad_bytes(request.SerializeToString(), "THIRD"), TEXT) == (
        "stop[2]"
    )


def test_names_a_string_inside_a_repeated_message() -> None:
    request = gen_pb.GenerateImagesRequest(
        classes=[gen_pb.ClassSelector(name="cat"), gen_pb.ClassSelector(name="GOLDFISH")],
        count=2,
        truncation=0.5,
        seed=9,
    )
    data = with_bad_bytes(request.SerializeToString(), "GOLDFISH")
    assert invalid_utf8_field(data, IMAGES) == "classes[1].name"


def test_nothing_to_name_in_valid_messages_or_non_messages() -> None:
    valid = text_pb.GenerateTextRequest(prompt="héllo ✓", stop=["\n"]).SerializeToString()
    assert invalid_utf8_field(valid, TEXT) is None
    assert invalid_utf8_field(b"\xff\xff\xff\xff", TEXT) is None  # a varint that never ends
    assert invalid_utf8_field(b"\x0b\x01", TEXT) is None  # a group: not proto3
    assert invalid_utf8_field(b"", TEXT) is None


def test_a_large_message_of_many_fields_is_counted_within_a_budget() -> None:
    from services.common.wire import LARGE_MESSAGE_BYTES, MAX_FIELDS, too_many_fields

    flood = bytes([0x10, 0x01]) * (16 * 1024 * 1024)  # max_new_tokens 16 million times
    assert too_many_fields(flood, TEXT)
    nested = (bytes([0x0A, 2, 0x10, 0x01])) * (LARGE_MESSAGE_BYTES // 4 + 1)  # classes
    assert too_many_fields(nested, IMAGES)
    # A real request of the same size: one large string, a few fields.
    prompt = text_pb.GenerateTextRequest(prompt="x" * (2 * LARGE_MESSAGE_BYTES), stop=["a"])
    assert not too_many_fields(prompt.SerializeToString(), TEXT)
    # Small messages are not counted (protobuf parses them in well under a millisecond).
    assert not too_many_fields(bytes([0x10, 0x01]) * (MAX_FIELDS + 1), TEXT)


def test_the_utf8_walk_stops_at_its_budget() -> None:
    from services.common.wire import MAX_FIELDS

    flood = bytes([0x10, 0x01]) * (MAX_FIELDS + 1) + bytes([0x0A, 2, 0xFF, 0xFE])
    assert invalid_utf8_field(flood, TEXT) is None  # gives up rather than walk on
    assert invalid_utf8_field(flood, TEXT, max_fields=MAX_FIELDS + 10) == "prompt"
