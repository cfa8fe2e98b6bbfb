"""The GPU run's dry run (issue #23): what `make gpu-stage` prepares for a lent GPU machine,
staged here for this machine's Python, installed with no package index into a clean
environment that stands for the GPU machine's own (numpy 2, torch, the packages of
requirements/gpu-machine.txt), and `bench/gpu/run.sh` on its CPU path from there.

It differs from the GPU machine in the Python (3.11 here, 3.12 there; the stage takes
either) and torch's build (CPU here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu.stage import CALL_BYTES, TORCH_DEPENDENCIES, tree_bytes
from genmedia_shared.paths import REPO_ROOT

pytestmark = pytest.mark.integration


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=os.environ | env, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{command[:3]}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def test_the_gpu_run_installs_offline_over_numpy_2_and_runs_its_cpu_path(tmp_path: Path) -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    stage = tmp_path / "stage"
    run([sys.executable, "-m", "bench.gpu.stage", "--python", python, "--machine", "--fast",
         "--out", str(stage)])  # fmt: skip
    parts = sorted(stage.glob("part-*"))
    staged = [path.name for part in parts for path in part.iterdir()]
    assert "triton.tar.xz" in staged
    assert not [name for name in staged if name.startswith(("torch-", "numpy-"))]
    for part in parts:  # each part travels beside the tree in one call
        assert sum(path.stat().st_size for path in part.iterdir()) + tree_bytes() < CALL_BYTES

    machine = tmp_path / "machine-env"
    run([sys._base_executable, "-m", "venv", str(machine)])  # type: ignore[attr-defined]
    py = str(machine / "bin" / "python")
    offline = [py, "-m", "pip", "install", "--quiet", "--no-index"]
    machine_list = str(REPO_ROOT / "requirements" / "gpu-machine.txt")
    run([*offline, "--find-links", str(stage / "machine"), "-r", machine_list, *TORCH_DEPENDENCIES])
    run([*offline, "--no-deps", *map(str, (stage / "machine").glob("torch-*.whl"))])

    target = tmp_path / "target"
    run(["bench/gpu/install.sh", str(target), *map(str, parts)], PY=py)
    out = tmp_path / "gpu"
    done = run(
        ["bench/gpu/run.sh", "--quick", "--out", str(out), "--weights", str(tmp_path / "w")],
        PY=py, GENMEDIA_GPU_TARGET=str(target), GENMEDIA_BENCH_DEVICE="cpu",
    )  # fmt: skip
    assert ", numpy 2." in done.stdout  # the GPU machine's numpy, not our pin
    results = json.loads((out / "gpu.json").read_text())
    assert results["triton_instance_kind"] == "KIND_CPU"
    assert set(results["figures"]) == {
        "GenerateImages (images/s)", "TranslateImage (images/s)", "StreamText (tokens/s)",
    }  # fmt: skip
    for row in results["figures"].values():
        assert row["stack"] > 0 and row["raw_pytorch"] > 0
        assert row["stack_vs_raw"] == pytest.approx(row["stack"] / row["raw_pytorch"])
    assert set(results["targets"]) == set(results["figures"])
    for rpc in ("GenerateImages", "TranslateImage"):
        row = results["one_caller"][rpc]
        assert row["stack_p50_ms"] > 0 and row["raw_p50_ms"] > 0
        assert row["stack_minus_raw_ms"] == pytest.approx(row["stack_p50_ms"] - row["raw_p50_ms"])
    assert results["gpu_utilization"] is None  # Triton reports none without a GPU
    assert "stack/raw" in done.stdout and "one caller p50" in done.stdout
    assert (out / "gpu.png").stat().st_size > 10_000
