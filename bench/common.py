"""What every bench shares: the machine, percentiles, results files, a stack with an API key."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from genmedia_shared.paths import REPO_ROOT
from services.launcher.repository import InstanceGroup
from services.launcher.stack import Stack
from tools.figures import write_json
from tools.keyed_stack import stack_with_api_key

RESULTS_DIR = Path(__file__).parent / "results"
DEMO_WEIGHTS = REPO_ROOT / "models" / "demo"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]


def machine() -> dict[str, object]:
    """The CPU and library versions a figure was measured with (docs/PERFORMANCE.md quotes them)."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def judged(
    measured: dict[str, float], targets: dict[str, float], at_most: Collection[str] = ()
) -> dict[str, dict[str, Any]]:
    """Each figure against its target: at least the target, or at most it for the names in
    ``at_most`` (costs: added milliseconds, memory growth)."""
    return {
        name: {
            "measured": value,
            "target": targets[name],
            "met": value <= targets[name] if name in at_most else value >= targets[name],
        }
        for name, value in measured.items()
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values (a side that never ran)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class BenchStack:
    """A started stack and how to call its gateway (an API key, as in production)."""

    stack: Stack
    gateway_metadata: tuple[tuple[str, str], ...]

    @property
    def cold_start(self) -> dict[str, float]:
        """Seconds from launch to Triton ready and to each process SERVING."""
        return self.stack.milestones


FLOOR_MODELS = (
    Path(__file__).parent / "triton" / "floor",
    Path(__file__).parent / "triton" / "floor_stream",
)
"""Triton models that do nothing but answer: the floor of a Triton hop, served beside ours."""


@contextlib.contextmanager
def bench_stack(
    weights: Path,
    say: Callable[[str], None] = print,
    instance_group: InstanceGroup | None = None,
    floors: bool = False,
) -> Iterator[BenchStack]:
    """Starts Triton, the services and the gateway (API keys on) on free ports; stops them after.

    ``floors``: Triton also serves the floor models (bench/triton)."""
    with tempfile.TemporaryDirectory(prefix="genmedia-bench-") as scratch:
        say(f"starting the stack on {weights}...")
        with stack_with_api_key(
            weights, Path(scratch), timeout_s=600, progress=say, instance_group=instance_group,
            extra_models=FLOOR_MODELS if floors else (),
        ) as (stack, key):  # fmt: skip
            yield BenchStack(stack, (("authorization", f"Bearer {key}"),))


def figure_bench_arguments(doc: str) -> argparse.ArgumentParser:
    """The flags of a bench that writes one JSON and one PNG: ``--out`` and ``--quick``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    return parser


def publish(
    results: dict[str, Any],
    name: str,
    report: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], None],
    out: Path,
) -> None:
    """Stamps the machine, prints the report, writes ``name``.json and ``name``.png."""
    results["machine"] = machine()
    print(report(results))
    write_json(results, out / f"{name}.json")
    plot(results, out / f"{name}.png")
