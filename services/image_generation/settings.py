"""Settings of the image-generation service (``GENMEDIA_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.common.registry import IMAGE_GENERATION
from services.common.settings import ImageServiceSettings, grpc_port_field, metrics_port_field


class ImageGenerationSettings(ImageServiceSettings):
    grpc_port: int = grpc_port_field(IMAGE_GENERATION.grpc_port)
    metrics_port: int = metrics_port_field(IMAGE_GENERATION.metrics_port)
    generator_model: str = Field("biggan", description="Triton model that generates images.")
    class_catalog: Path | None = Field(
        None,
        description=(
            "JSON label set of the generator; unset: the one the loaded model names "
            "(its genmedia_classes parameter: imagenet, digits or a path)."
        ),
    )
    max_images_per_request: int = Field(
        16, ge=1, le=16, description="classes x count limit (at most biggan's max_batch_size, 16)."
    )
    default_truncation: float = Field(0.4, gt=0, le=1, description="Truncation when unset.")
