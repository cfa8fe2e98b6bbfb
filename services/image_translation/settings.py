"""Settings of the image-translation service (``GENMEDIA_*``)."""

from __future__ import annotations

from pydantic import Field

from services.common.registry import IMAGE_TRANSLATION
from services.common.settings import MIB, ImageServiceSettings, grpc_port_field, metrics_port_field
from services.common.video import VideoLimits


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
    video_max_bytes: int = Field(
        64 * MIB,
        ge=1,
        description="Largest video file TranslateVideo takes (RESOURCE_EXHAUSTED over it).",
    )
    video_max_seconds: float = Field(
        120.0, gt=0, description="Longest video TranslateVideo takes, in seconds."
    )
    video_max_frame_pixels: int = Field(
        1920 * 1088, ge=64, description="Largest video frame TranslateVideo takes, width x height."
    )
    video_max_frames: int = Field(
        3600, ge=1, description="Most frames a video may hold (declared or decoded)."
    )

    def video_limits(self) -> VideoLimits:
        return VideoLimits(
            max_bytes=self.video_max_bytes,
            max_seconds=self.video_max_seconds,
            max_frame_pixels=self.video_max_frame_pixels,
            max_frames=self.video_max_frames,
        )
