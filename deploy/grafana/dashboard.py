"""Writes deploy/grafana/dashboards/genmedia.json: one row per service, one for Triton.

``python deploy/grafana/dashboard.py`` regenerates it; a unit test checks the
committed file is this script's output, and an integration test that every
metric its queries name is one the running stack exports.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent / "dashboards" / "genmedia.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
API = 'grpc_service=~"genmedia[.]v1[.].*"'
SERVICES = (
    ("Gateway", "gateway"),
    ("Image generation", "image-generation"),
    ("Image translation", "image-translation"),
    ("Text generation", "text-generation"),
)


def _panel(title: str, unit: str, *targets: tuple[str, str]) -> dict:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _red(job: str) -> list[dict]:
    """Rate, errors and latency percentiles of one process's public API."""
    selector = f'job="{job}", {API}'
    latency = [
        (
            f"histogram_quantile({q}, sum by (grpc_method, le) "
            f"(rate(grpc_server_handling_seconds_bucket{{{selector}}}[$__rate_interval])))",
            f"p{round(q * 100)} {{{{grpc_method}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]
    return [
        _panel(
            "Calls/s by method and code",
            "reqps",
            (
                f"sum by (grpc_method, grpc_code) "
                f"(rate(grpc_server_handled_total{{{selector}}}[$__rate_interval]))",
                "{{grpc_method}} {{grpc_code}}",
            ),
        ),
        _panel(
            "Server-error ratio (SLO 99.5%)",
            "percentunit",
            (f'genmedia:grpc_error_ratio:rate5m{{job="{job}"}}', "{{grpc_service}}"),
        ),
        _panel("Latency percentiles", "s", *latency),
    ]


def _domain(job: str) -> list[dict]:
    if job == "gateway":
        return [
            _panel(
                "Refused before forwarding, by status",
                "reqps",
                (
                    "sum by (reason) (rate(genmedia_gateway_refused_total{}[$__rate_interval]))",
                    "{{reason}}",
                ),
            ),
            _panel(
                "Backend replicas",
                "short",
                (
                    "sum by (backend, state) (genmedia_gateway_backend_replicas{})",
                    "{{backend}} {{state}}",
                ),
                (
                    "sum by (backend) "
                    "(rate(genmedia_gateway_backend_retries_total{}[$__rate_interval]))",
                    "{{backend}} retries/s",
                ),
            ),
        ]
    if job == "image-generation":
        return [
            _panel(
                "Images/s",
                "short",
                (
                    "sum by (model) (rate(genmedia_images_generated_total{}[$__rate_interval]))",
                    "{{model}}",
                ),
            )
        ]
    if job == "image-translation":
        return [
            _panel(
                "Megapixels translated/s",
                "short",
                (
                    "sum by (model) "
                    "(rate(genmedia_pixels_translated_total{}[$__rate_interval])) / 1e6",
                    "{{model}}",
                ),
            )
        ]
    return [
        _panel(
            "Tokens/s",
            "short",
            (
                "sum by (model) (rate(genmedia_tokens_generated_total{}[$__rate_interval]))",
                "{{model}}",
            ),
        ),
        _panel(
            "Time to first token and between tokens",
            "s",
            *[
                (
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate({name}_bucket{{}}[$__rate_interval])))",
                    f"{label} p{round(q * 100)}",
                )
                for name, label in (
                    ("genmedia_time_to_first_token_seconds", "first token"),
                    ("genmedia_inter_token_seconds", "between tokens"),
                )
                for q in (0.5, 0.95)
            ],
        ),
    ]


def _triton() -> list[dict]:
    return [
        _panel(
            "Inferences/s by model",
            "reqps",
            (
                "sum by (model) "
                '(rate(nv_inference_request_success{job="triton"}[$__rate_interval]))',
                "{{model}} ok",
            ),
            (
                "sum by (model) "
                '(rate(nv_inference_request_failure{job="triton"}[$__rate_interval]))',
                "{{model}} failed",
            ),
        ),
        _panel(
            "Queue time (average per request)",
            "s",
            ("genmedia:triton_queue_seconds:avg5m{}", "{{model}}"),
        ),
        _panel(
            "Batch size Triton formed (average)",
            "short",
            (
                'sum by (model) (rate(nv_inference_count{job="triton"}[$__rate_interval])) / '
                'sum by (model) (rate(nv_inference_exec_count{job="triton"}[$__rate_interval]))',
                "{{model}}",
            ),
        ),
        _panel(
            "GPU and CPU utilisation",
            "percentunit",
            ('nv_gpu_utilization{job="triton"}', "GPU {{gpu_uuid}}"),
            ('nv_cpu_utilization{job="triton"}', "CPU"),
        ),
    ]


def dashboard() -> dict:
    panels: list[dict] = []
    rows = [(title, _red(job) + _domain(job)) for title, job in SERVICES]
    rows.append(("Triton", _triton()))
    y = 0
    for title, row_panels in rows:
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for index, panel in enumerate(row_panels):
            panel["gridPos"] = {"h": 8, "w": 8, "x": (index % 3) * 8, "y": y + (index // 3) * 8}
        y += 8 * ((len(row_panels) + 2) // 3)
        panels.extend(row_panels)
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "title": "genmedia",
        "uid": "genmedia",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "tags": ["genmedia"],
        "templating": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}")
