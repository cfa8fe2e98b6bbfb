"""The one list of genmedia's processes: names, packages, gRPC services and ports.

The launcher, the gateway, the tests and the docs all read this table, so a
new service is registered here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessSpec:
    """One genmedia process and the defaults it listens on."""

    name: str
    """Short process name, e.g. ``image-generation``."""
    package: str
    """Python package run with ``python -m``."""
    grpc_services: tuple[str, ...]
    """Fully qualified gRPC services the process serves."""
    grpc_port: int
    metrics_port: int

    @property
    def addr_setting(self) -> str:
        """Gateway environment variable naming this backend's address(es)."""
        return "GENMEDIA_" + self.name.upper().replace("-", "_") + "_ADDR"


IMAGE_GENERATION = ProcessSpec(
    name="image-generation",
    package="services.image_generation",
    grpc_services=("genmedia.v1.ImageGenerationService",),
    grpc_port=50052,
    metrics_port=9102,
)
IMAGE_TRANSLATION = ProcessSpec(
    name="image-translation",
    package="services.image_translation",
    grpc_services=("genmedia.v1.ImageTranslationService",),
    grpc_port=50053,
    metrics_port=9103,
)
TEXT_GENERATION = ProcessSpec(
    name="text-generation",
    package="services.text_generation",
    grpc_services=("genmedia.v1.TextGenerationService",),
    grpc_port=50054,
    metrics_port=9104,
)
BACKENDS: tuple[ProcessSpec, ...] = (IMAGE_GENERATION, IMAGE_TRANSLATION, TEXT_GENERATION)

# Served by the gateway itself, not forwarded.
PROVENANCE_SERVICE = "genmedia.v1.ProvenanceService"

GATEWAY = ProcessSpec(
    name="gateway",
    package="services.gateway",
    grpc_services=(
        *(service for backend in BACKENDS for service in backend.grpc_services),
        PROVENANCE_SERVICE,
    ),
    grpc_port=50051,
    metrics_port=9101,
)

ALL_PROCESSES: tuple[ProcessSpec, ...] = (GATEWAY, *BACKENDS)
