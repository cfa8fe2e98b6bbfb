"""Hypothesis strategies that build every request message of the API, valid and invalid.

Each field draws from values the API accepts, values at and past its limits,
and values no caller should send (NaN, infinities, unknown enum numbers,
empty and duplicate lists, huge counts); images are real PNG/JPEG/WebP/GIF
files of odd modes and sizes, or random bytes. `mutated` also corrupts the
serialized message itself, byte by byte. `requests` labels each message
valid (the API must answer OK) or not (a caller error is allowed).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import Message
from hypothesis import strategies as st
from PIL import Image

from genmedia.v1 import common_pb2
from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import provenance_pb2 as provenance_pb
from genmedia.v1 import text_generation_pb2 as text_pb

UINT32_MAX = 2**32 - 1
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, -0.0, 1e-30, 0.4, 1.0, 1.0000001, 2.0, -1.0, 3.4e38]),
)
uint32 = st.one_of(st.integers(0, 40), st.sampled_from([1024, 1025, 5000, 2**31, UINT32_MAX]))
# Proto3 enums are open: unknown numbers reach the server as they are.
image_formats = st.one_of(
    st.sampled_from(list(common_pb2.ImageFormat.values())), st.integers(-5, 2**31 - 1)
)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "coffee", "Coffee Mug", "tench", "horse2zebra", "\x00", "🦓"]),
    st.text(min_size=190, max_size=260),
)


@st.composite
def class_selectors(draw: st.DrawFn) -> gen_pb.ClassSelector:
    if draw(st.booleans()):
        return gen_pb.ClassSelector(name=draw(texts))
    if draw(st.booleans()):
        return gen_pb.ClassSelector(id=draw(uint32))
    return gen_pb.ClassSelector()  # neither name nor id


@st.composite
def generate_images_requests(draw: st.DrawFn) -> gen_pb.GenerateImagesRequest:
    classes = draw(st.lists(class_selectors(), max_size=20))
    if classes and draw(st.booleans()):
        classes = classes + classes[:1]  # a duplicate
    request = gen_pb.GenerateImagesRequest(
        classes=classes,
        count=draw(st.one_of(st.integers(0, 3), uint32)),
        truncation=draw(floats),
        format=draw(image_formats),
        width=draw(st.one_of(st.just(0), uint32)),
        height=draw(st.one_of(st.just(0), uint32)),
        quality=draw(st.one_of(st.just(0), uint32)),
    )
    if draw(st.booleans()):
        request.seed = draw(INT64)
    return request


@st.composite
def list_classes_requests(draw: st.DrawFn) -> gen_pb.ListClassesRequest:
    return gen_pb.ListClassesRequest(query=draw(texts))


def _encode(pixels: np.ndarray, mode: str, image_format: str, **options: object) -> bytes:
    image = Image.fromarray(pixels)
    # 16-bit greyscale comes from 8-bit greyscale scaled up; the rest convert directly.
    if mode == "I;16":
        wide = np.asarray(image.convert("L"), dtype="<u2") * 257
        image = Image.frombytes("I;16", image.size, wide.tobytes())
    else:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["image", "image", "truncated", "random", "empty"]))
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=200))
    if kind == "empty":
        return b""
    width, height = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    modes = {
        "PNG": ["RGB", "RGBA", "L", "LA", "P", "I;16"],
        "JPEG": ["RGB", "L", "CMYK"],
        "WEBP": ["RGB", "RGBA"],
        "GIF": ["P", "L"],
        "BMP": ["RGB", "L", "P"],
        "TIFF": ["RGB", "RGBA", "L", "I;16"],
    }
    image_format = draw(st.sampled_from(sorted(modes)))
    mode = draw(st.sampled_from(modes[image_format]))
    data = _encode(pixels, mode, image_format)
    if kind == "truncated":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    return data


@st.composite
def translate_image_requests(draw: st.DrawFn) -> trans_pb.TranslateImageRequest:
    return trans_pb.TranslateImageRequest(
        image=draw(image_bytes()),
        model=draw(st.one_of(texts, st.sampled_from(["horse2zebra", "zebra2horse"]))),
        format=draw(image_formats),
        quality=draw(st.one_of(st.just(0), uint32)),
    )


@st.composite
def generate_text_requests(draw: st.DrawFn) -> text_pb.GenerateTextRequest:
    request = text_pb.GenerateTextRequest(
        prompt=draw(st.one_of(texts, st.just("deep " * 1100))),
        # Small counts keep each example quick; the limits are drawn too.
        max_new_tokens=draw(st.one_of(st.integers(0, 6), st.sampled_from([1024, 1025, 5000]))),
        top_k=draw(st.one_of(st.integers(0, 60), uint32)),
        stop=draw(st.lists(st.one_of(texts, st.text(min_size=60, max_size=80)), max_size=6)),
        truncate_prompt=draw(st.booleans()),
    )
    for field in ("temperature", "top_p", "repetition_penalty"):
        if draw(st.booleans()):
            setattr(request, field, draw(floats))
    if draw(st.booleans()):
        request.seed = draw(INT64)
    return request


@st.composite
def verify_image_requests(draw: st.DrawFn) -> provenance_pb.VerifyImageRequest:
    return provenance_pb.VerifyImageRequest(data=draw(image_bytes()))


@st.composite
def verify_text_requests(draw: st.DrawFn) -> provenance_pb.VerifyTextRequest:
    long_text = st.just("deep " * 20_001)  # over the 100,000-character limit
    return provenance_pb.VerifyTextRequest(text=draw(st.one_of(texts, long_text)))


def mutated(messages: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """A message serialized, then with bytes flipped, cut or appended."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(messages).SerializeToString())
        for _ in range(draw(st.integers(1, 4))):
            action = draw(st.sampled_from(["flip", "cut", "append"]))
            if action == "flip" and data:
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            elif action == "cut" and data:
                del data[draw(st.integers(0, len(data) - 1)) :]
            else:
                data += draw(st.binary(min_size=1, max_size=8))
        return bytes(data)

    return build()


# -- messages the API accepts, and the same with one field made arbitrary ------

positive_unit = st.floats(min_value=0.0009765625, max_value=1.0, width=32)  # 2**-10


@st.composite
def valid_generate_images(draw: st.DrawFn) -> gen_pb.GenerateImagesRequest:
    names = st.sampled_from(["coffee mug", "goldfish", "tench", "Coffee", "mushroom"])
    selectors = st.one_of(
        names.map(lambda name: gen_pb.ClassSelector(name=name)),
        st.integers(0, 999).map(lambda index: gen_pb.ClassSelector(id=index)),
    )
    side = st.one_of(st.just(0), st.integers(16, 96))
    return gen_pb.GenerateImagesRequest(
        classes=draw(st.lists(selectors, min_size=1, max_size=3)),
        count=draw(st.integers(0, 2)),
        truncation=draw(st.one_of(st.just(0.0), positive_unit)),
        seed=draw(st.integers(0, 2**63 - 1)),
        format=draw(st.integers(0, 3)),
        width=draw(side),
        height=draw(side),
        quality=draw(st.integers(0, 100)),
    )


@st.composite
def valid_translate_image(draw: st.DrawFn) -> trans_pb.TranslateImageRequest:
    width, height = draw(st.integers(8, 64)), draw(st.integers(8, 64))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image_format = draw(st.sampled_from(["PNG", "JPEG", "WEBP"]))
    return trans_pb.TranslateImageRequest(
        image=_encode(pixels, "RGB", image_format),
        model=draw(st.sampled_from(["horse2zebra", "zebra2horse"])),
        format=draw(st.integers(0, 3)),
        quality=draw(st.integers(0, 100)),
    )


@st.composite
def valid_list_classes(draw: st.DrawFn) -> gen_pb.ListClassesRequest:
    return gen_pb.ListClassesRequest(query=draw(st.text(max_size=40)))


@st.composite
def valid_verify_image(draw: st.DrawFn) -> provenance_pb.VerifyImageRequest:
    # Any readable PNG, JPEG or WebP gets a verdict (most of them: no evidence).
    return provenance_pb.VerifyImageRequest(data=draw(valid_translate_image()).image)


@st.composite
def valid_verify_text(draw: st.DrawFn) -> provenance_pb.VerifyTextRequest:
    return provenance_pb.VerifyTextRequest(
        text=draw(st.text(min_size=1, max_size=200).filter(str.strip))
    )


@st.composite
def valid_generate_text(draw: st.DrawFn) -> text_pb.GenerateTextRequest:
    return text_pb.GenerateTextRequest(
        prompt=draw(st.text(min_size=1, max_size=60).filter(str.strip)),
        max_new_tokens=draw(st.integers(0, 6)),
        temperature=draw(st.floats(0.0, 2.0, width=32)),
        top_k=draw(st.integers(0, 1000)),
        top_p=draw(positive_unit),
        repetition_penalty=draw(st.floats(0.125, 10.0, width=32)),
        seed=draw(st.integers(0, 2**63 - 1)),
        stop=draw(st.lists(st.text(min_size=1, max_size=8), max_size=4)),
        truncate_prompt=draw(st.booleans()),
    )


def one_field_arbitrary(valid: st.SearchStrategy, arbitrary: st.SearchStrategy):
    """A valid message with one field copied from an arbitrary one."""

    @st.composite
    def build(draw: st.DrawFn):
        message, other = draw(valid), draw(arbitrary)
        field = draw(st.sampled_from([f.name for f in message.DESCRIPTOR.fields]))
        message.ClearField(field)
        descriptor = message.DESCRIPTOR.fields_by_name[field]
        if descriptor.is_repeated:
            getattr(message, field).extend(getattr(other, field))
        elif descriptor.message_type is not None:
            getattr(message, field).CopyFrom(getattr(other, field))
        elif not descriptor.has_presence or other.HasField(field):
            setattr(message, field, getattr(other, field))
        return message

    return build()


@dataclass(frozen=True)
class Drawn:
    """A request message, and whether the API must accept it (answer OK)."""

    message: Message
    valid: bool


def requests(valid: st.SearchStrategy, arbitrary: st.SearchStrategy) -> st.SearchStrategy[Drawn]:
    """Valid messages, valid ones with one bad field, and anything at all, in equal parts;
    only the first are labelled valid (one bad field may happen to be a good one)."""
    return st.one_of(
        valid.map(lambda message: Drawn(message, valid=True)),
        one_field_arbitrary(valid, arbitrary).map(lambda message: Drawn(message, valid=False)),
        arbitrary.map(lambda message: Drawn(message, valid=False)),
    )
