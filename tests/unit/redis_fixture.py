"""A real redis-server for the quota store's tests (Debian's package, as in production)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.launcher.redis_server import RedisServer
from services.launcher.stack import free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), work_dir=Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


async def emptied_client(server: RedisServer) -> Redis:
    """A client of the server, whose database and scripts are emptied first."""
    client = Redis.from_url(server.url, decode_responses=True)
    await client.flushdb()
    await client.script_flush()
    return client


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of an emptied database (each test starts from no state)."""
    client = await emptied_client(redis_server)
    yield client
    await client.aclose()
