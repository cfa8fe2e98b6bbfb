"""The one list of genmedia's processes: names, packages, gRPC services and ports, and what
the rest of the code derives from them.

The launcher, the gateway, the settings table, the tests and the docs all read this table,
so a new service is registered here (and given its own settings class, and, if its calls
draw on daily budgets, its own estimator) and nowhere else. Nothing here is imported until
it is asked for: the launcher and the Triton image's repository builder read this module
without pydantic, gRPC or the generated protobuf code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


def resolve(reference: str) -> Any:
    """The object a ``module:name`` reference names, imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MeteredMethod:
    """A method whose calls draw on daily budgets (docs/OPERATIONS.md): the gateway holds
    an estimate of what a call may generate before it forwards it, then charges what the
    backend reports in its usage trailer."""

    method: str
    """The RPC's name in the process's service, e.g. ``GenerateImages``."""
    units: tuple[str, ...]
    """The budgets it draws on (fields of services.common.usage.Usage)."""
    estimator: str
    """``module:function`` of the hold one request gets (services/gateway/estimates.py)."""
    counted_by: str | None = None
    """A server stream's cumulative count field: what a stream that ended without its usage
    trailer is charged (at least one unit a message)."""
    charged_as_it_goes: str | None = None
    """A bidirectional stream's running total of its unit, as a field path in its responses
    (``progress.megapixels``): the gateway charges it while the stream goes on, and ends a
    stream that spends the key's daily budget."""


@dataclass(frozen=True)
class CoalescedStream:
    """A server stream whose messages, when several wait for a slow caller, the gateway
    sends as one: the last of them, with the ``joined`` string field of all of them in
    order (services/common/coalesce.py)."""

    method: str
    joined: str


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
    settings: str
    """Name of the process's settings class in ``<package>.settings``."""
    proto: str = ""
    """Generated module of the services the process defines (importing it registers their
    descriptors); the gateway's backend services come with the backends' entries."""
    metered: tuple[MeteredMethod, ...] = ()
    coalesced: tuple[CoalescedStream, ...] = ()
    http_port: int = 0
    """Default port of the process's HTTP door (the gateway's); 0: it has none."""

    @property
    def field_prefix(self) -> str:
        """The process name as settings spell it: ``image_generation``."""
        return self.name.replace("-", "_")

    @property
    def addr_field(self) -> str:
        """The gateway's settings field naming this backend's address(es)."""
        return self.field_prefix + "_addr"

    @property
    def addr_setting(self) -> str:
        """Gateway environment variable naming this backend's address(es)."""
        return "GENMEDIA_" + self.addr_field.upper()

    def settings_class(self) -> Any:
        """The process's settings class (a pydantic-settings class), imported now."""
        return resolve(f"{self.package}.settings:{self.settings}")


_ESTIMATES = "services.gateway.estimates"

IMAGE_GENERATION = ProcessSpec(
    name="image-generation",
    package="services.image_generation",
    grpc_services=("genmedia.v1.ImageGenerationService",),
    grpc_port=50052,
    metrics_port=9102,
    settings="ImageGenerationSettings",
    proto="genmedia.v1.image_generation_pb2",
    metered=(MeteredMethod("GenerateImages", ("images",), f"{_ESTIMATES}:images_asked"),),
)
IMAGE_TRANSLATION = ProcessSpec(
    name="image-translation",
    package="services.image_translation",
    grpc_services=("genmedia.v1.ImageTranslationService",),
    grpc_port=50053,
    metrics_port=9103,
    settings="ImageTranslationSettings",
    proto="genmedia.v1.image_translation_pb2",
    metered=(
        MeteredMethod("TranslateImage", ("megapixels",), f"{_ESTIMATES}:megapixels_sent"),
        # A stream's frames are not known when it opens: charged as they are answered.
        MeteredMethod(
            "TranslateFrames",
            ("megapixels",),
            f"{_ESTIMATES}:nothing_held",
            charged_as_it_goes="megapixels",
        ),
        MeteredMethod(
            "TranslateVideo",
            ("megapixels",),
            f"{_ESTIMATES}:nothing_held",
            charged_as_it_goes="progress.megapixels",
        ),
    ),
)
TEXT_GENERATION = ProcessSpec(
    name="text-generation",
    package="services.text_generation",
    grpc_services=("genmedia.v1.TextGenerationService",),
    grpc_port=50054,
    metrics_port=9104,
    settings="TextGenerationSettings",
    proto="genmedia.v1.text_generation_pb2",
    metered=(
        MeteredMethod("GenerateText", ("tokens",), f"{_ESTIMATES}:tokens_asked"),
        MeteredMethod(
            "StreamText", ("tokens",), f"{_ESTIMATES}:tokens_asked", counted_by="generated_tokens"
        ),
    ),
    coalesced=(CoalescedStream("StreamText", joined="text"),),
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
    http_port=8080,
    settings="GatewaySettings",
    proto="genmedia.v1.provenance_pb2",
)

ALL_PROCESSES: tuple[ProcessSpec, ...] = (GATEWAY, *BACKENDS)
