"""Prometheus metrics of the gateway's own work: admission and backend calls.

Labels come from bounded sets: backend process names, status codes, refusal
reasons, unit names and the key names of the keys file. The labelled counters
whose label sets are known at start (backends, refusal reasons) have every
series at 0 from the start: a dashboard shows 0, not "no data".
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import GRPC_LABELS, LATENCY_BUCKETS_S, RedFamily
from services.common.registry import BACKENDS

# The client side of the gRPC RED set (go-grpc-prometheus names), for the
# gateway's calls to backend replicas: one per attempt, retries included.
client_started = Counter(
    "grpc_client_started_total", "Calls started to a backend replica.", GRPC_LABELS
)
client_handled = Counter(
    "grpc_client_handled_total",
    "Calls to backend replicas completed, by status code.",
    (*GRPC_LABELS, "grpc_code"),
)
client_handling_seconds = Histogram(
    "grpc_client_handling_seconds",
    "Time from the start of a call to a backend replica to its end, streams included.",
    GRPC_LABELS,
    buckets=LATENCY_BUCKETS_S,
)
client_in_flight = Gauge(
    "grpc_client_in_flight", "Calls to backend replicas in progress.", GRPC_LABELS
)
CLIENT = RedFamily(client_started, client_handled, client_handling_seconds, client_in_flight)
backend_retries = Counter(
    "genmedia_gateway_backend_retries_total",
    "Calls the gateway retried on another attempt after UNAVAILABLE.",
    ("backend",),
)
backend_ejections = Counter(
    "genmedia_gateway_backend_ejections_total",
    "Times a replica was ejected after failing again and again.",
    ("backend",),
)
backend_replicas = Gauge(
    "genmedia_gateway_backend_replicas",
    "Known backend replicas by state (healthy, unhealthy, ejected).",
    ("backend", "state"),
)
refused = Counter(
    "genmedia_gateway_refused_total",
    "Calls the gateway refused before forwarding them, by reason.",
    ("reason",),
)
units_generated = Counter(
    "genmedia_gateway_units_total",
    "Units charged to API keys (images, megapixels, tokens).",
    ("key", "unit"),
)

REFUSAL_REASONS = ("RESOURCE_EXHAUSTED", "UNAUTHENTICATED", "PERMISSION_DENIED", "UNAVAILABLE")
"""The status codes the gateway refuses calls with before forwarding them (the reason label)."""


def _create_known_series() -> None:
    for backend in BACKENDS:
        backend_retries.labels(backend.name)
        backend_ejections.labels(backend.name)
    for reason in REFUSAL_REASONS:
        refused.labels(reason)


_create_known_series()
quota_store_up = Gauge(
    "genmedia_gateway_quota_store_up",
    "1 while the shared quota store (Redis) answers in time; 0 while the gateway admits "
    "by its fallback policy. Always 1 with the memory store.",
)
quota_store_up.set(1)
quota_store_episodes = Counter(
    "genmedia_gateway_quota_store_outages_total",
    "Times the quota store stopped answering in time and the fallback took over.",
)
quota_fallback_admissions = Counter(
    "genmedia_gateway_quota_fallback_admissions_total",
    "Calls admitted or refused by the fallback policy while the quota store was down.",
    ("policy",),
)
quota_releases_dropped = Counter(
    "genmedia_gateway_quota_releases_dropped_total",
    "Lease releases a long outage could not keep for Redis (those leases end at their expiry).",
)
