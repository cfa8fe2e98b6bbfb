"""Settings of the image-translation service (``GENMEDIA_*``)."""

from __future__ import annotations

from pydantic import Field

from services.common.registry import IMAGE_TRANSLATION
from services.common.settings import MIB, ImageServiceSettings, grpc_port_field, metrics_port_field


class ImageTranslationSettings(ImageServiceSettings):
    grpc_port: int = grpc_port_field(IMAGE_TRANSLATION.grpc_port)
    metrics_port: int = metrics_port_field(IMAGE_TRANSLATION.metrics_port)
    translation_models: tuple[str, ...] = Field(
        (),
        description=(
            'Directions served (JSON list, e.g. ["horse2zebra"]); empty: every '
            '"cyclegan_<direction>" model Triton has loaded.'
        ),
    )
    translation_size: int = Field(
        256,
        ge=16,
        le=1024,
        multiple_of=4,
        description=(
            "Square side the generator runs at when the model does not state its resolution; "
            "results are resized to the input's size."
        ),
    )
    max_input_bytes: int = Field(20 * MIB, ge=1, description="Largest encoded input image.")
    max_input_pixels: int = Field(16_000_000, ge=64, description="Largest input, width x height.")
