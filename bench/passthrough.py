"""A bare gRPC pass-through proxy: the floor any Python gRPC hop costs on this machine.

``python -m bench.passthrough --port P --backend image-generation=HOST:PORT ...``
forwards every call of the public API as raw bytes to the backend serving
it, with grpc.aio and nothing else: no authentication, quotas,
retries, metrics or logs. The gateway bench measures it beside the gateway,
so the gateway's own cost is what it adds on top of this floor.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import descriptor_pool
from grpc import aio

from genmedia.v1 import (  # noqa: F401 - registers the service descriptors
    image_generation_pb2,
    image_translation_pb2,
    text_generation_pb2,
)
from services.common.registry import BACKENDS

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _handlers(channel: aio.Channel, service_names: tuple[str, ...]) -> list[grpc.GenericRpcHandler]:
    handlers = []
    for service_name in service_names:
        service = descriptor_pool.Default().FindServiceByName(service_name)
        methods: dict[str, grpc.RpcMethodHandler] = {}
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            if method.server_streaming:
                methods[method.name] = grpc.unary_stream_rpc_method_handler(
                    _stream(channel.unary_stream(path))
                )
            else:
                methods[method.name] = grpc.unary_unary_rpc_method_handler(
                    _unary(channel.unary_unary(path))
                )
        handlers.append(grpc.method_handlers_generic_handler(service.full_name, methods))
    return handlers


def _unary(backend: aio.UnaryUnaryMultiCallable) -> Callable[..., Awaitable[bytes]]:
    async def forward(request: bytes, context: aio.ServicerContext) -> bytes:
        return await backend(request, timeout=context.time_remaining())

    return forward


def _stream(backend: aio.UnaryStreamMultiCallable) -> Callable[..., AsyncIterator[bytes]]:
    async def forward(request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        async for message in backend(request, timeout=context.time_remaining()):
            yield message

    return forward


async def serve(port: int, backends: dict[str, str]) -> None:
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    server = aio.server(options=options)
    for process in BACKENDS:
        channel = aio.insecure_channel(backends[process.name], options=options)
        server.add_generic_rpc_handlers(_handlers(channel, process.grpc_services))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--backend", action="append", required=True, metavar="NAME=HOST:PORT",
        help="address of each backend process (image-generation, image-translation, ...)",
    )  # fmt: skip
    args = parser.parse_args()
    asyncio.run(serve(args.port, dict(entry.split("=", 1) for entry in args.backend)))


if __name__ == "__main__":
    main()
