"""The soak's outputs: a summary table, soak.json and soak.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.figures import pyplot, save_figure, write_json
from tools.soak.run import SoakResult
from tools.soak.settings import SoakSettings


def summary(result: SoakResult, settings: SoakSettings) -> str:
    failed = result.failed_calls()
    lines = [
        f"{len(result.calls)} calls from {settings.callers} callers, {len(failed)} failed "
        f"({settings.warmup_s:.0f} s warm-up + {settings.duration_s:.0f} s judged)",
        f"{'process':32s}{'RSS start':>10s}{'end':>8s}{'growth':>8s}{'allowed':>8s}"
        f"{'MiB/min':>8s}{'fds':>9s}  verdict",
    ]
    for v in result.verdicts:
        lines.append(
            f"{v.name:32s}{v.rss_start_mib:10.1f}{v.rss_end_mib:8.1f}{v.rss_growth_mib:8.1f}"
            f"{v.rss_allowed_mib:8.1f}{v.rss_slope_mib_per_min:8.2f}"
            f"{f'{v.fds_start}->{v.fds_end}':>9s}  {'flat' if v.flat else 'GREW'}"
        )
    for call in failed[:10]:
        lines.append(f"  failed: {call.code}: {call.details}")
    lines.append("PASS" if result.passed else "FAIL")
    return "\n".join(lines)


def as_json(result: SoakResult, settings: SoakSettings) -> dict[str, Any]:
    codes: dict[str, int] = {}
    for call in result.calls:
        codes[call.code] = codes.get(call.code, 0) + 1
    return {
        "settings": settings.model_dump(mode="json"),
        "passed": result.passed,
        "calls": codes,
        "verdicts": [v.as_dict() for v in result.verdicts],
        "samples": [
            {"seconds": s.seconds, "rss_mib": s.rss_mib, "fds": s.fds} for s in result.samples
        ],
    }


def plot(result: SoakResult, settings: SoakSettings, path: Path) -> None:
    """Resident memory (left) and open fds (right) of every process over time."""
    plt = pyplot()
    figure, (memory, descriptors) = plt.subplots(1, 2, figsize=(13, 5))
    for verdict in result.verdicts:
        name = verdict.name
        points = [
            (s.seconds, s.rss_mib[name], s.fds[name]) for s in result.samples if name in s.rss_mib
        ]
        seconds = [p[0] for p in points]
        memory.plot(seconds, [p[1] for p in points], label=name)
        descriptors.plot(seconds, [p[2] for p in points], label=name)
    for axes, label in ((memory, "resident memory (MiB)"), (descriptors, "open file descriptors")):
        axes.axvspan(0, settings.warmup_s, color="grey", alpha=0.15, label="warm-up")
        axes.set_xlabel("seconds")
        axes.set_ylabel(label)
        axes.set_yscale("log")
    memory.legend(fontsize=7, loc="upper left")
    verdict = "PASS" if result.passed else "FAIL"
    figure.suptitle(
        f"soak: {len(result.calls)} calls, {len(result.failed_calls())} failed, "
        f"{settings.callers} callers - {verdict}"
    )
    save_figure(figure, path)


def write(result: SoakResult, settings: SoakSettings) -> list[Path]:
    json_path, png_path = settings.out_dir / "soak.json", settings.out_dir / "soak.png"
    write_json(as_json(result, settings), json_path)
    plot(result, settings, png_path)
    return [json_path, png_path]
