"""Short locust runs through the real gateway: the locustfile (the k8s load test runs it)
and the runner behind `make load` (``python -m tools.load``)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from genmedia_shared.paths import REPO_ROOT
from services.common.registry import GATEWAY
from services.launcher.stack import Stack

pytestmark = pytest.mark.integration

LOCUSTFILE = REPO_ROOT / "tools" / "load" / "locustfile.py"
EVERY_CALL = {
    "GenerateImages",
    "ListClasses",
    "TranslateImage",
    "ListModels",
    "GenerateText",
    "StreamText",
    "StreamText (first token)",
}


def run_locust(stack: Stack, out: Path, seconds: int, **env: str) -> None:
    """Headless locust against the stack's gateway; CSVs at out_*.csv."""
    done = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE),
            "--host", stack.ports.address(GATEWAY), "--headless",
            "-u", "8", "-r", "8", "-t", f"{seconds}s",
            "--csv", str(out), "--only-summary", "--loglevel", "WARNING",
        ],
        env=os.environ | {"PYTHONPATH": f"{REPO_ROOT}"} | env,
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )  # fmt: skip
    # Locust exits 1 when any request failed; the CSVs say which.
    assert done.returncode in (0, 1), done.stderr[-3000:]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_locust_users_call_every_rpc_through_the_gateway(stack: Stack, tmp_path: Path) -> None:
    run_locust(stack, tmp_path / "run", 12, GENMEDIA_LOADTEST_WAIT_S="0,0.05")
    stats = {row["Name"]: row for row in rows(tmp_path / "run_stats.csv")}
    assert set(stats) == EVERY_CALL | {"Aggregated"}
    for name in EVERY_CALL:
        assert int(stats[name]["Request Count"]) > 0, name
        assert int(stats[name]["Failure Count"]) == 0, rows(tmp_path / "run_failures.csv")
    first_token = float(stats["StreamText (first token)"]["Median Response Time"])
    assert first_token <= float(stats["StreamText"]["Median Response Time"])


def test_failures_are_recorded_by_status_code(stack: Stack, tmp_path: Path) -> None:
    run_locust(stack, tmp_path / "run", 4, GENMEDIA_LOADTEST_TIMEOUT_S="0.000001")
    failures = rows(tmp_path / "run_failures.csv")
    assert failures, "a microsecond deadline must fail calls"
    assert all(row["Error"].startswith("StatusError('DEADLINE_EXCEEDED") for row in failures), (
        failures
    )


def test_load_runner_writes_reports_and_a_plot_and_prints_every_rpc(
    stack: Stack, tmp_path: Path
) -> None:
    out = tmp_path / "load"
    settings = {
        "GENMEDIA_LOAD_TARGET": stack.ports.address(GATEWAY),
        "GENMEDIA_LOAD_USERS": "8",
        "GENMEDIA_LOAD_SPAWN_RATE": "8",
        "GENMEDIA_LOAD_RUN_TIME_S": "8",
        "GENMEDIA_LOAD_OUT_DIR": str(out),
        # Any failed call fails the run (exit 3), so exit 0 says none failed.
        "GENMEDIA_LOAD_MAX_FAILURE_PERCENT": "0",
        "GENMEDIA_LOADTEST_WAIT_S": "0,0.05",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tools.load"],
        env=os.environ | {"PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'models'}"} | settings,
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv"):
        assert (out / name).stat().st_size > 0, name
    assert {row["Name"] for row in rows(out / "locust_stats.csv")} == EVERY_CALL | {"Aggregated"}
    assert "<html" in (out / "report.html").read_text()[:2000].lower()
    with Image.open(out / "load.png") as plot:
        assert plot.format == "PNG" and plot.width >= 800 and plot.height >= 600
    table = [line for line in done.stdout.splitlines() if line.startswith(tuple(EVERY_CALL))]
    named = {name for name in EVERY_CALL for line in table if line.split("  ")[0] == name}
    assert named == EVERY_CALL, done.stdout
    assert "no failures" in done.stdout


HTTP_CALLS = {
    "POST /v1/completions",
    "POST /v1/completions stream",
    "POST /v1/completions stream (first token)",
    "POST /v1/images/generations",
    "POST /v1/genmedia/images:translate",
    "GET /v1/genmedia/classes",
    "GET /v1/models",
}


def test_with_the_http_door_openai_users_join_the_grpc_ones(stack: Stack, tmp_path: Path) -> None:
    run_locust(
        stack,
        tmp_path / "run",
        14,
        GENMEDIA_LOADTEST_WAIT_S="0,0.05",
        GENMEDIA_LOADTEST_HTTP_HOST=stack.gateways[0].http_url,
    )
    stats = {row["Name"]: row for row in rows(tmp_path / "run_stats.csv")}
    assert set(stats) >= HTTP_CALLS, rows(tmp_path / "run_exceptions.csv")
    for name in HTTP_CALLS:
        assert int(stats[name]["Request Count"]) > 0, name
    assert sum(int(stats[name]["Failure Count"]) for name in stats if name != "Aggregated") == 0, (
        rows(tmp_path / "run_failures.csv")
    )
