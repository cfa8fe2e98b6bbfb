"""What a call will draw from its key's daily budget, read before it is forwarded.

The gateway forwards raw bytes; for the few methods that draw on a budget it
reads just enough of the request to hold what the call may generate (images
asked for, the input image's megapixels from its header, max_new_tokens), so
concurrent calls cannot all pass the same budget check. What the backend
reports it generated is charged afterwards; this is only the hold.

Which methods are metered, in which units and by which of the estimators
below is each backend's registry entry (services/common/registry.py); their
paths and messages come from the proto descriptors.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message
from grpc import aio
from PIL import Image

from services.common import api
from services.common.errors import GenmediaError
from services.common.registry import BACKENDS, TEXT_GENERATION, ProcessSpec, resolve
from services.common.usage import Usage
from services.common.wire import too_many_fields

logger = logging.getLogger(__name__)

UNKNOWN_DEFAULT_MAX_NEW_TOKENS = 1024
"""Held for max_new_tokens = 0 while the text backend has not said what it means: the API's
largest max_new_tokens, so an unknown default can only hold too much, never too little."""
TEXT_DEFAULTS_REFRESH_S = 30.0
ASK_TIMEOUT_S = 2.0

Estimate = Callable[[Any, "Estimator"], Awaitable[Usage]]
"""A metered method's hold, from its parsed request (and what the estimator knows of the
backend's defaults)."""
Ask = Callable[[], Awaitable[bytes]]
"""Calls the text backend's ListModels and returns the serialized answer."""
Unary = Callable[[str, bytes], Awaitable[bytes]]
"""Calls one of a backend's unary methods by path and returns the serialized answer."""


@dataclass(frozen=True)
class Metered:
    """A registry's metered method with its descriptors resolved."""

    path: str
    units: tuple[str, ...]
    request: type[Message]
    response: type[Message]
    estimate: Estimate
    counted_by: str | None
    charged_as_it_goes: str | None = None


@functools.cache
def metered() -> Mapping[str, Metered]:
    """Every metered method of every backend, by gRPC path."""
    table: dict[str, Metered] = {}
    for backend in BACKENDS:
        for entry in backend.metered:
            method = api.method_of(backend, entry.method)
            table[api.path(method)] = Metered(
                api.path(method),
                entry.units,
                api.message_class(method),
                api.message_class(method, response=True),
                resolve(entry.estimator),
                entry.counted_by,
                entry.charged_as_it_goes,
            )
    return table


def units(path: str) -> tuple[str, ...]:
    """The daily budgets a method draws on; listing calls draw on none."""
    entry = metered().get(path)
    return () if entry is None else entry.units


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
            answer = _list_text_models().response.FromString(await self._ask())
            value = answer.models[0].default_max_new_tokens if answer.models else 0
        except (GenmediaError, aio.AioRpcError, DecodeError) as exc:
            if not self._failing:
                logger.warning(
                    "cannot ask %s for its default max_new_tokens (%s); holding %d",
                    TEXT_GENERATION.name,
                    exc,
                    self._value or UNKNOWN_DEFAULT_MAX_NEW_TOKENS,
                )
            self._failing = True
            return
        self._failing = False
        if value > 0:
            self._value = value


@dataclass(frozen=True)
class _Listing:
    path: str
    response: type[Message]


@functools.cache
def _list_text_models() -> _Listing:
    """The text backend's ListModels, where its default max_new_tokens is read."""
    method = api.method_of(TEXT_GENERATION, "ListModels")
    return _Listing(api.path(method), api.message_class(method, response=True))


class Estimator:
    """The hold each budgeted call gets before it is forwarded."""

    def __init__(self, text_defaults: TextDefaults | None = None) -> None:
        self.text_defaults = text_defaults
        """Where max_new_tokens = 0 is looked up (set once the text backend's pool exists)."""

    def connect(self, backend: ProcessSpec, unary: Unary) -> None:
        """Lets the estimates of ``backend``'s methods ask it what its defaults are."""
        if backend.name == TEXT_GENERATION.name:
            path = _list_text_models().path
            self.text_defaults = TextDefaults(lambda: unary(path, b""))

    async def estimate(self, path: str, request: bytes) -> Usage:
        entry = metered().get(path)
        if entry is None or too_many_fields(request, entry.request.DESCRIPTOR):
            return Usage()  # not parsed here: the backend refuses it (services/common/wire.py)
        try:
            parsed = entry.request.FromString(request)
        except DecodeError:
            return Usage()  # the backend will say what is wrong with it
        return await entry.estimate(parsed, self)


# The backends' own estimators, named by their registry entries.


async def images_asked(request: Any, _: Estimator) -> Usage:
    """GenerateImages: count images of each class asked for."""
    return Usage(images=max(request.count, 1) * len(request.classes))


async def megapixels_sent(request: Any, _: Estimator) -> Usage:
    """TranslateImage: the input's megapixels from its header alone (a translation keeps
    the size)."""
    try:
        with warnings.catch_warnings():
            # A huge declared size is held as it is; the backend refuses it before decoding.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(request.image), formats=["PNG", "JPEG", "WEBP"]) as opened:
                width, height = opened.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return Usage()  # the backend says what is wrong with it
    return Usage(megapixels=width * height / 1e6)


async def nothing_held(request: Any, _: Estimator) -> Usage:
    """TranslateFrames: nothing is known when the stream opens; what it translated is
    charged from its usage trailer."""
    return Usage()


async def tokens_asked(request: Any, estimator: Estimator) -> Usage:
    """GenerateText, StreamText: max_new_tokens, or the backend's default for 0."""
    if request.max_new_tokens:
        return Usage(tokens=request.max_new_tokens)
    if estimator.text_defaults is None:
        return Usage(tokens=UNKNOWN_DEFAULT_MAX_NEW_TOKENS)
    return Usage(tokens=await estimator.text_defaults.default_max_new_tokens())


def streamed_usage(path: str, last_message: bytes | None, messages: int) -> Usage:
    """What a stream that ended without its usage trailer generated: the cumulative count
    in the last message it sent (several units may share one), at least one a message."""
    entry = metered().get(path)
    if entry is None or entry.counted_by is None or not messages:
        return Usage()
    counted = 0
    if last_message is not None:
        try:
            counted = getattr(entry.response.FromString(last_message), entry.counted_by)
        except DecodeError:
            counted = 0
    return Usage(**{unit: max(counted, messages) for unit in entry.units})


def usage_so_far(entry: Metered, message: bytes) -> Usage | None:
    """A bidirectional stream's running total in one of its responses; None when this
    message does not carry it (a TranslateVideo chunk) or does not decode."""
    if entry.charged_as_it_goes is None:
        return None
    try:
        value: Any = entry.response.FromString(message)
    except DecodeError:
        return None
    *parents, name = entry.charged_as_it_goes.split(".")
    for parent in parents:
        if not value.HasField(parent):
            return None
        value = getattr(value, parent)
    return Usage(**{unit: float(getattr(value, name)) for unit in entry.units})
