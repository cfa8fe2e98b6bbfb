"""Concurrent token streams: what in-flight batching buys (issue #8).

At 1, 4 and 16 concurrent streams, each stream slot runs streams back to back
(a closed loop) with its own seeds, against Triton's ``gpt2`` directly, on
the text-generation service and through the gateway (``StreamText``). For
each level: aggregate tokens/s over the level's wall time, time to first
token (p50, p95) and inter-token latency (p50). The targets compare 16
streams with one: aggregate tokens/s at least 4x, time to first token under
3x the idle (one-stream) figure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.common import median, percentile
from bench.workloads import Addresses, Clients, StreamTiming, TextCall, Workloads, run_with_clients
from tools.figures import pyplot

STREAM_SIDES = ("triton", "service", "gateway")
THROUGHPUT_MIN_GAIN = 6.0
FIRST_TOKEN_MAX_RATIO = 3.0


@dataclass(frozen=True)
class StreamSizes:
    levels: tuple[int, ...] = (1, 4, 16)
    streams_per_slot: int = 4
    """Streams each concurrent slot runs back to back, per level and side."""
    tokens: int = 64

    @classmethod
    def quick(cls) -> StreamSizes:
        return cls(levels=(1, 4), streams_per_slot=1, tokens=8)


@dataclass(frozen=True)
class LevelRun:
    wall_s: float
    timings: list[StreamTiming]

    def figures(self) -> dict[str, float]:
        first_ms = [t.first_s * 1000 for t in self.timings]
        return {
            "streams": len(self.timings),
            "tokens": sum(t.tokens for t in self.timings),
            "tokens_per_s": sum(t.tokens for t in self.timings) / self.wall_s,
            "first_token_p50_ms": median(first_ms),
            "first_token_p95_ms": percentile(first_ms, 95),
            "inter_token_p50_ms": median([t.inter_token_s * 1000 for t in self.timings]),
        }


async def run_level(
    clients: Clients, side: str, call: TextCall, concurrency: int, per_slot: int, first_seed: int
) -> LevelRun:
    async def slot(number: int) -> list[StreamTiming]:
        seeds = range(first_seed + number * per_slot, first_seed + (number + 1) * per_slot)
        return [await clients.stream(side, call, seed) for seed in seeds]

    started = time.perf_counter()
    results = await asyncio.gather(*(slot(n) for n in range(concurrency)))
    wall_s = time.perf_counter() - started
    return LevelRun(wall_s, [timing for timings in results for timing in timings])


async def run(clients: Clients, call: TextCall, sizes: StreamSizes, progress: bool) -> dict:
    await clients.ready()
    for side in STREAM_SIDES:
        await clients.stream(side, call, 0)  # warm
    levels: dict[str, dict[str, Any]] = {side: {} for side in STREAM_SIDES}
    steps = len(sizes.levels) * len(STREAM_SIDES)
    with tqdm(total=steps, desc="streams", disable=not progress) as bar:
        for level in sizes.levels:
            for side in STREAM_SIDES:
                bar.set_postfix_str(f"{side} x{level}")
                outcome = await run_level(
                    clients, side, call, level, sizes.streams_per_slot, first_seed=1000 * level
                )
                levels[side][str(level)] = outcome.figures()
                bar.update()
    return summarise(levels, sizes)


def summarise(levels: dict[str, dict[str, Any]], sizes: StreamSizes) -> dict[str, Any]:
    """Each level against one stream: throughput gain and first-token slowdown."""
    one = str(sizes.levels[0])
    for figures_by_level in levels.values():
        idle = figures_by_level[one]
        for figures in figures_by_level.values():
            figures["tokens_per_s_vs_1"] = figures["tokens_per_s"] / idle["tokens_per_s"]
            figures["first_token_vs_idle"] = (
                figures["first_token_p50_ms"] / idle["first_token_p50_ms"]
            )
    return {"sizes": asdict(sizes), "levels": levels}


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #8's targets, on the user's path (the gateway), at the highest level.

    The first-token row also quotes Triton and the service, to show which hop
    adds the wait.
    """
    top = str(results["sizes"]["levels"][-1])
    figures = results["levels"]["gateway"][top]
    gain, slowdown = figures["tokens_per_s_vs_1"], figures["first_token_vs_idle"]
    inner = ", ".join(
        f"{side} {results['levels'][side][top]['first_token_vs_idle']:.2f}x"
        for side in STREAM_SIDES
        if side != "gateway"
    )
    return [
        {
            "target": f"{top} streams >= {THROUGHPUT_MIN_GAIN:g}x the tokens/s of one "
            "(gateway, demo GPT-2)",
            "figure": f"{gain:.2f}x ({figures['tokens_per_s']:.0f} tokens/s)",
            "met": gain >= THROUGHPUT_MIN_GAIN,
        },
        {
            "target": f"time to first token at {top} streams < {FIRST_TOKEN_MAX_RATIO:g}x idle "
            "(gateway)",
            "figure": f"{slowdown:.2f}x ({figures['first_token_p50_ms']:.1f} ms p50; {inner})",
            "met": slowdown < FIRST_TOKEN_MAX_RATIO,
        },
    ]


def measure(
    addresses: Addresses, work: Workloads, sizes: StreamSizes, progress: bool = True
) -> dict[str, Any]:
    call = TextCall(work.text.prompt_ids, sizes.tokens)
    return run_with_clients(addresses, lambda clients: run(clients, call, sizes, progress))


def report(results: dict[str, Any]) -> str:
    lines = [f"concurrent token streams of up to {results['sizes']['tokens']} tokens"]
    header = f"{'':10s}{'streams':>8s}{'tokens/s':>10s}{'vs 1':>7s}"
    header += f"{'TTFT p50':>10s}{'p95':>8s}{'vs idle':>9s}{'ITL p50':>9s}"
    lines.append(header + "   (ms)")
    for side, by_level in results["levels"].items():
        for level, f in by_level.items():
            lines.append(
                f"{side:10s}{level:>8s}{f['tokens_per_s']:10.0f}{f['tokens_per_s_vs_1']:6.2f}x"
                f"{f['first_token_p50_ms']:10.1f}{f['first_token_p95_ms']:8.1f}"
                f"{f['first_token_vs_idle']:8.2f}x{f['inter_token_p50_ms']:9.2f}"
            )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for side, colour in zip(STREAM_SIDES, ("#e8a33d", "#5b8fd1", "#3b5aa0"), strict=True):
        by_level = results["levels"][side]
        levels = [int(level) for level in by_level]
        left.plot(levels, [f["tokens_per_s"] for f in by_level.values()], "o-", color=colour)
        right.plot(levels, [f["first_token_p50_ms"] for f in by_level.values()], "o-",
                   color=colour, label=side)  # fmt: skip
    for axis, label in ((left, "aggregate tokens/s"), (right, "time to first token p50 (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(results["sizes"]["levels"], [str(n) for n in results["sizes"]["levels"]])
        axis.set_xlabel("concurrent streams")
        axis.set_title(label)
        axis.set_ylim(bottom=0)
    right.legend()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
