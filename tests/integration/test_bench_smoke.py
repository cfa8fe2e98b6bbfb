"""A short run of the gateway bench against the session stack (the full one is `make bench`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bench.gateway import Sizes, measure, passthrough_beside, report, stack_endpoints
from services.launcher.stack import Stack

pytestmark = pytest.mark.integration


def test_gateway_bench_measures_every_side_and_writes_json_and_png(
    stack: Stack, tmp_path: Path
) -> None:
    with passthrough_beside(stack) as passthrough:
        endpoints = stack_endpoints(stack, passthrough)
        results = measure(endpoints, Sizes.quick(), tmp_path, progress=False)

    sides = ["direct", "passthrough", "gateway"]
    assert results["sides"] == sides
    for side in sides:
        assert len(results["raw_cheap_ms"][side]) == Sizes.quick().cheap_calls
        assert results["generate_images"]["images_per_s"][side] > 0
        assert results["stream_text"]["tokens_per_s"][side] > 0
    assert set(results["generate_images"]["throughput_ratio"]) == {"passthrough", "gateway"}
    written = json.loads((tmp_path / "gateway.json").read_text())
    assert written["cheap_call"]["p50_ms"] == results["cheap_call"]["p50_ms"]
    with Image.open(tmp_path / "gateway.png") as plot:
        assert plot.width > 800
    table = report(results)
    assert "ListModels p50" in table and "gateway vs direct" in table
