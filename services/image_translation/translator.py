"""Image-to-image translation, independent of gRPC.

Decodes and validates the input, runs it through ``cyclegan_<direction>`` at
a fixed working size (so Triton's dynamic batcher can batch requests of
any size together) and returns the result at the input's size.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter

from genmedia.v1 import image_translation_pb2 as pb
from services.common import images
from services.common.errors import InvalidArgument
from services.common.provenance import make_provenance
from services.common.triton import TritonClient
from services.image_translation.settings import ImageTranslationSettings

TRITON_PREFIX = "cyclegan_"

pixels_translated = Counter(
    "genmedia_pixels_translated_total", "Input pixels translated by TranslateImage.", ("model",)
)


class ImageTranslator:
    def __init__(self, settings: ImageTranslationSettings, triton: TritonClient) -> None:
        self._settings = settings
        self._triton = triton
        self._limits = images.ImageLimits(
            max_bytes=settings.max_input_bytes, max_pixels=settings.max_input_pixels
        )

    @property
    def directions(self) -> tuple[str, ...]:
        return self._settings.translation_models

    def triton_model(self, direction: str) -> str:
        return TRITON_PREFIX + direction

    def _check_direction(self, direction: str) -> None:
        if direction not in self.directions:
            raise InvalidArgument(
                f"unknown model {direction!r}; available: {', '.join(sorted(self.directions))}"
            )

    async def translate(
        self, request: pb.TranslateImageRequest, request_id: str, timeout_s: float | None
    ) -> pb.TranslateImageResponse:
        if not request.model:
            raise InvalidArgument(
                f"model is empty; choose one of: {', '.join(sorted(self.directions))}"
            )
        self._check_direction(request.model)
        images.validate_output_format(request.format, request.quality)
        # Decoding and resizing take up to a second for large inputs: off the event loop.
        pixels = await asyncio.to_thread(images.decode_image, request.image, self._limits)
        height, width = pixels.shape[:2]
        side = self._settings.translation_size
        batch = (await asyncio.to_thread(images.resize, pixels, side, side))[None, ...]
        model = self.triton_model(request.model)
        outputs, version = await asyncio.gather(
            self._triton.infer(model, {"image": batch}, ["image"], request_id, timeout_s),
            self._triton.model_version(model),
        )
        provenance = make_provenance(model, version, 0, request_id)
        encoded = await asyncio.to_thread(
            images.resize_and_encode,
            outputs["image"][0],
            (width, height),
            request.format,
            request.quality,
            provenance,
        )
        pixels_translated.labels(model).inc(width * height)
        return pb.TranslateImageResponse(image=encoded, request_id=request_id)

    async def list_models(self) -> pb.ListModelsResponse:
        response = pb.ListModelsResponse()
        for direction in sorted(self.directions):
            source, _, target = direction.partition("2")
            model = self.triton_model(direction)
            response.models.add(
                name=direction,
                source_domain=source,
                target_domain=target,
                ready=await self._triton.is_model_ready(model),
                triton_model=model,
            )
        return response

    async def all_ready(self) -> bool:
        checks = [self._triton.is_model_ready(self.triton_model(d)) for d in self.directions]
        return all(await asyncio.gather(*checks))
