"""A tiny `make aiperf` against the session stack's HTTP door: NVIDIA AIPerf (a client none
of us wrote) completes streamed completions and image generations without an error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genmedia_shared.paths import REPO_ROOT
from services.launcher.stack import Stack
from tests.integration.conftest import weights_dir
from tools.aiperf.profiles import AIPERF

pytestmark = pytest.mark.integration


def test_aiperf_profiles_the_http_door_without_errors(stack: Stack, tmp_path: Path) -> None:
    assert AIPERF.exists(), "run `make aiperf-tools` (make test does it)"
    done = subprocess.run(
        [sys.executable, "-m", "tools.aiperf", "--target", stack.gateways[0].http_url,
         "--weights", str(weights_dir()), "--requests", "6", "--concurrency", "2",
         "--tokens", "8", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    completions, images = summary["profiles"]["completions"], summary["profiles"]["images"]
    assert completions["requests"] == 6 and images["requests"] == 6
    assert completions["request_error_rate"]["avg"] == 0
    assert images["request_error_rate"]["avg"] == 0
    assert completions["time_to_first_token"]["p50"] > 0
    assert completions["output_token_throughput"]["avg"] > 0
    assert "time_to_first_token" in done.stdout
