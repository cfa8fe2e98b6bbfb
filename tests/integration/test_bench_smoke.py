"""A short run of the gateway bench against the session stack (the full one is `make bench`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from PIL import Image

from bench.gateway import Endpoints, Sizes, measure, report
from services.common.registry import (
    BACKENDS,
    GATEWAY,
    IMAGE_GENERATION,
    IMAGE_TRANSLATION,
    TEXT_GENERATION,
)
from services.launcher.stack import Stack, free_port
from services.launcher.triton import REPO_ROOT
from tests.integration.processes import open_channel

pytestmark = pytest.mark.integration


def test_gateway_bench_measures_every_side_and_writes_json_and_png(
    stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    passthrough = subprocess.Popen(
        [sys.executable, "-m", "bench.passthrough", "--port", str(port),
         *(f"--backend={p.name}={stack.ports.address(p)}" for p in BACKENDS)],
        cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        with open_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        endpoints = Endpoints(
            gateway=stack.ports.address(GATEWAY),
            image_generation=stack.ports.address(IMAGE_GENERATION),
            image_translation=stack.ports.address(IMAGE_TRANSLATION),
            text_generation=stack.ports.address(TEXT_GENERATION),
            passthrough=f"127.0.0.1:{port}",
        )
        results = measure(endpoints, Sizes.quick(), tmp_path, progress=False)
    finally:
        passthrough.terminate()
        passthrough.wait(timeout=10)

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
