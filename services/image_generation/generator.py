"""Class-conditional image generation, independent of gRPC.

Validates a request, resolves classes, draws seeded noise, asks Triton's
``biggan`` for UINT8 images and encodes them with their provenance.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import Counter

from genmedia.v1 import common_pb2
from genmedia.v1 import image_generation_pb2 as pb
from genmedia_shared.limits import MAX_SEED
from services.common import images
from services.common.audit import AuditLog, deferred_sha256, image_watermark_label
from services.common.content_credentials import ContentCredentials
from services.common.errors import InvalidArgument
from services.common.image_service import ImageService
from services.common.model_info import model_info, model_parameter
from services.common.provenance import make_provenance
from services.common.registry import IMAGE_GENERATION
from services.common.triton import TritonClient
from services.image_generation.classes import (
    DEFAULT_CATALOG,
    ClassCatalog,
    ImageClass,
    catalog_path,
)
from services.image_generation.noise import random_seed, truncated_noise
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


class ImageGenerator(ImageService):
    def __init__(
        self,
        settings: ImageGenerationSettings,
        triton: TritonClient,
        credentials: ContentCredentials | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        super().__init__(IMAGE_GENERATION, settings, triton, credentials, audit)
        self._settings = settings
        self._catalogs: dict[Path, ClassCatalog] = {}

    @property
    def model(self) -> str:
        return self._settings.generator_model

    async def catalog(self) -> ClassCatalog:
        """The label set of the generator Triton has loaded (or the configured one)."""
        path = self._settings.class_catalog
        if path is None:
            named = await model_parameter(self._triton, self.model, "classes")
            path = catalog_path(named or DEFAULT_CATALOG)
        if path not in self._catalogs:
            self._catalogs[path] = await asyncio.to_thread(ClassCatalog.load, path)
        return self._catalogs[path]

    def plan(self, request: pb.GenerateImagesRequest, catalog: ClassCatalog) -> GenerationPlan:
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
        classes = [_resolve(catalog, selector) for selector in request.classes]
        seed = request.seed if request.HasField("seed") else random_seed()
        return GenerationPlan(classes=classes, count=count, truncation=truncation, seed=seed)

    async def generate(
        self,
        request: pb.GenerateImagesRequest,
        request_id: str,
        timeout_s: float | None,
    ) -> pb.GenerateImagesResponse:
        catalog = await self.catalog()
        plan = self.plan(request, catalog)
        rows = [c for c in plan.classes for _ in range(plan.count)]
        class_vector = np.zeros((len(rows), len(catalog)), dtype=np.float32)
        class_vector[np.arange(len(rows)), [c.id for c in rows]] = 1.0
        inputs = {
            "z": truncated_noise(plan.seed, len(rows), Z_DIM, plan.truncation),
            "class_vector": class_vector,
            "truncation": np.full((len(rows), 1), plan.truncation, dtype=np.float32),
        }
        # Cached for 30 s: awaited in line, not as a task beside the inference.
        version = await self._triton.model_version(self.model)
        outputs = await self._triton.infer(self.model, inputs, ["image"], request_id, timeout_s)
        provenance = make_provenance(self.model, version, plan.seed, request_id)
        pixels = outputs["image"]
        response = pb.GenerateImagesResponse(seed=plan.seed, request_id=request_id)
        options = images.EncodeOptions(
            request.format, request.quality, self._credentials, self._settings.image_watermark()
        )
        sizes = [
            _output_size(row.shape[1], row.shape[0], request.width, request.height)
            for row in pixels
        ]
        # Every image in one thread hand-off: each hand-off costs two wake-ups.
        encoded_images = await asyncio.to_thread(
            _encode_all, list(pixels), sizes, provenance, options
        )
        for encoded, image_class in zip(encoded_images, rows, strict=True):
            response.images.add(
                image=encoded,
                image_class=pb.ImageClass(
                    id=image_class.id, name=image_class.name, synonyms=image_class.names[1:]
                ),
            )
        images_generated.labels(self.model).inc(len(rows))
        first = response.images[0].image
        self._audit.record(
            request_id,
            self.model,
            version,
            parameters={
                "class_ids": [c.id for c in plan.classes],
                "count": plan.count,
                "truncation": plan.truncation,
                "seed": plan.seed,
                "width": first.width,
                "height": first.height,
                "format": common_pb2.ImageFormat.Name(first.format),
            },
            outputs=[
                {"sha256": deferred_sha256(i.image.data), "bytes": len(i.image.data)}
                for i in response.images
            ],
            content_credentials=True,
            watermark=image_watermark_label(first.width, first.height),
        )
        return response

    async def list_classes(self, query: str) -> pb.ListClassesResponse:
        if len(query) > 200:
            raise InvalidArgument("query is longer than 200 characters")
        catalog = await self.catalog()
        return pb.ListClassesResponse(
            model=self.model,
            model_info=await model_info(self._triton, self.model),
            classes=[
                pb.ImageClass(id=c.id, name=c.name, synonyms=c.names[1:])
                for c in catalog.search(query)
            ],
        )


def _resolve(catalog: ClassCatalog, selector: pb.ClassSelector) -> ImageClass:
    kind = selector.WhichOneof("selector")
    if kind == "name":
        return catalog.resolve(selector.name)
    if kind == "id":
        return catalog.by_id(selector.id)
    raise InvalidArgument("a class selector is empty; set its name or id")


def _output_size(native_w: int, native_h: int, width: int, height: int) -> tuple[int, int]:
    """Requested size; one side alone keeps the aspect ratio."""
    if width and height:
        return width, height
    if width:
        return width, max(1, round(native_h * width / native_w))
    if height:
        return max(1, round(native_w * height / native_h)), height
    return native_w, native_h


def _encode_all(
    rows: list[np.ndarray],
    sizes: list[tuple[int, int]],
    provenance: common_pb2.Provenance,
    options: images.EncodeOptions,
) -> list[common_pb2.Image]:
    return [
        images.resize_and_encode(row, size, provenance, options)
        for row, size in zip(rows, sizes, strict=True)
    ]
