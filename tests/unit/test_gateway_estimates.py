"""What the gateway holds of a key's daily budget before it forwards a call."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import text_generation_pb2 as text_pb
from services.common import api
from services.common.errors import Unavailable
from services.common.registry import IMAGE_GENERATION, IMAGE_TRANSLATION, TEXT_GENERATION
from services.common.usage import Usage
from services.gateway.estimates import (
    UNKNOWN_DEFAULT_MAX_NEW_TOKENS,
    Estimator,
    TextDefaults,
    metered,
    streamed_usage,
    usage_so_far,
)
from tests.fuzz.bad_inputs import png_declaring

GENERATE_IMAGES = api.path(api.method_of(IMAGE_GENERATION, "GenerateImages"))
TRANSLATE_IMAGE = api.path(api.method_of(IMAGE_TRANSLATION, "TranslateImage"))
STREAM_TEXT = api.path(api.method_of(TEXT_GENERATION, "StreamText"))
TRANSLATE_FRAMES = api.path(api.method_of(IMAGE_TRANSLATION, "TranslateFrames"))
TRANSLATE_VIDEO = api.path(api.method_of(IMAGE_TRANSLATION, "TranslateVideo"))


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def translation(image: bytes) -> bytes:
    return trans_pb.TranslateImageRequest(image=image, model="horse2zebra").SerializeToString()


class Backend:
    """A text backend's ListModels, as bytes, with a default the test sets."""

    def __init__(self, default: int) -> None:
        self.default = default
        self.asked = 0
        self.down = False

    async def ask(self) -> bytes:
        self.asked += 1
        if self.down:
            raise Unavailable("no healthy text-generation backend")
        model = text_pb.TextModel(name="gpt2", default_max_new_tokens=self.default)
        return text_pb.ListTextModelsResponse(models=[model]).SerializeToString()


async def test_a_translation_holds_the_megapixels_its_header_declares() -> None:
    estimator = Estimator()
    assert await estimator.estimate(TRANSLATE_IMAGE, translation(jpeg(2000, 500))) == Usage(
        megapixels=1.0
    )
    large = await estimator.estimate(TRANSLATE_IMAGE, translation(png_declaring(10_000, 10_000)))
    assert large == Usage(megapixels=100.0)  # held as declared; the backend refuses it
    # Pillow will not even read a header this large: nothing to hold, the backend refuses it.
    bomb = translation(png_declaring(100_000, 100_000))
    assert await estimator.estimate(TRANSLATE_IMAGE, bomb) == Usage()
    assert await estimator.estimate(TRANSLATE_IMAGE, translation(b"not an image")) == Usage()


async def test_images_asked_are_count_times_classes() -> None:
    request = gen_pb.GenerateImagesRequest(
        classes=[gen_pb.ClassSelector(name="cat"), gen_pb.ClassSelector(id=1)], count=3
    )
    assert await Estimator().estimate(GENERATE_IMAGES, request.SerializeToString()) == Usage(
        images=6
    )


async def test_an_unset_max_new_tokens_holds_the_backends_own_default() -> None:
    backend = Backend(default=8)
    estimator = Estimator(TextDefaults(backend.ask))
    unset = text_pb.GenerateTextRequest(prompt="hi").SerializeToString()
    assert await estimator.estimate(STREAM_TEXT, unset) == Usage(tokens=8)
    explicit = text_pb.GenerateTextRequest(prompt="hi", max_new_tokens=5).SerializeToString()
    assert await estimator.estimate(STREAM_TEXT, explicit) == Usage(tokens=5)
    assert backend.asked == 1


async def test_the_backends_default_is_asked_again_after_a_while() -> None:
    backend, now = Backend(default=8), [time.monotonic()]
    defaults = TextDefaults(backend.ask, refresh_s=30, clock=lambda: now[0])
    assert await defaults.default_max_new_tokens() == 8
    backend.default = 100  # the operator changed GENMEDIA_DEFAULT_MAX_NEW_TOKENS
    assert await defaults.default_max_new_tokens() == 8  # cached
    now[0] += 31
    assert await defaults.default_max_new_tokens() == 100
    backend.down = True
    now[0] += 31
    assert await defaults.default_max_new_tokens() == 100  # the last answer is kept
    assert backend.asked == 3


async def test_an_unknown_default_holds_the_most_a_call_may_ask() -> None:
    backend = Backend(default=8)
    backend.down = True
    assert await TextDefaults(backend.ask).default_max_new_tokens() == (
        UNKNOWN_DEFAULT_MAX_NEW_TOKENS
    )


async def test_a_request_with_too_many_fields_is_not_parsed_here() -> None:
    flood = bytes([0x10, 0x01]) * 40_000  # max_new_tokens, 40,000 times
    assert await Estimator().estimate(STREAM_TEXT, flood) == Usage()


@pytest.mark.parametrize(
    ("last", "messages", "tokens"),
    [
        (text_pb.StreamTextResponse(text="ab", generated_tokens=7), 2, 7),
        (text_pb.StreamTextResponse(text="ab"), 3, 3),  # an older backend: one per message
        (None, 0, 0),
    ],
)
def test_a_stream_cut_short_is_charged_its_last_cumulative_count(
    last: text_pb.StreamTextResponse | None, messages: int, tokens: int
) -> None:
    raw = None if last is None else last.SerializeToString()
    assert streamed_usage(STREAM_TEXT, raw, messages) == Usage(tokens=tokens)


@pytest.mark.parametrize(
    ("path", "message", "megapixels"),
    [
        (TRANSLATE_FRAMES, trans_pb.TranslateFramesResponse(index=4, megapixels=0.5), 0.5),
        (
            TRANSLATE_VIDEO,
            trans_pb.TranslateVideoResponse(progress=trans_pb.VideoProgress(megapixels=2.25)),
            2.25,
        ),
        (TRANSLATE_VIDEO, trans_pb.TranslateVideoResponse(chunk=b"mdat"), None),  # no total
    ],
)
def test_a_bidirectional_stream_says_its_running_total_in_its_messages(
    path: str, message: trans_pb.TranslateFramesResponse, megapixels: float | None
) -> None:
    found = usage_so_far(metered()[path], message.SerializeToString())
    assert found == (None if megapixels is None else Usage(megapixels=megapixels))


def test_a_running_total_that_does_not_decode_is_not_charged() -> None:
    assert usage_so_far(metered()[TRANSLATE_FRAMES], b"\xff\xff\xff") is None
    assert usage_so_far(metered()[STREAM_TEXT], b"") is None  # not charged as it goes
