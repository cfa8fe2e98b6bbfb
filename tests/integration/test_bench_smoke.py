"""Short runs of every bench (the full ones are `make bench` and bench/gpu/run.sh)."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench import resources, streams
from bench.__main__ import (
    BATCHING_MIN_GAIN,
    INTER_TOKEN_LIMIT,
    OVERHEAD_LIMIT_MS,
    OVERHEAD_LIMIT_PERCENT,
    PER_TOKEN_LIMIT_MS,
    verdicts,
)
from bench.gateway import Sizes, measure, passthrough_beside, report, stack_endpoints
from bench.serving import FLOOR_SIDES, HOP_LIMIT, MODEL_CALLS
from bench.workloads import SIDES
from genmedia_shared.paths import REPO_ROOT
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


def run_bench(module: str, *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick", *arguments],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    # Enough of the output for every process's log tail when a stack fails to start.
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-3000:]
    return done.stdout


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 800 and image.height >= 300, path


def written_results(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo and full-size results that ``verdicts`` judges, read back from the JSON."""

    def read(name: str) -> Any:
        return json.loads((out / f"{name}.json").read_text())

    serving = read("serving")
    demo = {
        "serving": serving["demo"],
        "batching": read("batching"),
        "memory": read("resources")["memory"],
        "streams": read("streams"),
        "text": read("text"),
    }
    return demo, {"serving": serving["full_size"]}


def every_figure_at_its_limit(
    demo: dict[str, Any], full: dict[str, Any], met: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copies with every figure just inside its target (met) or just outside it."""
    demo, full = copy.deepcopy(demo), copy.deepcopy(full)

    def under(limit: float) -> float:  # targets "figure < limit"
        return limit * 0.99 if met else limit

    def at_least(minimum: float) -> float:  # targets "figure >= minimum"
        return minimum if met else minimum * 0.99

    def at_most(limit: float) -> float:  # targets "figure <= limit"
        return limit if met else limit * 1.01

    tokens = demo["serving"]["text_tokens"]
    for name, call in demo["serving"]["calls"].items():
        if "overhead_ms" in call:
            call["overhead_ms"] = (
                at_most(PER_TOKEN_LIMIT_MS) * tokens
                if name == "GenerateText"
                else under(OVERHEAD_LIMIT_MS)
            )
        for hop in call.get("vs_floor", {}):
            call["vs_floor"][hop] = at_most(HOP_LIMIT)
    demo["text"]["inter_token_vs_in_process"]["gateway"] = at_most(INTER_TOKEN_LIMIT)
    for call in full["serving"]["overhead_percent_runs"].values():
        call["median"] = under(OVERHEAD_LIMIT_PERCENT)
    levels = demo["batching"]["rpcs"]["GenerateImages"]["levels"]
    levels["16"]["vs_concurrency_1"] = at_least(BATCHING_MIN_GAIN)
    for service in demo["memory"]["services"].values():
        service["peak_mb"] = under(resources.SERVICE_LIMIT_MB)
    top = str(demo["streams"]["sizes"]["levels"][-1])
    for side in demo["streams"]["levels"].values():
        side[top]["tokens_per_s_vs_1"] = at_least(streams.THROUGHPUT_MIN_GAIN)
        side[top]["first_token_vs_idle"] = under(streams.FIRST_TOKEN_MAX_RATIO)
    return demo, full


def assert_verdicts_follow_the_figures(out: Path, stdout: str) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["targets"]) == 11
    for row in summary["targets"]:
        assert isinstance(row["met"], bool) and row["figure"]
        assert ("met    " if row["met"] else "NOT MET") + f"  {row['target']}" in stdout
    # The summary is the targets judged on the figures written beside it...
    demo, full = written_results(out)
    assert verdicts(demo, full) == summary["targets"]
    # ...and each target is judged right on either side of its limit (the quick run's own
    # figures are too noisy to be met or not on purpose).
    for met in (True, False):
        rows = verdicts(*every_figure_at_its_limit(demo, full, met))
        assert [row["met"] for row in rows] == [met] * 11, rows


def test_make_bench_runs_every_part_and_judges_every_target(tmp_path: Path) -> None:
    out = tmp_path / "results"
    stdout = run_bench("bench", "--out", str(out), "--full-size-weights", str(tmp_path / "full"))
    assert_verdicts_follow_the_figures(out, stdout)

    serving = json.loads((out / "serving.json").read_text())
    for call in ("ListModels", *MODEL_CALLS):
        p50 = serving["demo"]["calls"][call]["p50_ms"]
        sides = set(SIDES) | set(FLOOR_SIDES)
        if call == "ListModels":  # no model: no in-process side, no work, no Triton floor
            sides -= {"in-process", "work", "floor"}
        assert set(p50) == sides
        assert all(value > 0 for value in p50.values())
        # The floors and the hop table are produced (the figures are noisy in a quick run).
        figures = serving["demo"]["calls"][call]
        assert math.isfinite(figures["floors_ms"]["python_hop"])
        assert set(figures["vs_floor"]) == (
            {"service", "gateway"} if call == "ListModels" else {"triton", "service", "gateway"}
        )
    assert set(serving["full_size"]["calls"]) == {"GenerateImages", "TranslateImage"}
    # The full-size verdict is the median of the runs (one run in a quick bench).
    for call, figures in serving["full_size"]["overhead_percent_runs"].items():
        assert figures["runs"] == [serving["full_size"]["calls"][call]["overhead_percent"]]
        assert figures["median"] == figures["runs"][0]

    batching = json.loads((out / "batching.json").read_text())
    for rpc in ("GenerateImages", "TranslateImage"):
        levels = batching["rpcs"][rpc]["levels"]
        assert set(levels) == {"1", "4", "16"}
        for level in levels.values():
            # Triton's statistics account for every execution the level caused.
            assert level["executions"] == sum(level["batch_sizes"].values()) > 0
        assert levels["1"]["batch_sizes"] == {"1": levels["1"]["executions"]}

    streams = json.loads((out / "text.json").read_text())
    assert all(streams["tokens_per_s"][side] > 0 for side in SIDES)
    concurrent = json.loads((out / "streams.json").read_text())
    for side in ("triton", "service", "gateway"):
        levels = concurrent["levels"][side]
        assert set(levels) == {"1", "4"}  # the quick run's levels
        assert levels["4"]["streams"] == 4 and levels["4"]["tokens"] > 0
        assert levels["1"]["tokens_per_s_vs_1"] == 1.0
        assert levels["4"]["first_token_p50_ms"] > 0

    memory = json.loads((out / "resources.json").read_text())
    assert set(memory["memory"]["services"]) == {
        "gateway", "image-generation", "image-translation", "text-generation",
    }  # fmt: skip
    stubs = [name for name in memory["memory"]["triton"] if name.startswith("stub ")]
    assert "stub biggan" in stubs and "stub gpt2" in stubs
    assert set(memory["cold_start"]) == {"demo models", "full-size"}
    for started in memory["cold_start"].values():
        assert started["all_healthy_s"] >= started["milestones_s"]["Triton"] > 0

    for name in ("serving-demo", "serving-full-size", "batching", "text", "streams", "resources"):
        assert_png(out / f"{name}.png")


def test_token_tax_bench_reads_every_processs_cpu_per_token(tmp_path: Path) -> None:
    stdout = run_bench("bench.token_tax", "--out", str(tmp_path))
    results = json.loads((tmp_path / "token-tax.json").read_text())
    assert results["traffic"]["tokens"] > 0 and results["traffic"]["streams"] > 0
    assert set(results["cpu_ms_per_token"]) == {"gateway", "text-generation", "tritonserver",
                                                 "stub gpt2"}  # fmt: skip
    # Every process on the path worked for the tokens, the model's stub most of all.
    assert all(value > 0 for value in results["cpu_ms_per_token"].values())
    assert results["cpu_ms_per_token"]["stub gpt2"] == max(results["cpu_ms_per_token"].values())
    assert "CPU ms per token" in stdout
    assert_png(tmp_path / "token-tax.png")


def test_quota_store_bench_puts_memory_and_redis_gateways_side_by_side(tmp_path: Path) -> None:
    stdout = run_bench("bench.quota_store", "--out", str(tmp_path))
    results = json.loads((tmp_path / "quota_store.json").read_text())
    p50 = results["cheap_call"]["p50_ms"]
    assert set(p50) == {"direct", "memory", "redis"}
    # Both gateways are a hop more than calling the backend.
    assert p50["memory"] > p50["direct"] and p50["redis"] > p50["direct"]
    assert all(value > 0 for value in results["generate_images"]["images_per_s"].values())
    assert set(results["targets"]) == {"redis_added_p50_ms", "redis_throughput_ratio"}
    assert "redis_added_p50_ms" in stdout
    assert_png(tmp_path / "quota_store.png")


def test_http_door_bench_puts_both_doors_side_by_side_and_judges_its_targets(
    tmp_path: Path,
) -> None:
    stdout = run_bench("bench.http_door", "--out", str(tmp_path))
    results = json.loads((tmp_path / "http_door.json").read_text())
    assert set(results["cheap_call"]["p50_ms"]) == {"grpc", "http"}
    assert all(value > 0 for value in results["streams"]["tokens_per_s"].values())
    assert all(value > 0 for value in results["images"]["images_per_s"].values())
    assert set(results["targets"]) == {"added_p50_ms", "stream_tokens_ratio", "images_ratio"}
    assert "stream_tokens_ratio" in stdout
    assert_png(tmp_path / "http_door.png")


def test_frames_bench_compares_streams_with_per_frame_calls_and_watches_memory(
    tmp_path: Path,
) -> None:
    stdout = run_bench(
        "bench.frames", "--out", str(tmp_path), "--full-size-weights", str(tmp_path / "full")
    )
    results = json.loads((tmp_path / "frames.json").read_text())
    for figure in ("one_stream_fps", "per_frame_calls_fps", "four_streams_fps"):
        assert results[figure] > 0
    for mode in ("encoded", "raw_output"):
        figures = results[mode]
        assert figures["four_vs_one"] == pytest.approx(
            figures["four_streams_fps"] / figures["one_stream_fps"]
        )
        cpu = figures["cpu_ms_per_frame"]["one_stream"]
        assert set(cpu) == {"bench client", "gateway", "image-translation", "triton"}
        assert cpu["triton"] > 0 and 0 < figures["busy_cores"]["one_stream"] <= 2.5
    video = results["video"]
    assert video["fps"] > 0 and video["fps_with_hold"] > 0
    flicker = video["still_part_flicker"]
    assert flicker["hold_6"] < flicker["hold_0"]  # the hold stills the still part
    assert video["held_vs_fresh_mean_levels"] >= 0 and video["fresh_frame_to_frame_levels"] > 0
    full = results["full_size"]
    assert full["side"] == 256 and full["one_stream_fps"] > 0 and full["four_streams_fps"] > 0
    assert "full-size CycleGAN 256px" in stdout and "TranslateVideo 128px" in stdout
    assert results["frame_latency_p99_ms"] >= results["frame_latency_p50_ms"] > 0
    assert len(results["memory"]["samples_mib"]) >= 2
    floor = results["model_batching_floor"]
    assert floor["batching_gain"] == pytest.approx(floor["batch_8_fps"] / floor["batch_1_fps"])
    assert set(floor["fps_by_batch"]) == {"1", "2", "4", "8"}
    for mode in ("encoded", "raw_output"):
        batch = results[mode]["mean_batch"]
        assert 1 <= batch["one_stream"] <= 8 and 1 <= batch["four_streams"] <= 8
        assert results[mode]["model_ceiling"] > 0
    stability = results["temporal_stability"]
    assert stability["input_mean_change"] > 0 and stability["output_mean_change"] > 0
    assert stability["output_vs_input"] == pytest.approx(
        stability["output_mean_change"] / stability["input_mean_change"]
    )
    assert set(results["targets"]) == {
        "stream_vs_per_frame",
        "four_streams_vs_one",
        "memory_growth",
    }
    assert "stream_vs_per_frame" in stdout
    assert_png(tmp_path / "frames.png")
