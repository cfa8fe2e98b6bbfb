"""Resident memory of every process, and the cold start to all-healthy.

Memory is read from ``/proc`` after the other benches have run, so peaks
include real traffic: current RSS and the high-water mark (``VmHWM``) of
each service process, of ``tritonserver`` and of each python-backend stub
it started (one per model instance: that is where the models live).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.launcher.stack import Stack
from tools.figures import pyplot
from tools.processes import service_pids, triton_pids

MIB = 1024 * 1024
SERVICE_LIMIT_MB = 150.0


def _memory_mb(pid: int) -> dict[str, float]:
    """Current and peak resident memory of one process, in MB (MiB)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024 / MIB
    return {"rss_mb": fields["VmRSS"], "peak_mb": fields["VmHWM"]}


def memory(stack: Stack) -> dict[str, Any]:
    """RSS of each process of a running stack; Triton's stubs listed apart and summed in."""
    processes = {name: _memory_mb(pid) for name, pid in service_pids(stack).items()}
    triton = {name: _memory_mb(pid) for name, pid in triton_pids(stack).items()}
    return {
        "services": processes,
        "triton": triton,
        "triton_total_rss_mb": sum(p["rss_mb"] for p in triton.values()),
        "service_limit_mb": SERVICE_LIMIT_MB,
        "largest_service_peak_mb": max(p["peak_mb"] for p in processes.values()),
    }


def cold_start(milestones: dict[str, float]) -> dict[str, Any]:
    return {"milestones_s": dict(milestones), "all_healthy_s": max(milestones.values())}


def report(results: dict[str, Any]) -> str:
    lines = [f"{'resident memory (MB)':30s}{'now':>8s}{'peak':>8s}"]
    for name, figures in {**results["memory"]["services"], **results["memory"]["triton"]}.items():
        lines.append(f"{name:30s}{figures['rss_mb']:8.1f}{figures['peak_mb']:8.1f}")
    lines.append(f"{'Triton in all':30s}{results['memory']['triton_total_rss_mb']:8.1f}")
    for label, started in results["cold_start"].items():
        milestones = ", ".join(f"{k} {v:.1f} s" for k, v in started["milestones_s"].items())
        lines.append(f"cold start ({label}): all healthy in {started['all_healthy_s']:.1f} s")
        lines.append(f"  {milestones}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    """Peak RSS per process against the services' limit (left); cold start milestones (right)."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    memory_figures = {**results["memory"]["services"], **results["memory"]["triton"]}
    names = list(memory_figures)
    left.barh(names, [memory_figures[n]["peak_mb"] for n in names], color="#5b8fd1")
    left.axvline(SERVICE_LIMIT_MB, color="#c33", linestyle="--", label="service limit")
    left.set_xlabel("peak resident memory (MB)")
    left.legend(fontsize=8)
    left.invert_yaxis()
    for row, started in enumerate(results["cold_start"].values()):
        for name, seconds in started["milestones_s"].items():
            right.plot([seconds], [row], marker="o")
            right.annotate(name, (seconds, row), fontsize=7, rotation=30)
    right.set_yticks(range(len(results["cold_start"])), list(results["cold_start"]))
    right.set_xlabel("seconds from launch")
    right.set_title("cold start to all-healthy")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
