"""The replicas of one backend: discovery, health, per-call choice, ejection, retry budget.

A backend is configured as ``host:port[,host:port...]``. Each host is
resolved again every few seconds to all its addresses (a Kubernetes
headless Service gives one per ready pod) and each address gets its own
channel, so calls are balanced per request rather than pinned to one
HTTP/2 connection. Each replica's ``grpc.health.v1.Health/Watch`` stream
says whether it may be picked: a replica that starts shutting down turns
NOT_SERVING and gets no new calls while it drains.

The DNS refresh and every health watch are supervised
(services/common/supervision.py): an unexpected error is logged, counted in
``genmedia_background_restarts_total{task}`` and the loop starts again, so a
bug never leaves a replica list frozen or a replica's health unwatched.

Why not gRPC's own ``round_robin`` + ``outlier_detection`` policies: their
ejection counts every non-OK status as a failure, so callers sending bad
requests (INVALID_ARGUMENT) would get healthy replicas ejected. Here only
server-side faults count.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import Unavailable
from services.common.supervision import supervise
from services.gateway import metrics

logger = logging.getLogger(__name__)

SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Statuses that speak of the replica, not of the request; only these count towards ejection."""

WATCH_BACKOFF_S = (0.0, 0.2, 0.5, 1.0, 2.0)
DRAIN_POLL_S = 0.5

ChannelFactory = Callable[[str, str], aio.Channel]
"""(address to connect to, host name it came from) -> channel."""


def parse_targets(value: str) -> list[tuple[str, int]]:
    """``a:1,b:2``, ``dns:///a:1`` or ``[::1]:1`` entries as (host, port) pairs."""
    targets = []
    for raw in value.split(","):
        entry = raw.strip().removeprefix("dns:///").removeprefix("dns:")
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"backend address {raw.strip()!r} is not host:port")
        targets.append((host.strip("[]"), int(port)))
    return targets


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancels ``task`` and waits for it, without swallowing a cancellation of our own."""
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task})


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass
class EjectionPolicy:
    after_failures: int = 5
    base_s: float = 10.0
    max_s: float = 300.0
    max_ejected_percent: int = 50


class RetryBudget:
    """gRPC's retry throttling (gRFC A6): retries pause while failures outweigh successes.

    Each UNAVAILABLE takes a token, each success gives back ``ratio``; retries
    are allowed only while more than half of ``max_tokens`` are left, so a
    backend that is down gets at most a bounded burst of retries.
    """

    def __init__(self, max_tokens: float, ratio: float) -> None:
        self.max_tokens = max_tokens
        self.ratio = ratio
        self.tokens = max_tokens

    def on_failure(self) -> None:
        self.tokens = max(0.0, self.tokens - 1)

    def on_success(self) -> None:
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)

    def allows_retry(self) -> bool:
        return self.tokens > self.max_tokens / 2


@dataclass(eq=False)
class Replica:
    """One backend address and what the gateway knows about it."""

    address: str
    channel: aio.Channel
    healthy: bool = False
    ejected_until: float = 0.0
    ejections: int = 0
    last_ejected_at: float = -math.inf
    consecutive_failures: int = 0
    in_flight: int = 0
    """Calls the gateway has open on this replica (a retired one is closed at 0)."""
    watcher: asyncio.Task[None] | None = None
    _methods: dict[str, object] = field(default_factory=dict)

    def unary(self, path: str) -> aio.UnaryUnaryMultiCallable:
        method = self._methods.get(path)
        if method is None:
            method = self._methods[path] = self.channel.unary_unary(path)
        return method  # type: ignore[return-value]

    def bidi(self, path: str) -> aio.StreamStreamMultiCallable:
        method = self._methods.get(path)
        if method is None:
            method = self._methods[path] = self.channel.stream_stream(path)
        return method  # type: ignore[return-value]

    def stream(self, path: str) -> aio.UnaryStreamMultiCallable:
        method = self._methods.get(path)
        if method is None:
            method = self._methods[path] = self.channel.unary_stream(path)
        return method  # type: ignore[return-value]


class BackendPool:
    """The replicas of one backend process and the choice among them."""

    def __init__(
        self,
        name: str,
        health_service: str,
        targets: Iterable[tuple[str, int]],
        channel_factory: ChannelFactory,
        ejection: EjectionPolicy,
        retry_budget: RetryBudget,
        resolve_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        drain_max_s: float = 300.0,
    ) -> None:
        self.name = name
        self.health_service = health_service
        self.targets = list(targets)
        self.ejection = ejection
        self.retry_budget = retry_budget
        self._channel_factory = channel_factory
        self._resolve_interval_s = resolve_interval_s
        self._drain_max_s = drain_max_s
        self._clock = clock
        self.replicas: dict[str, Replica] = {}
        self._resolved: dict[tuple[str, int], set[str]] = {}
        self._turn = 0
        self._resolver: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        for state in ("healthy", "unhealthy", "ejected"):
            metrics.backend_replicas.labels(name, state).set_function(
                lambda state=state: self._count(state)
            )

    # -- discovery ---------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        self._resolver = supervise(f"{self.name} dns refresh", self._resolve_forever)

    async def _resolve_forever(self) -> None:
        while True:
            await asyncio.sleep(self._resolve_interval_s)
            await self.refresh()

    async def _lookup(self, host: str, port: int) -> set[str] | None:
        if _is_ip(host):
            return {_address(host, port)}
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            logger.warning("cannot resolve %s backend %s: %s", self.name, host, exc)
            return None
        return {_address(str(info[4][0]), port) for info in infos}

    async def refresh(self) -> None:
        """Resolves every target; adds new addresses, drains vanished ones."""
        self._resolved = {t: a for t, a in self._resolved.items() if t in self.targets}
        for host, port in self.targets:
            found = await self._lookup(host, port)
            if found is not None:  # a failed lookup keeps what was known
                self._resolved[(host, port)] = found
        wanted = {
            address: host
            for (host, _), addresses in self._resolved.items()
            for address in addresses
        }
        for address, host in wanted.items():
            if address not in self.replicas:
                replica = Replica(address, self._channel_factory(address, host))
                replica.watcher = self._supervised_watch(replica)
                self.replicas[address] = replica
                logger.info("%s backend replica %s added", self.name, address)
        for address in [a for a in self.replicas if a not in wanted]:
            replica = self.replicas.pop(address)
            logger.info("%s backend replica %s removed", self.name, address)
            self._drain(replica)

    def _drain(self, replica: Replica) -> None:
        """Closes a replica that left DNS once the calls on it are done.

        Its pod may still be serving them (it went NotReady, or is draining
        after SIGTERM); closing the channel earlier would cut them.
        """
        task = asyncio.create_task(self._close_when_idle(replica))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_when_idle(self, replica: Replica) -> None:
        try:
            await _cancel_and_wait(replica.watcher)
            deadline = self._clock() + self._drain_max_s
            while replica.in_flight and self._clock() < deadline:
                await asyncio.sleep(DRAIN_POLL_S)
        finally:
            await replica.channel.close()

    async def close(self) -> None:
        """Stops discovery and closes every channel (calls are over by now)."""
        await _cancel_and_wait(self._resolver)
        for task in list(self._closing):
            await _cancel_and_wait(task)
        for replica in list(self.replicas.values()):
            await _cancel_and_wait(replica.watcher)
            await replica.channel.close()
        self.replicas.clear()

    # -- health ------------------------------------------------------------

    def _supervised_watch(self, replica: Replica) -> asyncio.Task[None]:
        # One task label per backend, not per address: labels come from fixed sets.
        return supervise(f"{self.name} health watch", lambda: self._watch(replica))

    async def _watch(self, replica: Replica) -> None:
        """Follows the replica's health; a broken watch is re-opened at once.

        Only a second failure in a row marks the replica unhealthy, so a
        connection closed for its age (GOAWAY) does not flap the replica.
        """
        stub = health_pb2_grpc.HealthStub(replica.channel)
        request = health_pb2.HealthCheckRequest(service=self.health_service)
        failures = 0
        while True:
            try:
                async for reply in stub.Watch(request):
                    failures = 0
                    self._set_health(
                        replica, reply.status == health_pb2.HealthCheckResponse.SERVING
                    )
            except aio.AioRpcError as exc:
                logger.debug(
                    "%s health watch of %s ended: %s", self.name, replica.address, exc.code()
                )
            failures += 1
            if failures > 1:
                self._set_health(replica, False)
            await asyncio.sleep(WATCH_BACKOFF_S[min(failures - 1, len(WATCH_BACKOFF_S) - 1)])

    def _set_health(self, replica: Replica, healthy: bool) -> None:
        if replica.healthy != healthy:
            logger.info(
                "%s backend replica %s is %s",
                self.name,
                replica.address,
                "SERVING" if healthy else "NOT_SERVING",
            )
            replica.healthy = healthy

    def _available(self, replica: Replica, now: float) -> bool:
        return replica.healthy and replica.ejected_until <= now

    def _count(self, state: str) -> int:
        now = self._clock()
        replicas = self.replicas.values()
        if state == "ejected":
            return sum(r.ejected_until > now for r in replicas)
        if state == "healthy":
            return sum(self._available(r, now) for r in replicas)
        return sum(not r.healthy for r in replicas)

    def ready(self) -> bool:
        """At least one replica can take calls."""
        now = self._clock()
        return any(self._available(r, now) for r in self.replicas.values())

    # -- choice and outcomes -----------------------------------------------

    def pick(self, avoid: set[str] = frozenset()) -> Replica:  # type: ignore[assignment]
        """The next available replica, round robin, preferring ones not in ``avoid``."""
        now = self._clock()
        available = [r for r in self.replicas.values() if self._available(r, now)]
        fresh = [r for r in available if r.address not in avoid] or available
        if not fresh:
            raise Unavailable(
                f"no healthy {self.name} backend ({len(self.replicas)} known, "
                f"{self._count('ejected')} ejected); retry shortly"
            )
        self._turn += 1
        return fresh[self._turn % len(fresh)]

    def record(self, replica: Replica, code: grpc.StatusCode) -> None:
        """Counts one call's outcome towards ejection and the retry budget."""
        if code is grpc.StatusCode.UNAVAILABLE:
            self.retry_budget.on_failure()
        elif code is grpc.StatusCode.OK:
            self.retry_budget.on_success()
        if code not in SERVER_FAULTS:
            replica.consecutive_failures = 0
            now = self._clock()
            if code is grpc.StatusCode.OK and now - replica.last_ejected_at > self.ejection.max_s:
                replica.ejections = 0
            return
        replica.consecutive_failures += 1
        if replica.consecutive_failures >= self.ejection.after_failures:
            self._maybe_eject(replica)

    def _maybe_eject(self, replica: Replica) -> None:
        now = self._clock()
        if replica.ejected_until > now:
            return
        ejected = sum(r.ejected_until > now for r in self.replicas.values())
        allowed = len(self.replicas) * self.ejection.max_ejected_percent // 100
        # Never eject the last replica that can take calls: failing calls on
        # it are still better than refusing every call.
        others_available = any(
            self._available(r, now) for r in self.replicas.values() if r is not replica
        )
        if ejected >= allowed or not others_available:
            return
        duration = min(self.ejection.base_s * 2**replica.ejections, self.ejection.max_s)
        replica.ejections += 1
        replica.ejected_until = now + duration
        replica.last_ejected_at = now
        replica.consecutive_failures = 0
        metrics.backend_ejections.labels(self.name).inc()
        logger.warning(
            "%s backend replica %s ejected for %.0f s after %d failures in a row",
            self.name,
            replica.address,
            duration,
            self.ejection.after_failures,
        )
