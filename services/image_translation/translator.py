"""Image-to-image translation, independent of gRPC.

Decodes and validates the input, runs it through ``cyclegan_<direction>`` at
a fixed working size (so Triton's dynamic batcher can batch requests of
any size together) and returns the result at the input's size.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
from prometheus_client import Counter

from genmedia.v1 import common_pb2
from genmedia.v1 import image_translation_pb2 as pb
from services.common import image_watermark, images
from services.common.audit import AuditLog, deferred_sha256, image_watermark_label
from services.common.content_credentials import ContentCredentials, SourceImage, sniff_mime
from services.common.errors import InvalidArgument
from services.common.image_service import ImageService
from services.common.model_info import model_info
from services.common.provenance import make_provenance
from services.common.registry import IMAGE_TRANSLATION
from services.common.triton import TritonClient
from services.image_translation.settings import ImageTranslationSettings

TRITON_PREFIX = "cyclegan_"
# Asking Triton which models are loaded costs a round trip: not on every call.
DIRECTIONS_CACHE_S = 2.0

pixels_translated = Counter(
    "genmedia_pixels_translated_total", "Input pixels translated by TranslateImage.", ("model",)
)


class ImageTranslator(ImageService):
    def __init__(
        self,
        settings: ImageTranslationSettings,
        triton: TritonClient,
        credentials: ContentCredentials | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        super().__init__(IMAGE_TRANSLATION, settings, triton, credentials, audit)
        self._settings = settings
        self._loaded: list[str] = []
        self._loaded_at = -math.inf
        self._limits = images.ImageLimits(
            max_bytes=settings.max_input_bytes, max_pixels=settings.max_input_pixels
        )

    def triton_model(self, direction: str) -> str:
        return TRITON_PREFIX + direction

    async def directions(self) -> list[str]:
        """Directions served: those Triton has ready, narrowed by the setting if set."""
        if time.monotonic() - self._loaded_at > DIRECTIONS_CACHE_S:
            self._loaded = [
                name.removeprefix(TRITON_PREFIX)
                for name in await self._triton.ready_models(TRITON_PREFIX)
            ]
            self._loaded_at = time.monotonic()
        loaded = self._loaded
        allowed = self._settings.translation_models
        return [d for d in loaded if d in allowed] if allowed else loaded

    async def check(self, direction: str, image_format: int, quality: int) -> None:
        """Refuses a direction not served or an output format out of range."""
        await self._check_direction(direction)
        images.validate_output_format(image_format, quality)

    async def _check_direction(self, direction: str) -> None:
        directions = await self.directions()
        if not direction:
            raise InvalidArgument(f"model is empty; choose one of: {', '.join(directions)}")
        if direction not in directions:
            raise InvalidArgument(
                f"unknown model {direction!r}; available: {', '.join(directions) or 'none'}"
            )

    async def _working_size(self, model: str) -> int:
        stated = (await model_info(self._triton, model)).resolution
        return stated if stated and stated % 4 == 0 else self._settings.translation_size

    async def translate(
        self, request: pb.TranslateImageRequest, request_id: str, timeout_s: float | None
    ) -> pb.TranslateImageResponse:
        await self.check(request.model, request.format, request.quality)
        model = self.triton_model(request.model)
        side = await self._working_size(model)
        # Decoding and resizing take up to a second for large inputs: off the event loop, in
        # one hand-off (each costs a thread wake-up and a loop wake-up).
        pixels, width, height = await asyncio.to_thread(
            images.decode_resized, request.image, self._limits, side
        )
        # Cached for 30 s: awaited in line, not as a task beside the inference.
        version = await self._triton.model_version(model)
        outputs = await self._triton.infer(
            model, {"image": pixels[None, ...]}, ["image"], request_id, timeout_s
        )
        provenance = make_provenance(model, version, 0, request_id)
        options = images.EncodeOptions(
            request.format, request.quality, self._credentials, self._settings.image_watermark()
        )
        encoded = await asyncio.to_thread(
            images.resize_and_encode,
            outputs["image"][0],
            (width, height),
            provenance,
            options,
            SourceImage(request.image, sniff_mime(request.image)),
        )
        pixels_translated.labels(model).inc(width * height)
        self._audit.record(
            request_id,
            model,
            version,
            parameters={
                "direction": request.model,
                "input_sha256": deferred_sha256(request.image),
                "width": width,
                "height": height,
                "format": common_pb2.ImageFormat.Name(encoded.format),
            },
            outputs=[{"sha256": deferred_sha256(encoded.data), "bytes": len(encoded.data)}],
            content_credentials=True,
            watermark=image_watermark_label(width, height),
        )
        return pb.TranslateImageResponse(image=encoded, request_id=request_id)

    async def translate_pixels(
        self, direction: str, pixels: np.ndarray, request_id: str, timeout_s: float | None
    ) -> np.ndarray:
        """One decoded frame [H, W, 3] through the same steps as TranslateImage (resize to the
        working size, the model, back to the frame's size, the watermark), as pixels: a
        video's frames are encoded together by its encoder, not one by one."""
        model = self.triton_model(direction)
        side = await self._working_size(model)
        height, width = pixels.shape[:2]
        batch = await asyncio.to_thread(images.resize, pixels, side, side)
        outputs = await self._triton.infer(
            model, {"image": batch[None, ...]}, ["image"], request_id, timeout_s
        )
        key = self._settings.image_watermark()
        translated = await asyncio.to_thread(
            _resized_and_marked, outputs["image"][0], width, height, key
        )
        pixels_translated.labels(model).inc(width * height)
        return translated

    async def provenance(self, direction: str, request_id: str) -> common_pb2.Provenance:
        model = self.triton_model(direction)
        return make_provenance(model, await self._triton.model_version(model), 0, request_id)

    @property
    def limits(self) -> images.ImageLimits:
        """What an input image may be (bytes, pixels, smallest side)."""
        return self._limits

    @property
    def credentials(self) -> ContentCredentials | None:
        return self._credentials

    @property
    def audit(self) -> AuditLog:
        return self._audit

    async def list_models(self) -> pb.ListModelsResponse:
        response = pb.ListModelsResponse()
        for direction in await self.directions():
            source, _, target = direction.partition("2")
            model = self.triton_model(direction)
            response.models.add(
                name=direction,
                source_domain=source,
                target_domain=target,
                ready=await self._triton.is_model_ready(model),
                triton_model=model,
                info=await model_info(self._triton, model),
            )
        return response

    async def ready(self) -> bool:
        """Serving while at least one direction (every allowed one, if listed) is ready."""
        directions = await self.directions()
        allowed = self._settings.translation_models
        return bool(directions) and (not allowed or len(directions) == len(allowed))


def _resized_and_marked(pixels: np.ndarray, width: int, height: int, key: str) -> np.ndarray:
    return image_watermark.embed(images.resize(pixels, width, height), key)
