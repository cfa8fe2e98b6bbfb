"""Class-conditional image generation, independent of gRPC.

Validates a request, resolves classes, draws seeded noise, asks Triton's
``biggan`` for UINT8 images and encodes them with their provenance.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from genmedia.v1 import image_generation_pb2 as pb
from services.common import images
from services.common.errors import InvalidArgument
from services.common.provenance import make_provenance
from services.common.triton import TritonClient
from services.image_generation.classes import ClassCatalog, ImageClass
from services.image_generation.noise import MAX_SEED, random_seed, truncated_noise
from services.image_generation.settings import ImageGenerationSettings

Z_DIM = 128
MAX_CLASSES = 16
MAX_COUNT = 16
MIN_SIDE, MAX_SIDE = 16, 1024

images_generated = Counter(
    "genmedia_images_generated_total", "Images returned by GenerateImages.", ("model",)
)


@dataclass(frozen=True)
class GenerationPlan:
    classes: list[ImageClass]
    count: int
    truncation: float
    seed: int


class ImageGenerator:
    def __init__(
        self, settings: ImageGenerationSettings, catalog: ClassCatalog, triton: TritonClient
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._triton = triton

    @property
    def model(self) -> str:
        return self._settings.generator_model

    def plan(self, request: pb.GenerateImagesRequest) -> GenerationPlan:
        """Checks every field and resolves classes; raises InvalidArgument."""
        if not request.classes:
            raise InvalidArgument("classes is empty; name at least one class (e.g. 'goldfish')")
        if len(request.classes) > MAX_CLASSES:
            raise InvalidArgument(f"{len(request.classes)} classes given; at most {MAX_CLASSES}")
        count = request.count or 1
        if count > MAX_COUNT:
            raise InvalidArgument(f"count is {count}; it must be 1..{MAX_COUNT}")
        total = count * len(request.classes)
        if total > self._settings.max_images_per_request:
            raise InvalidArgument(
                f"{len(request.classes)} classes x count {count} = {total} images; "
                f"at most {self._settings.max_images_per_request} per request"
            )
        truncation = request.truncation or self._settings.default_truncation
        if not 0 < truncation <= 1:
            raise InvalidArgument(f"truncation is {truncation}; it must be in (0, 1]")
        if request.HasField("seed") and not 0 <= request.seed <= MAX_SEED:
            raise InvalidArgument(f"seed is {request.seed}; it must be 0..2^63-1")
        for side_name, side in (("width", request.width), ("height", request.height)):
            if side and not MIN_SIDE <= side <= MAX_SIDE:
                raise InvalidArgument(
                    f"{side_name} is {side}; it must be {MIN_SIDE}..{MAX_SIDE} (0 for native)"
                )
        images.validate_output_format(request.format, request.quality)
        classes = [self._resolve(selector) for selector in request.classes]
        seed = request.seed if request.HasField("seed") else random_seed()
        return GenerationPlan(classes=classes, count=count, truncation=truncation, seed=seed)

    def _resolve(self, selector: pb.ClassSelector) -> ImageClass:
        kind = selector.WhichOneof("selector")
        if kind == "name":
            return self._catalog.resolve(selector.name)
        if kind == "id":
            return self._catalog.by_id(selector.id)
        raise InvalidArgument("a class selector is empty; set its name or id")

    async def generate(
        self,
        request: pb.GenerateImagesRequest,
        request_id: str,
        timeout_s: float | None,
    ) -> pb.GenerateImagesResponse:
        plan = self.plan(request)
        rows = [c for c in plan.classes for _ in range(plan.count)]
        class_vector = np.zeros((len(rows), len(self._catalog)), dtype=np.float32)
        class_vector[np.arange(len(rows)), [c.id for c in rows]] = 1.0
        inputs = {
            "z": truncated_noise(plan.seed, len(rows), Z_DIM, plan.truncation),
            "class_vector": class_vector,
            "truncation": np.full((len(rows), 1), plan.truncation, dtype=np.float32),
        }
        outputs, version = await asyncio.gather(
            self._triton.infer(self.model, inputs, ["image"], request_id, timeout_s),
            self._triton.model_version(self.model),
        )
        provenance = make_provenance(self.model, version, plan.seed, request_id)
        pixels = outputs["image"]
        response = pb.GenerateImagesResponse(seed=plan.seed, request_id=request_id)
        for row, image_class in zip(pixels, rows, strict=True):
            width, height = _output_size(row.shape[1], row.shape[0], request.width, request.height)
            encoded = await asyncio.to_thread(
                images.resize_and_encode,
                row,
                (width, height),
                request.format,
                request.quality,
                provenance,
            )
            response.images.add(
                image=encoded,
                image_class=pb.ImageClass(
                    id=image_class.id, name=image_class.name, synonyms=image_class.names[1:]
                ),
            )
        images_generated.labels(self.model).inc(len(rows))
        return response

    def list_classes(self, query: str) -> pb.ListClassesResponse:
        if len(query) > 200:
            raise InvalidArgument("query is longer than 200 characters")
        return pb.ListClassesResponse(
            model=self.model,
            classes=[
                pb.ImageClass(id=c.id, name=c.name, synonyms=c.names[1:])
                for c in self._catalog.search(query)
            ],
        )


def _output_size(native_w: int, native_h: int, width: int, height: int) -> tuple[int, int]:
    """Requested size; one side alone keeps the aspect ratio."""
    if width and height:
        return width, height
    if width:
        return width, max(1, round(native_h * width / native_w))
    if height:
        return max(1, round(native_w * height / native_h)), height
    return native_w, native_h
