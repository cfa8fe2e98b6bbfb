"""One multiplexed connection to Redis, for the quota store's few commands.

Redis answers the commands of a connection in the order they came, so every
coroutine of the gateway can write its command on one socket at once and
wait for the reply in its place in line: no pool, no lock, and a settle
written before the next admission is also run before it. Commands are
packed and replies parsed by hiredis (C).

Why not redis-py's asyncio client: its connection (stream reader and writer,
pool checkout, per-command checks) cost about 90 us of a 160 us round trip
on the 2-core machine, where this costs 69 us against a 68-78 us floor (a
bare asyncio PING); docs/PERFORMANCE.md#the-quota-store.

A command may also wait to go out with the next one (``flush=False``, for
settles, which nobody waits for): it is written at the latest
``FLUSH_AFTER_S`` later, or with the next command, in one write that Redis
reads and answers at once, so under load a settle costs no round trip of
its own.

A caller that stops waiting (its deadline) leaves its place in line; the
reply is read and dropped when it comes. A lost connection fails every
waiting caller with ConnectionLost and the next command connects again.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

DEFAULT_PORT = 6379
FLUSH_AFTER_S = 0.002
"""The longest a command sent with flush=False waits for company."""
CONNECT_TIMEOUT_S = 5.0
"""A connection attempt to a silent host ends here (callers' own deadlines are shorter)."""


class StoreError(Exception):
    """Redis did not answer as expected."""


class ConnectionLost(StoreError):
    """No connection to Redis, or it broke."""


class ReplyError(StoreError):
    """Redis answered with an error (its message says which)."""


class NoScript(ReplyError):
    """Redis does not know the script's SHA (it was restarted or flushed)."""


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)
    tls: bool
    ca_file: str | None

    @classmethod
    def parse(cls, url: str, password: str | None = None) -> RedisAddress:
        """``redis[s]://[[user]:password@]host[:port][/db][?ssl_ca_certs=path]``; a password
        in the URL wins over ``password``."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(f"{url!r} is not a redis:// or rediss:// URL with a host")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"{url!r}: the database is a number, as in redis://host:6379/0")
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORT,
            db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else password,
            tls=parts.scheme == "rediss",
            ca_file=query.get("ssl_ca_certs", [None])[0],
        )


class _Replies(asyncio.Protocol):
    """Feeds what Redis sends to hiredis and hands each reply to the next caller in line."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(encoding="utf-8")
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unsent: list[bytes] = []
        self._flush_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while self.waiting:
            reply = self._reader.gets()
            if reply is False:
                return
            future = self.waiting.popleft()
            if not future.done():  # a caller past its deadline left its place
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._unsent.clear()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        error = ConnectionLost(f"connection to Redis lost ({exc or 'closed by the server'})")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, payload: bytes, flush: bool = True) -> asyncio.Future[Any]:
        """Queues ``payload``'s reply in line; writes it now, or with the next flush."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionLost("connection to Redis lost")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append(future)
        self._unsent.append(payload)
        if flush:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = loop.call_later(FLUSH_AFTER_S, self.flush)
        return future

    def flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._unsent and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._unsent))
        self._unsent.clear()


class RedisPipe:
    """Commands to one Redis over one connection, connected when first needed."""

    def __init__(self, address: RedisAddress) -> None:
        self.address = address
        self._replies: _Replies | None = None
        self._connecting: asyncio.Task[_Replies] | None = None
        self._scripts: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str, password: str | None = None) -> RedisPipe:
        return cls(RedisAddress.parse(url, password))

    # -- connection ------------------------------------------------------------------

    async def _connection(self) -> _Replies:
        replies = self._replies
        if replies is not None and not replies.lost.done():
            return replies
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._connect())
        # Shielded: a caller that gives up does not stop the connection others wait for.
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Replies:
        address = self.address
        context = None
        if address.tls:
            context = ssl.create_default_context(cafile=address.ca_file)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, replies = await loop.create_connection(
                    _Replies, address.host, address.port, ssl=context
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(
                f"cannot connect to Redis at {address.host}:{address.port}: {exc}"
            ) from None
        hello: list[tuple[Any, ...]] = []
        if address.password is not None:
            user = (address.username,) if address.username else ()
            hello.append(("AUTH", *user, address.password))
        if address.db:
            hello.append(("SELECT", address.db))
        for command in hello:
            reply = await replies.send(hiredis.pack_command(command))
            if isinstance(reply, hiredis.ReplyError):
                assert replies.transport is not None
                replies.transport.close()
                raise ReplyError(f"Redis refused {command[0]}: {reply}")
        self._replies = replies
        return replies

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._replies is not None and self._replies.transport is not None:
            self._replies.transport.close()
            await self._replies.lost

    # -- commands ----------------------------------------------------------------------

    async def execute(self, *command: Any, flush: bool = True) -> Any:
        """The reply to one command; raises ReplyError (NoScript), ConnectionLost.
        ``flush=False``: the command may wait up to FLUSH_AFTER_S to go out with another."""
        replies = await self._connection()
        reply = await replies.send(hiredis.pack_command(command), flush)
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            if message.startswith("NOSCRIPT"):
                raise NoScript(message)
            raise ReplyError(message)
        return reply

    def register(self, source: str) -> str:
        """Remembers a Lua script; returns its SHA for :meth:`run`."""
        sha = hashlib.sha1(source.encode()).hexdigest()  # the name Redis gives it
        self._scripts[sha] = source
        return sha

    async def load_scripts(self) -> None:
        for source in self._scripts.values():
            await self.execute("SCRIPT", "LOAD", source)

    def run_soon(self, sha: str, keys: list[str], args: list[Any]) -> Coroutine[Any, Any, Any]:
        """EVALSHA put in line now, behind every command sent before and ahead of every
        one sent after (so before the next admission), and written with the next command
        or within FLUSH_AFTER_S; await the result to see its reply. Raises ConnectionLost
        at once when no connection is up (nothing waits to connect here)."""
        replies = self._replies
        if replies is None or replies.lost.done():
            raise ConnectionLost("no connection to Redis")
        future = replies.send(
            hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args)), flush=False
        )
        return self._reply_to(future, sha, keys, args)

    async def _reply_to(
        self, future: asyncio.Future[Any], sha: str, keys: list[str], args: list[Any]
    ) -> Any:
        reply = await future
        if isinstance(reply, hiredis.ReplyError):
            if str(reply).startswith("NOSCRIPT"):
                return await self.run(sha, keys, args)
            raise ReplyError(str(reply))
        return reply

    async def run(self, sha: str, keys: list[str], args: list[Any], flush: bool = True) -> Any:
        """EVALSHA; a Redis that forgot the script (a restart) is taught it again."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args, flush=flush)
        except NoScript:
            await self.execute("SCRIPT", "LOAD", self._scripts[sha])
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
