"""What a call will draw from its key's daily budget, read before it is forwarded.

The gateway forwards raw bytes; for the few methods that draw on a budget it
reads just enough of the request to hold what the call may generate (images
asked for, the input image's megapixels from its header, max_new_tokens), so
concurrent calls cannot all pass the same budget check. What the backend
reports it generated is charged afterwards; this is only the hold.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import warnings
from collections.abc import Awaitable, Callable

from google.protobuf.message import DecodeError
from grpc import aio
from PIL import Image

from genmedia.v1 import image_generation_pb2, image_translation_pb2, text_generation_pb2
from services.common.errors import GenmediaError
from services.common.usage import Usage
from services.common.wire import too_many_fields

logger = logging.getLogger(__name__)

GENERATE_IMAGES = "/genmedia.v1.ImageGenerationService/GenerateImages"
TRANSLATE_IMAGE = "/genmedia.v1.ImageTranslationService/TranslateImage"
GENERATE_TEXT = "/genmedia.v1.TextGenerationService/GenerateText"
STREAM_TEXT = "/genmedia.v1.TextGenerationService/StreamText"
LIST_TEXT_MODELS = "/genmedia.v1.TextGenerationService/ListModels"

UNITS: dict[str, tuple[str, ...]] = {
    GENERATE_IMAGES: ("images",),
    TRANSLATE_IMAGE: ("megapixels",),
    GENERATE_TEXT: ("tokens",),
    STREAM_TEXT: ("tokens",),
}
"""The daily budgets each method draws on; listing calls draw on none."""

UNKNOWN_DEFAULT_MAX_NEW_TOKENS = 1024
"""Held for max_new_tokens = 0 while the text backend has not said what it means: the API's
largest max_new_tokens, so an unknown default can only hold too much, never too little."""
TEXT_DEFAULTS_REFRESH_S = 30.0
ASK_TIMEOUT_S = 2.0

_REQUESTS = {
    GENERATE_IMAGES: image_generation_pb2.GenerateImagesRequest.DESCRIPTOR,
    TRANSLATE_IMAGE: image_translation_pb2.TranslateImageRequest.DESCRIPTOR,
    GENERATE_TEXT: text_generation_pb2.GenerateTextRequest.DESCRIPTOR,
    STREAM_TEXT: text_generation_pb2.GenerateTextRequest.DESCRIPTOR,
}

Ask = Callable[[], Awaitable[bytes]]
"""Calls the text backend's ListModels and returns the serialized answer."""


class TextDefaults:
    """What the text backend does with max_new_tokens = 0, asked of the backend itself
    (TextGenerationService.ListModels) and kept for a while: changing the backend's
    GENMEDIA_DEFAULT_MAX_NEW_TOKENS changes the gateway's holds with it."""

    def __init__(
        self,
        ask: Ask,
        refresh_s: float = TEXT_DEFAULTS_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self._refresh_s = refresh_s
        self._clock = clock
        self._value: int | None = None
        self._asked_at = -float("inf")
        self._lock = asyncio.Lock()
        self._failing = False

    def _fresh(self) -> bool:
        return self._value is not None and self._clock() - self._asked_at < self._refresh_s

    async def default_max_new_tokens(self) -> int:
        if self._fresh():
            return self._value  # type: ignore[return-value]
        async with self._lock:  # one question at a time, however many calls wait
            if not self._fresh():
                await self._refresh()
        return UNKNOWN_DEFAULT_MAX_NEW_TOKENS if self._value is None else self._value

    async def _refresh(self) -> None:
        self._asked_at = self._clock()
        try:
            answer = text_generation_pb2.ListTextModelsResponse.FromString(await self._ask())
            value = answer.models[0].default_max_new_tokens if answer.models else 0
        except (GenmediaError, aio.AioRpcError, DecodeError) as exc:
            if not self._failing:
                logger.warning(
                    "cannot ask text-generation for its default max_new_tokens (%s); holding %d",
                    exc,
                    self._value or UNKNOWN_DEFAULT_MAX_NEW_TOKENS,
                )
            self._failing = True
            return
        self._failing = False
        if value > 0:
            self._value = value


def _images_asked(request: bytes) -> Usage:
    parsed = image_generation_pb2.GenerateImagesRequest.FromString(request)
    return Usage(images=max(parsed.count, 1) * len(parsed.classes))


def _megapixels_sent(request: bytes) -> Usage:
    """The input's megapixels from its header alone (a translation keeps the size)."""
    image = image_translation_pb2.TranslateImageRequest.FromString(request).image
    try:
        with warnings.catch_warnings():
            # A huge declared size is held as it is; the backend refuses it before decoding.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image), formats=["PNG", "JPEG", "WEBP"]) as opened:
                width, height = opened.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return Usage()  # the backend says what is wrong with it
    return Usage(megapixels=width * height / 1e6)


class Estimator:
    """The hold each budgeted call gets before it is forwarded."""

    def __init__(self, text_defaults: TextDefaults | None = None) -> None:
        self.text_defaults = text_defaults
        """Where max_new_tokens = 0 is looked up (set once the text backend's pool exists)."""

    async def _tokens_asked(self, request: bytes) -> Usage:
        parsed = text_generation_pb2.GenerateTextRequest.FromString(request)
        if parsed.max_new_tokens:
            return Usage(tokens=parsed.max_new_tokens)
        if self.text_defaults is None:
            return Usage(tokens=UNKNOWN_DEFAULT_MAX_NEW_TOKENS)
        return Usage(tokens=await self.text_defaults.default_max_new_tokens())

    async def estimate(self, path: str, request: bytes) -> Usage:
        descriptor = _REQUESTS.get(path)
        if descriptor is None or too_many_fields(request, descriptor):
            return Usage()  # not parsed here: the backend refuses it (services/common/wire.py)
        try:
            if path == GENERATE_IMAGES:
                return _images_asked(request)
            if path == TRANSLATE_IMAGE:
                return _megapixels_sent(request)
            if path in (GENERATE_TEXT, STREAM_TEXT):
                return await self._tokens_asked(request)
        except DecodeError:
            pass  # the backend will say what is wrong with it
        return Usage()


def streamed_usage(path: str, last_message: bytes | None, messages: int) -> Usage:
    """What a stream that ended without its usage trailer generated: the cumulative count
    in the last message it sent (several tokens may share one), at least one a message."""
    if path != STREAM_TEXT or not messages:
        return Usage()
    counted = 0
    if last_message is not None:
        try:
            counted = text_generation_pb2.StreamTextResponse.FromString(
                last_message
            ).generated_tokens
        except DecodeError:
            counted = 0
    return Usage(tokens=max(counted, messages))
