"""TranslateFrames: a stream of frames, each translated as TranslateImage would translate it.

Up to ``IN_FLIGHT`` frames of one stream are in the translator at once, so a stream keeps
Triton's dynamic batcher fed (its frames and other streams' share batches); no frame is read
while that many are, so a fast sender waits on gRPC flow control, not on this process's
memory. Each answer goes out, in the frames' order, as soon as it is ready: a caller that
sends one frame and waits for it is answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from PIL import Image

from genmedia.v1 import image_translation_pb2 as pb
from services.common import images
from services.common.audit import deferred_sha256, image_watermark_label
from services.common.errors import GenmediaError, InvalidArgument
from services.image_translation.stream_metrics import StreamMeter
from services.image_translation.translator import ImageTranslator

IN_FLIGHT = 4
"""Frames of one stream in the translator at once."""
DRAIN_S = 30.0
"""How long a stream that failed still reads (and drops) what its caller sends, at most:
until the caller stops sending. Ending sooner races the caller's messages in flight, and
a gRPC aio client (the gateway) that has a write pending when the status arrives reports
INTERNAL ("Internal error from Core") instead of this stream's status. A caller that
keeps sending only spends its own deadline."""


class FrameStream:
    def __init__(
        self,
        translator: ImageTranslator,
        request_id: str,
        time_remaining: Callable[[], float | None],
    ) -> None:
        self._translator = translator
        self._request_id = request_id
        self._time_remaining = time_remaining
        self.megapixels = 0.0
        """What the frames answered so far came to (charged to the key)."""
        self._size: tuple[int, int] | None = None
        self._reading: asyncio.Future[pb.TranslateFramesRequest | None] | None = None
        """The read of the caller's next message, while one is under way."""

    async def translate(
        self, requests: AsyncIterator[pb.TranslateFramesRequest]
    ) -> AsyncIterator[pb.TranslateFramesResponse]:
        try:
            async for response in self._translate(requests):
                yield response
        except GenmediaError:
            # The caller may still be writing: its messages are read (and dropped) for a
            # moment before the stream ends. A status that overtakes a message in flight
            # reaches a proxy's client as INTERNAL instead of this error (seen through the
            # gateway in the fuzzing).
            await drain_requests(self._reading, requests, DRAIN_S)
            raise
        finally:
            if self._reading is not None:
                self._reading.cancel()

    async def _translate(
        self, requests: AsyncIterator[pb.TranslateFramesRequest]
    ) -> AsyncIterator[pb.TranslateFramesResponse]:
        config = await self._config(requests)
        self._meter = StreamMeter("TranslateFrames", self._translator.triton_model(config.model))
        pending: collections.deque[asyncio.Task[pb.TranslateFramesResponse]] = collections.deque()
        ended = False
        index = 0
        try:
            while True:
                if self._reading is None and not ended and len(pending) < IN_FLIGHT:
                    self._reading = asyncio.ensure_future(anext(requests, None))
                oldest = pending[0] if pending else None
                waiting = [task for task in (oldest, self._reading) if task is not None]
                if not waiting:
                    return
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if pending and pending[0] in done:
                    yield self._counted(pending.popleft().result())
                elif self._reading in done:
                    request = self._reading.result()
                    self._reading = None
                    if request is None:
                        ended = True
                    else:
                        pending.append(asyncio.create_task(self._frame(index, request, config)))
                        index += 1
        finally:
            self._meter.close()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _counted(self, response: pb.TranslateFramesResponse) -> pb.TranslateFramesResponse:
        """Every frame has the first one's size (a frame that does not ends the stream);
        what is answered is counted for the key's budget."""
        shown = response.raw if response.HasField("raw") else response.image
        size = (shown.width, shown.height)
        if self._size is None:
            self._size = size
        elif size != self._size:
            width, height = self._size
            raise InvalidArgument(
                f"frame {response.index} is {size[0]}x{size[1]}; this stream's frames are "
                f"{width}x{height} (the first frame's size)"
            )
        self.megapixels += size[0] * size[1] / 1e6
        response.megapixels = self.megapixels  # the usage so far, for the caller and gateway
        return response

    async def _config(
        self, requests: AsyncIterator[pb.TranslateFramesRequest]
    ) -> pb.FrameStreamConfig:
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("item") != "config":
            raise InvalidArgument(
                "the first message of TranslateFrames must be config (model, format, quality); "
                "frames come after it"
            )
        config = first.config
        await self._translator.check(config.model, config.format, config.quality)
        return config

    async def _frame(
        self, index: int, request: pb.TranslateFramesRequest, config: pb.FrameStreamConfig
    ) -> pb.TranslateFramesResponse:
        kind = request.WhichOneof("item")
        if kind not in ("image", "raw"):
            raise InvalidArgument(
                f"frame {index}: each message after the first must carry image or raw, not "
                f"{kind or 'nothing'}"
            )
        started = time.perf_counter()
        try:
            if config.raw_output:
                response = await self._raw_frame(index, request, config.model)
            else:
                response = await self._encoded_frame(index, request, config)
        except InvalidArgument as error:
            raise InvalidArgument(f"frame {index}: {error.message}") from None
        self._meter.frame_done(time.perf_counter() - started)
        return response

    async def _encoded_frame(
        self, index: int, request: pb.TranslateFramesRequest, config: pb.FrameStreamConfig
    ) -> pb.TranslateFramesResponse:
        """The frame as TranslateImage answers it: encoded, signed, watermarked."""
        if request.WhichOneof("item") == "raw":
            image = await asyncio.to_thread(_png_of_raw, request.raw)
        else:
            image = request.image
        single = pb.TranslateImageRequest(
            image=image, model=config.model, format=config.format, quality=config.quality
        )
        translated = await self._translator.translate(
            single, self._request_id, self._time_remaining()
        )
        return pb.TranslateFramesResponse(index=index, image=translated.image)

    async def _raw_frame(
        self, index: int, request: pb.TranslateFramesRequest, direction: str
    ) -> pb.TranslateFramesResponse:
        """The same pixels as :meth:`_encoded_frame` decodes from its image, as raw RGB."""
        if request.WhichOneof("item") == "raw":
            pixels = _pixels_of_raw(request.raw, self._translator.limits)
            source = request.raw.rgb
        else:
            pixels = await asyncio.to_thread(
                images.decode_image, request.image, self._translator.limits
            )
            source = request.image
        translated = await self._translator.translate_pixels(
            direction, pixels, self._request_id, self._time_remaining()
        )
        height, width = translated.shape[:2]
        rgb = translated.tobytes()
        provenance = await self._translator.provenance(direction, self._request_id)
        # Audited as TranslateImage audits each image, without credentials (bare pixels).
        self._translator.audit.record(
            self._request_id,
            provenance.model,
            provenance.model_version,
            parameters={"direction": direction, "frame": index,
                        "input_sha256": deferred_sha256(source), "width": width,
                        "height": height, "format": "RAW_RGB"},
            outputs=[{"sha256": deferred_sha256(rgb), "bytes": len(rgb)}],
            content_credentials=False,
            watermark=image_watermark_label(width, height),
        )  # fmt: skip
        return pb.TranslateFramesResponse(
            index=index,
            raw=pb.RawFrame(rgb=rgb, width=width, height=height),
            provenance=provenance,
        )


async def drain_requests(
    reading: asyncio.Future[Any] | None, requests: AsyncIterator[Any], seconds: float
) -> None:
    """Reads and drops the caller's messages (the read under way first) until it has sent
    them all, or ``seconds``."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            if reading is not None and await reading is None:
                return
            async for _ in requests:
                pass


def _pixels_of_raw(raw: pb.RawFrame, limits: images.ImageLimits | None = None) -> np.ndarray:
    """A raw RGB frame's pixels [H, W, 3], checked against its stated size (and the
    service's pixel limit, which an encoded frame meets when it is decoded)."""
    expected = raw.width * raw.height * 3
    if not raw.width or not raw.height or len(raw.rgb) != expected:
        raise InvalidArgument(
            f"raw rgb is {len(raw.rgb)} bytes; width {raw.width} x height "
            f"{raw.height} x 3 needs {expected}"
        )
    if limits is not None and raw.width * raw.height > limits.max_pixels:
        raise InvalidArgument(
            f"raw frame is {raw.width}x{raw.height}; the limit is {limits.max_pixels} pixels"
        )
    if limits is not None and min(raw.width, raw.height) < limits.min_side:
        raise InvalidArgument(
            f"raw frame is {raw.width}x{raw.height}; both sides must be at "
            f"least {limits.min_side} pixels"
        )
    return np.frombuffer(raw.rgb, dtype=np.uint8).reshape(raw.height, raw.width, 3)


def _png_of_raw(raw: pb.RawFrame) -> bytes:
    """A raw RGB frame as the lossless PNG TranslateImage takes (same pixels)."""
    pixels = _pixels_of_raw(raw)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()
