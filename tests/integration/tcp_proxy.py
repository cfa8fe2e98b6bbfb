"""A loopback TCP proxy whose link can be cut on purpose, to put between a service and Triton.

``sever()`` resets every connection and refuses new ones (a peer or route
that went away: callers see the failure at once); ``blackhole()`` keeps the
connections but stops the bytes in both directions (a partition: nothing
fails, nothing arrives, and the TCP peers just wait); ``restore()`` lets
everything flow again, held bytes first, as TCP would deliver them after a
short outage.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Coroutine
from typing import Any

CHUNK_BYTES = 64 * 1024


class Link(enum.Enum):
    OPEN = "open"
    SEVERED = "severed"
    BLACKHOLED = "blackholed"


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port`` on a thread of its own."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self.link = Link.OPEN
        self.connections_accepted = 0
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def __exit__(self, *_: object) -> None:
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def sever(self) -> None:
        self._run(self._set(Link.SEVERED))

    def blackhole(self) -> None:
        self._run(self._set(Link.BLACKHOLED))

    def restore(self) -> None:
        self._run(self._set(Link.OPEN))

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()

    async def _set(self, link: Link) -> None:
        self.link = link
        if link is Link.OPEN:
            self._flowing.set()
            return
        self._flowing.clear()
        if link is Link.SEVERED:
            self._reset_all()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()  # RST, not an orderly close
        self._writers.clear()

    async def _accept(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        self.connections_accepted += 1
        if self.link is Link.SEVERED:
            client_out.transport.abort()
            return
        try:
            target_in, target_out = await asyncio.open_connection(*self._target)
        except OSError:
            client_out.transport.abort()  # nothing listens there: refuse this one too
            return
        self._writers.update((client_out, target_out))
        await asyncio.gather(
            self._pump(client_in, target_out, client_out),
            self._pump(target_in, client_out, target_out),
        )

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        try:
            while chunk := await source.read(CHUNK_BYTES):
                # While blackholed the read chunk waits here and the kernel
                # buffers fill up behind it: the peers see a silent link.
                await self._flowing.wait()
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (sink, other):
                self._writers.discard(writer)
                if not writer.transport.is_closing():
                    writer.transport.abort()
