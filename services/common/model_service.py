"""What every model service's ``__main__`` does around its own parts: one gRPC service
served with its readiness check, the Triton client closed last."""

from __future__ import annotations

from collections.abc import Callable

from grpc import aio

from services.common.registry import ProcessSpec
from services.common.server import ReadinessCheck, ServedProcess, run_server
from services.common.settings import ServerSettings
from services.common.triton import TritonClient


async def serve_model_service(
    process: ProcessSpec,
    settings: ServerSettings,
    triton: TritonClient,
    register: Callable[[aio.Server], None],
    ready: ReadinessCheck,
) -> None:
    """Serves ``process``'s one gRPC service until a signal; ``register`` adds its servicer."""
    (service_name,) = process.grpc_services
    await run_server(
        settings,
        ServedProcess(
            service_names=process.grpc_services,
            register=register,
            readiness={service_name: ready},
            on_close=triton.close,
        ),
    )
