"""grpc.health.v1 for genmedia's processes: Watch streams that end when the process stops.

grpcio-health-checking's servicer keeps every Watch open for ever, so one
watching client (client-side health checking, a dashboard, grpcurl) would
hold a graceful stop for the whole grace period. Here, once the process is
stopping, each Watch sends NOT_SERVING and ends, and the drain waits only
for real calls.
"""

from __future__ import annotations

import asyncio
import contextlib

from grpc import aio
from grpc_health.v1 import health, health_pb2


class StoppableHealthServicer(health.aio.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self._stopping = asyncio.Event()

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext
    ) -> None:
        watching = asyncio.ensure_future(super().Watch(request, context))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({watching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not watching.done():
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
        if self._stopping.is_set():
            # The last word, whatever the cancelled watch had sent so far.
            await context.write(
                health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
            )

    async def stop_watches(self) -> None:
        """NOT_SERVING for every service, then every Watch ends."""
        await self.enter_graceful_shutdown()
        self._stopping.set()
