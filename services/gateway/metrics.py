"""Prometheus metrics of the gateway's own work: admission and backend calls.

Labels come from bounded sets: backend process names, status codes, refusal
reasons, unit names and the key names of the keys file.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

backend_attempts = Counter(
    "genmedia_gateway_backend_attempts_total",
    "Calls from the gateway to backend replicas (retries included), by status code.",
    ("backend", "code"),
)
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
