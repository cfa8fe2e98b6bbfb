"""python -m services.gateway"""

from __future__ import annotations

import asyncio

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.registry import BACKENDS, GATEWAY
from services.common.request_context import configure_logging
from services.common.server import (
    ReadinessCheck,
    ServedProcess,
    channel_options,
    run_server,
)
from services.common.settings import load_settings
from services.gateway.proxy import forwarding_handler
from services.gateway.settings import GatewaySettings

HEALTH_CHECK_TIMEOUT_S = 1.0


def _backend_health(channel: aio.Channel, service_name: str) -> ReadinessCheck:
    stub = health_pb2_grpc.HealthStub(channel)

    async def check() -> bool:
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service_name),
                timeout=HEALTH_CHECK_TIMEOUT_S,
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    return check


async def main() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging(settings.log_level.value)
    options = [*channel_options(settings), ("grpc.lb_policy_name", "round_robin")]
    channels: list[aio.Channel] = []
    handlers: list[grpc.GenericRpcHandler] = []
    readiness: dict[str, ReadinessCheck] = {}
    for backend in BACKENDS:
        channel = aio.insecure_channel(settings.backend_addr(backend.name), options=options)
        channels.append(channel)
        for service_name in backend.grpc_services:
            handlers.append(forwarding_handler(service_name, channel))
            readiness[service_name] = _backend_health(channel, service_name)

    async def close_channels() -> None:
        await asyncio.gather(*(channel.close() for channel in channels))

    await run_server(
        settings,
        ServedProcess(
            service_names=GATEWAY.grpc_services,
            register=lambda server: server.add_generic_rpc_handlers(handlers),
            readiness=readiness,
            on_close=close_channels,
        ),
    )


if __name__ == "__main__":
    asyncio.run(main())
