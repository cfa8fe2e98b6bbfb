"""The gateway's forwarding on loopback: a real gateway server in front of two fake replicas.

The replicas are real grpc.aio servers with health, whose answers each test
scripts (fail with UNAVAILABLE, send a message then fail, stall).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from genmedia.v1 import text_generation_pb2 as text_pb
from services.common.interceptor import ServerCallInterceptor
from services.gateway.auth import ApiKeys, Authenticator, OpenAccess
from services.gateway.backends import BackendPool, EjectionPolicy, RetryBudget, parse_targets
from services.gateway.keys import hash_key
from services.gateway.proxy import Forwarder, RetryPolicy, forwarding_handler, method_routes
from services.gateway.quotas import Quotas

SERVICE = "genmedia.v1.TextGenerationService"
UNARY = f"/{SERVICE}/GenerateText"
STREAM = f"/{SERVICE}/StreamText"


@dataclass
class FakeReplica:
    """A backend replica whose behaviour the test sets."""

    server: aio.Server
    address: str
    calls: int = 0
    fail_unary: bool = False
    stream_then_fail: bool = False
    own_errors: bool = True
    """Errors carry the replica's request id, as a genmedia backend's always do; without it
    they look like gRPC's own (a connection lost on the way)."""
    tokens_per_message: int = 0
    """Stream text messages counting this many more tokens each, not raw bytes."""
    stall: asyncio.Event | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a unary call here is cancelled while it runs."""

    async def generate(self, request: bytes, context: aio.ServicerContext) -> bytes:
        self.calls += 1
        self.started.set()
        if self.stall is not None:
            try:
                await self.stall.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if self.fail_unary:
            await self.fail(context, "replica is failing")
        return b"reply from " + self.address.encode()

    async def fail(self, context: aio.ServicerContext, message: str) -> None:
        trailing = (("x-request-id", "replica-request"),) if self.own_errors else ()
        await context.abort(grpc.StatusCode.UNAVAILABLE, message, trailing)

    def message(self, index: int, text: bytes) -> bytes:
        if not self.tokens_per_message:
            return text
        counted = self.tokens_per_message * (index + 1)
        return text_pb.StreamTextResponse(text="x", generated_tokens=counted).SerializeToString()

    async def stream(self, request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        self.calls += 1
        yield self.message(0, b"first")
        if self.stream_then_fail:
            await self.fail(context, "lost mid-stream")
        yield self.message(1, b"second")


async def start_replica() -> FakeReplica:
    server = aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    replica = FakeReplica(server, f"127.0.0.1:{port}")
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "GenerateText": grpc.unary_unary_rpc_method_handler(replica.generate),
                    "StreamText": grpc.unary_stream_rpc_method_handler(replica.stream),
                },
            )
        ]
    )
    checker = health.aio.HealthServicer()
    await checker.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    await server.start()
    return replica


@dataclass
class Gateway:
    channel: aio.Channel
    pool: BackendPool
    replicas: list[FakeReplica]

    def unary(self) -> Awaitable[bytes]:
        return self.channel.unary_unary(UNARY)(b"", timeout=10)

    def stream(self) -> aio.UnaryStreamCall:
        return self.channel.unary_stream(STREAM)(b"", timeout=10)


@contextlib.asynccontextmanager
async def serving_gateway(
    drain_max_s: float = 10.0,
    authenticator: Authenticator | None = None,
    quotas: Quotas | None = None,
) -> AsyncIterator[Gateway]:
    replicas = [await start_replica(), await start_replica()]
    pool = BackendPool(
        "text-generation",
        SERVICE,
        parse_targets(",".join(r.address for r in replicas)),
        lambda address, _host: aio.insecure_channel(address),
        EjectionPolicy(after_failures=100),
        RetryBudget(max_tokens=10, ratio=0.1),
        drain_max_s=drain_max_s,
    )
    await pool.start()
    forwarder = Forwarder(
        authenticator or OpenAccess(), quotas or Quotas(64, 1.0), RetryPolicy(3, 0.01, 0.05), 30.0
    )
    server = aio.server(interceptors=[ServerCallInterceptor(trust_caller_header=False)])
    server.add_generic_rpc_handlers(
        [forwarding_handler(SERVICE, method_routes(SERVICE, pool), forwarder)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    await _until(pool.ready)
    await _until(lambda: all(r.healthy for r in pool.replicas.values()))
    try:
        yield Gateway(channel, pool, replicas)
    finally:
        await channel.close()
        await server.stop(None)
        await pool.close()
        for replica in replicas:
            await replica.server.stop(None)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with serving_gateway() as serving:
        yield serving


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_calls_alternate_between_replicas(gateway: Gateway) -> None:
    replies = {await gateway.unary() for _ in range(6)}
    assert replies == {b"reply from " + r.address.encode() for r in gateway.replicas}
    assert [r.calls for r in gateway.replicas] == [3, 3]


def client_handled(code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": "GenerateText", "grpc_type": "unary"}
    value = REGISTRY.get_sample_value("grpc_client_handled_total", {**labels, "grpc_code": code})
    return value or 0.0


async def test_unavailable_is_retried_on_the_other_replica(gateway: Gateway) -> None:
    failing, healthy = gateway.replicas
    failing.fail_unary = True
    before = {code: client_handled(code) for code in ("OK", "UNAVAILABLE")}
    for _ in range(4):
        assert await gateway.unary() == b"reply from " + healthy.address.encode()
    assert failing.calls >= 1, "the failing replica was never tried"
    # Every attempt is in the client RED metrics, the failed ones too.
    assert client_handled("OK") - before["OK"] == 4
    assert client_handled("UNAVAILABLE") - before["UNAVAILABLE"] == failing.calls


async def test_a_stream_is_not_retried_after_a_message_reached_the_caller(
    gateway: Gateway,
) -> None:
    for replica in gateway.replicas:
        replica.stream_then_fail = True
    call = gateway.stream()
    received = []
    with pytest.raises(aio.AioRpcError) as error:
        async for message in call:
            received.append(message)
    assert received == [b"first"]
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.value.details() == "lost mid-stream"  # the backend's own words
    assert sum(r.calls for r in gateway.replicas) == 1


async def test_an_error_on_the_way_reaches_the_caller_without_addresses(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    for replica in gateway.replicas:
        replica.stream_then_fail, replica.own_errors = True, False
    with pytest.raises(aio.AioRpcError) as error:
        async for _ in gateway.stream():
            pass
    details = error.value.details() or ""
    assert details == "the text-generation service is unavailable; retry later"
    assert not any(replica.address in details for replica in gateway.replicas)
    assert any("lost mid-stream" in record.getMessage() for record in caplog.records)


async def test_a_stream_cut_short_is_charged_the_tokens_its_last_message_counted(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"name": "alice", "sha256": hash_key("gm_a")}]}))
    quotas = Quotas(64, 1.0)
    async with serving_gateway(authenticator=ApiKeys(keys), quotas=quotas) as gateway:
        for replica in gateway.replicas:
            replica.stream_then_fail, replica.tokens_per_message = True, 5
        call = gateway.channel.unary_stream(STREAM)(
            b"", timeout=10, metadata=(("authorization", "Bearer gm_a"),)
        )
        with pytest.raises(aio.AioRpcError):
            async for _ in call:
                pass
    assert (await quotas.used_today("alice")).tokens == 5  # one message, five tokens in it


async def test_retries_stop_when_every_replica_fails(gateway: Gateway) -> None:
    for replica in gateway.replicas:
        replica.fail_unary = True
    with pytest.raises(aio.AioRpcError) as error:
        await gateway.unary()
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert sum(r.calls for r in gateway.replicas) == 3  # RetryPolicy.max_attempts


async def test_a_replica_leaving_dns_finishes_its_call_before_its_channel_closes(
    gateway: Gateway,
) -> None:
    leaving = gateway.replicas[0]
    leaving.stall = asyncio.Event()
    pending = asyncio.ensure_future(gateway.unary())
    pending2 = asyncio.ensure_future(gateway.unary())  # one of the two lands on it
    await asyncio.wait_for(leaving.started.wait(), 5)
    gateway.pool.targets = parse_targets(gateway.replicas[1].address)
    await gateway.pool.refresh()
    assert leaving.address not in gateway.pool.replicas
    await asyncio.sleep(0.3)
    leaving.stall.set()
    replies = await asyncio.gather(pending, pending2)
    assert b"reply from " + leaving.address.encode() in replies


async def test_caller_cancelling_cancels_the_backend_call(gateway: Gateway) -> None:
    stalled = asyncio.Event()  # never set: only a cancellation ends the backend's call
    for replica in gateway.replicas:
        replica.stall = stalled
    call = gateway.channel.unary_unary(UNARY)(b"", timeout=10)
    await _until(lambda: any(r.started.is_set() for r in gateway.replicas))
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    backend = next(r for r in gateway.replicas if r.started.is_set())
    # The replica sees its call cancelled, long before the 10 s deadline would end it.
    await asyncio.wait_for(backend.cancelled.wait(), 2.0)
    await _until(lambda: all(r.in_flight == 0 for r in gateway.pool.replicas.values()))
    assert sum(r.calls for r in gateway.replicas) == 1


async def test_a_call_cut_by_closing_a_retired_replica_is_retried_not_left_hanging() -> None:
    async with serving_gateway(drain_max_s=0.2) as gateway:
        leaving, staying = gateway.replicas
        leaving.stall = asyncio.Event()  # never set: the call outlives the drain
        pending = [asyncio.ensure_future(gateway.unary()) for _ in range(2)]
        await asyncio.wait_for(leaving.started.wait(), 5)
        gateway.pool.targets = parse_targets(staying.address)
        await gateway.pool.refresh()
        replies = await asyncio.wait_for(asyncio.gather(*pending), 5)
        assert replies == [b"reply from " + staying.address.encode()] * 2
