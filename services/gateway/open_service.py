"""Limits for callers without a key (ProvenanceService is open to anyone).

A keyed caller is held to its key's limits; an anonymous one has none of
its own, so the gateway gives the open service limits by client address (a
token bucket each) and overall (calls at once), and refuses beyond them at
once with RESOURCE_EXHAUSTED and a retry-after hint: nothing anonymous
queues. Peers are told apart by IP address (not port: one client opens
many connections); behind a proxy every caller shares the proxy's address,
and the overall limit is what protects the gateway.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.common.errors import ResourceExhausted
from services.gateway.memory_limits import TokenBucket

BUSY_RETRY_AFTER_S = 1.0


def peer_address(peer: str) -> str:
    """The client's address from gRPC's peer string ("ipv4:10.0.0.7:51234" -> "10.0.0.7",
    "ipv6:[::1]:5555" -> "::1"); other kinds (unix sockets) are kept whole."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]") or rest
    return peer


@dataclass(frozen=True)
class OpenLimits:
    rate_per_s: float
    """Calls a second per client address, on average."""
    burst: int
    """Calls a client address may make at once after a pause."""
    max_concurrent: int
    """Anonymous calls in progress at once, all addresses together."""
    max_peers: int = 10_000
    """Client addresses remembered; the longest idle is forgotten first."""


class OpenServiceLimiter:
    """Admits anonymous calls within the per-address rate and the overall concurrency."""

    def __init__(self, limits: OpenLimits, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.in_flight = 0
        self._monotonic = monotonic
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, address: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(
                self.limits.rate_per_s, self.limits.burst, now
            )
            while len(self._buckets) > self.limits.max_peers:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        return bucket

    def admit(self, peer: str) -> OpenTicket:
        """A ticket to release when the call ends; raises ResourceExhausted beyond a limit."""
        if self.in_flight >= self.limits.max_concurrent:
            raise ResourceExhausted(
                f"the open service is handling its limit of {self.limits.max_concurrent} "
                "calls without an API key; retry after the retry-after-ms in the trailing "
                "metadata, or call with a key",
                BUSY_RETRY_AFTER_S,
            )
        wait_s = self._bucket(peer_address(peer), self._monotonic()).take(self._monotonic())
        if wait_s > 0:
            raise ResourceExhausted(
                f"over the rate of {self.limits.rate_per_s:g} calls/s (burst "
                f"{self.limits.burst}) for callers without an API key; retry in {wait_s:.2f} s, "
                "or call with a key",
                wait_s,
            )
        self.in_flight += 1
        return OpenTicket(self)


class OpenTicket:
    def __init__(self, limiter: OpenServiceLimiter) -> None:
        self._limiter: OpenServiceLimiter | None = limiter

    def release(self) -> None:
        if self._limiter is not None:
            self._limiter.in_flight -= 1
            self._limiter = None

    async def finish(self) -> None:
        """As a key's Ticket ends (the provenance service holds either)."""
        self.release()
