"""Limits for callers without a key: per client address and overall."""

from __future__ import annotations

import grpc
import pytest

from services.common.errors import RETRY_AFTER_HEADER, ResourceExhausted
from services.gateway.open_service import OpenLimits, OpenServiceLimiter, peer_address


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv6:[::1]:5555", "::1"),
        ("ipv6:[2001:db8::2]:443", "2001:db8::2"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_peers_are_told_apart_by_address_not_port(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_an_address_over_its_rate_is_refused_with_when_to_retry() -> None:
    clock = Clock()
    limiter = OpenServiceLimiter(OpenLimits(rate_per_s=2, burst=3, max_concurrent=100), clock)
    for _ in range(3):
        limiter.admit("ipv4:10.0.0.7:1").release()
    with pytest.raises(ResourceExhausted) as refused:
        limiter.admit("ipv4:10.0.0.7:2")  # another connection of the same client
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "without an API key" in refused.value.message
    assert dict(refused.value.metadata)[RETRY_AFTER_HEADER] == "500"  # one token at 2/s
    limiter.admit("ipv4:10.0.0.8:1").release()  # another address has its own bucket
    clock.now += 0.5
    limiter.admit("ipv4:10.0.0.7:3").release()


def test_calls_in_progress_are_bounded_over_all_addresses() -> None:
    limiter = OpenServiceLimiter(OpenLimits(rate_per_s=100, burst=100, max_concurrent=2))
    first, second = limiter.admit("ipv4:10.0.0.1:1"), limiter.admit("ipv4:10.0.0.2:1")
    with pytest.raises(ResourceExhausted) as refused:
        limiter.admit("ipv4:10.0.0.3:1")
    assert "limit of 2 calls" in refused.value.message
    assert RETRY_AFTER_HEADER in dict(refused.value.metadata)
    first.release()
    first.release()  # twice is harmless
    limiter.admit("ipv4:10.0.0.3:1")
    second.release()
    assert limiter.in_flight == 1


def test_remembered_addresses_are_bounded() -> None:
    clock = Clock()
    limits = OpenLimits(rate_per_s=1, burst=1, max_concurrent=10, max_peers=3)
    limiter = OpenServiceLimiter(limits, clock)
    for host in range(10):
        limiter.admit(f"ipv4:10.0.0.{host}:1").release()
    assert len(limiter._buckets) == 3
    with pytest.raises(ResourceExhausted):
        limiter.admit("ipv4:10.0.0.9:1")  # the most recent are kept
