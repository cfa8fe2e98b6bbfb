"""Prometheus metrics every gRPC process exports.

The server RED set follows go-grpc-prometheus names so existing dashboards
and alerts apply. Labels come from small fixed sets (registered methods and
status codes), never from request data.

Series that queries divide by or alert on exist at 0 from the start: every
served method's counters with the codes of the error-ratio rules
(``ZERO_CODES``), so a ratio reads 0, not "no data", before the first error.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from prometheus_client import Counter, Gauge, Histogram

# From 1 ms to a minute: cheap calls, image batches and long text streams.
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

GRPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")
SERVER_LABELS = (*GRPC_LABELS, "protocol")
"""The server side also says which door a call came through: ``grpc`` or ``http`` (the
gateway's HTTP door records each gRPC method it calls under the same names)."""
PROTOCOLS = ("grpc", "http")
ZERO_CODES = (
    grpc.StatusCode.OK,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
)
"""Codes whose handled series every method has from the start: OK and the server faults
the error-ratio rules count (deploy/prometheus/rules/recording.yml)."""

server_started = Counter("grpc_server_started_total", "RPCs started on the server.", SERVER_LABELS)
server_handled = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    (*SERVER_LABELS, "grpc_code"),
)
server_handling_seconds = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its last response, streams included.",
    SERVER_LABELS,
    buckets=LATENCY_BUCKETS_S,
)
server_in_flight = Gauge("grpc_server_in_flight", "RPCs being handled right now.", SERVER_LABELS)


@dataclass(frozen=True)
class RedFamily:
    """The four metrics of one side (server or client) of the gRPC RED set."""

    started: Counter
    handled: Counter
    seconds: Histogram
    in_flight: Gauge


class RedChildren:
    """One method's children of a RED family, looked up once rather than on every call."""

    def __init__(
        self,
        family: RedFamily,
        service: str,
        method: str,
        grpc_type: str,
        protocol: str | None = None,
    ) -> None:
        """``protocol``: the door the calls came through (server family only)."""
        self._family = family
        self.labels: tuple[str, ...] = (service, method, grpc_type)
        if protocol is not None:
            self.labels = (*self.labels, protocol)
        self._started = family.started.labels(*self.labels)
        self._in_flight = family.in_flight.labels(*self.labels)
        self._seconds = family.seconds.labels(*self.labels)
        self._handled: dict[grpc.StatusCode, Any] = {
            code: family.handled.labels(*self.labels, code.name) for code in ZERO_CODES
        }

    def start(self) -> float:
        self._started.inc()
        self._in_flight.inc()
        return time.perf_counter()

    def finish(self, started: float, code: grpc.StatusCode) -> float:
        """Records the outcome; returns the call's duration in seconds."""
        elapsed = time.perf_counter() - started
        self._in_flight.dec()
        self._seconds.observe(elapsed)
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = self._family.handled.labels(*self.labels, code.name)
        handled.inc()
        return elapsed


SERVER = RedFamily(server_started, server_handled, server_handling_seconds, server_in_flight)


def grpc_type_of(method: Any) -> str:
    """The grpc_type label of a method descriptor (go-grpc-prometheus's names)."""
    if method.client_streaming:
        return "bidi_stream" if method.server_streaming else "client_stream"
    return "server_stream" if method.server_streaming else "unary"


def create_server_series(
    service_names: Iterable[str], protocols: Iterable[str] = ("grpc",)
) -> None:
    """Every method of the served services gets its RED series at 0 now, not at its
    first call (the interceptor makes the same children then), for each door it has."""
    pool = descriptor_pool.Default()
    for protocol in protocols:
        for name in service_names:
            for method in pool.FindServiceByName(name).methods:
                RedChildren(SERVER, name, method.name, grpc_type_of(method), protocol)


triton_in_flight = Gauge(
    "genmedia_triton_in_flight", "Calls to Triton in progress, by model.", ("model",)
)
triton_requests = Counter(
    "genmedia_triton_requests_total",
    "Calls made to Triton, by model and outcome (gRPC status code name).",
    ("model", "code"),
)
triton_request_seconds = Histogram(
    "genmedia_triton_request_seconds",
    "Duration of calls to Triton (whole stream for streaming models).",
    ("model",),
    buckets=LATENCY_BUCKETS_S,
)

serving = Gauge(
    "genmedia_serving",
    "1 while the gRPC service can serve (its Triton models or backends are ready), else 0.",
    ("grpc_service",),
)
