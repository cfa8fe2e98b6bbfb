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
