"""Settings of the gateway (``GENMEDIA_*``)."""

from __future__ import annotations

from pydantic import Field

from services.common.registry import GATEWAY
from services.common.settings import ServerSettings, grpc_port_field, metrics_port_field


class GatewaySettings(ServerSettings):
    grpc_port: int = grpc_port_field(GATEWAY.grpc_port)
    metrics_port: int = metrics_port_field(GATEWAY.metrics_port)
    image_generation_addr: str = Field(
        ...,
        min_length=1,
        description="image-generation backend target: host:port or dns:///name:port (required).",
    )
    image_translation_addr: str = Field(
        ..., min_length=1, description="image-translation backend target (required)."
    )
    text_generation_addr: str = Field(
        ..., min_length=1, description="text-generation backend target (required)."
    )

    def backend_addr(self, process_name: str) -> str:
        return getattr(self, process_name.replace("-", "_") + "_addr")
