"""Dynamic batching: GenerateImages and TranslateImage throughput at concurrency 1, 4 and 16.

Calls go through the gateway, one image each, from ``c`` concurrent callers
for a fixed time per level; levels take turns round by round so drift hits
them alike. Triton's own statistics (``batch_stats``: executions per batch
size) are read before and after each level, so the figures show the batch
sizes Triton formed, not just the calls made.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tritonclient.grpc import aio as triton_aio

from bench.common import median
from bench.workloads import Addresses, Clients, Workloads, run_with_clients
from tools.figures import pyplot

RPCS = ("GenerateImages", "TranslateImage")


@dataclass(frozen=True)
class BatchingSizes:
    levels: tuple[int, ...] = (1, 4, 16)
    seconds: float = 6.0
    """Per level and round."""
    rounds: int = 3

    @classmethod
    def quick(cls) -> BatchingSizes:
        return cls(seconds=0.8, rounds=1)


@dataclass
class LevelFigures:
    calls: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    batches: Counter[int] = field(default_factory=Counter)
    """Model executions per batch size."""


async def batch_counts(triton: triton_aio.InferenceServerClient, model: str) -> Counter[int]:
    """Executions so far per batch size, from Triton's inference statistics."""
    stats = await triton.get_inference_statistics(model, as_json=True)
    counts: Counter[int] = Counter()
    for model_stats in stats.get("model_stats", []):
        for batch in model_stats.get("batch_stats", []):
            counts[int(batch["batch_size"])] += int(batch["compute_infer"].get("count", 0))
    return counts


class BatchingBench:
    def __init__(self, clients: Clients, work: Workloads, sizes: BatchingSizes) -> None:
        self.clients = clients
        self.work = work
        self.sizes = sizes
        self.figures = {rpc: {c: LevelFigures() for c in sizes.levels} for rpc in RPCS}
        self._triton = triton_aio.InferenceServerClient(clients.addresses.triton)

    def _model(self, rpc: str) -> str:
        return "biggan" if rpc == "GenerateImages" else self.work.translate.triton_model

    async def _call(self, rpc: str, seed: int) -> None:
        if rpc == "GenerateImages":
            stub, metadata = self.clients.images("gateway")
            await stub.GenerateImages(self.work.images.request(seed), metadata=metadata, timeout=60)
        else:
            stub, metadata = self.clients.translation("gateway")
            await stub.TranslateImage(self.work.translate.request(), metadata=metadata, timeout=60)

    async def level(self, rpc: str, concurrency: int) -> None:
        figures = self.figures[rpc][concurrency]
        before = await batch_counts(self._triton, self._model(rpc))
        stop_at = time.perf_counter() + self.sizes.seconds
        started = time.perf_counter()

        async def caller(number: int) -> None:
            seed = number * 1_000_000
            while time.perf_counter() < stop_at:
                seed += 1
                call_started = time.perf_counter()
                await self._call(rpc, seed)
                figures.latencies_ms.append((time.perf_counter() - call_started) * 1000)
                figures.calls += 1

        await asyncio.gather(*(caller(n) for n in range(concurrency)))
        figures.seconds += time.perf_counter() - started
        figures.batches += await batch_counts(self._triton, self._model(rpc)) - before

    async def run(self, progress: bool = True) -> dict[str, Any]:
        await self.clients.ready()
        for rpc in RPCS:
            await self._call(rpc, 0)  # warm
        levels = self.sizes.levels
        total = self.sizes.rounds * len(RPCS) * len(levels)
        with tqdm(total=total, desc="batching", disable=not progress) as bar:
            for round_number in range(self.sizes.rounds):
                for rpc in RPCS:
                    for concurrency in levels if round_number % 2 == 0 else levels[::-1]:
                        bar.set_postfix_str(f"{rpc} c={concurrency}")
                        await self.level(rpc, concurrency)
                        bar.update()
        await self._triton.close()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        results: dict[str, Any] = {"sizes": asdict(self.sizes), "rpcs": {}}
        for rpc, by_level in self.figures.items():
            base = by_level[self.sizes.levels[0]]
            base_rate = base.calls / base.seconds
            levels = {}
            for concurrency, figures in by_level.items():
                rate = figures.calls / figures.seconds
                executions = sum(figures.batches.values())
                rows = sum(size * count for size, count in figures.batches.items())
                levels[str(concurrency)] = {
                    "images_per_s": rate,
                    "vs_concurrency_1": rate / base_rate,
                    "latency_p50_ms": median(figures.latencies_ms),
                    "executions": executions,
                    "mean_batch": rows / executions if executions else 0.0,
                    "batch_sizes": {str(k): v for k, v in sorted(figures.batches.items())},
                }
            results["rpcs"][rpc] = {"model": self._model(rpc), "levels": levels}
        return results


def measure(
    addresses: Addresses, work: Workloads, sizes: BatchingSizes, progress: bool = True
) -> dict[str, Any]:
    return run_with_clients(
        addresses, lambda clients: BatchingBench(clients, work, sizes).run(progress)
    )


def report(results: dict[str, Any]) -> str:
    lines = [
        "dynamic batching through the gateway, one image per call",
        f"{'':16s}{'c':>4s}{'images/s':>10s}{'vs c=1':>8s}{'p50 ms':>9s}{'mean batch':>12s}"
        "  batch sizes (executions)",
    ]
    for rpc, figures in results["rpcs"].items():
        for concurrency, level in figures["levels"].items():
            sizes = ", ".join(f"{size}:{count}" for size, count in level["batch_sizes"].items())
            lines.append(
                f"{rpc:16s}{concurrency:>4s}{level['images_per_s']:10.1f}"
                f"{level['vs_concurrency_1']:7.2f}x{level['latency_p50_ms']:9.1f}"
                f"{level['mean_batch']:12.2f}  {sizes}"
            )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    """Throughput per concurrency level (left) and the batch sizes Triton formed (right)."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for rpc, figures in results["rpcs"].items():
        levels = figures["levels"]
        left.plot(
            [int(c) for c in levels], [levels[c]["images_per_s"] for c in levels],
            marker="o", label=rpc,
        )  # fmt: skip
    left.set_xscale("log", base=2)
    left.set_xlabel("concurrent callers")
    left.set_ylabel("images/s")
    left.set_title("throughput through the gateway")
    left.legend()
    bars = [
        (f"{rpc}\nc={c}", level["batch_sizes"])
        for rpc, figures in results["rpcs"].items()
        for c, level in figures["levels"].items()
    ]
    largest = max((int(size) for _, sizes in bars for size in sizes), default=1)
    bottoms = [0.0] * len(bars)
    colours = plt.get_cmap("viridis")
    for size in range(1, largest + 1):
        # Share of the images that ran in a batch of this size.
        shares = []
        for _, sizes in bars:
            rows = sum(int(s) * n for s, n in sizes.items()) or 1
            shares.append(size * sizes.get(str(size), 0) / rows)
        if any(shares):
            right.bar(
                range(len(bars)), shares, bottom=bottoms, label=f"batch {size}",
                color=colours(size / largest),
            )  # fmt: skip
            bottoms = [b + s for b, s in zip(bottoms, shares, strict=True)]
    right.set_xticks(range(len(bars)), [label for label, _ in bars], fontsize=7)
    right.set_ylabel("share of images")
    right.set_title("batch size each image ran in (Triton's statistics)")
    right.legend(fontsize=6, ncol=2)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
