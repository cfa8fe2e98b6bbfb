"""Prometheus metrics every gRPC process exports.

The server RED set follows go-grpc-prometheus names so existing dashboards
and alerts apply. Labels come from small fixed sets (registered methods and
status codes), never from request data.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# From 1 ms to a minute: cheap calls, image batches and long text streams.
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

GRPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")

server_started = Counter("grpc_server_started_total", "RPCs started on the server.", GRPC_LABELS)
server_handled = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    (*GRPC_LABELS, "grpc_code"),
)
server_handling_seconds = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its last response, streams included.",
    GRPC_LABELS,
    buckets=LATENCY_BUCKETS_S,
)
server_in_flight = Gauge("grpc_server_in_flight", "RPCs being handled right now.", GRPC_LABELS)

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
