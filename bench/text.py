"""Token streaming: time to first token and inter-token latency, stack against in-process.

The same prompts, seeds and token counts are streamed by the model's own
generate loop in the bench process, by Triton's ``gpt2`` directly, through
the text-generation service and through the gateway (``StreamText``), one
stream at a time, sides interleaved round by round. Inter-token latency is
a stream's time after its first token over the tokens that followed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.common import median
from bench.inprocess import InProcessModels
from bench.workloads import (
    SIDES,
    Addresses,
    Clients,
    StreamTiming,
    TextCall,
    Workloads,
    run_with_clients,
)
from tools.figures import pyplot


@dataclass(frozen=True)
class TextSizes:
    rounds: int = 4
    streams: int = 8
    """Per side and round."""
    tokens: int = 64

    @classmethod
    def quick(cls) -> TextSizes:
        return cls(rounds=1, streams=2, tokens=8)


@dataclass
class TextBench:
    clients: Clients
    models: InProcessModels
    call: TextCall
    sizes: TextSizes
    timings: dict[str, list[StreamTiming]] = field(default_factory=dict)

    async def _stream(self, side: str, seed: int) -> StreamTiming:
        if side == "in-process":
            return self.models.stream(self.call, seed)
        return await self.clients.stream(side, self.call, seed)

    async def run(self, progress: bool = True) -> dict[str, Any]:
        await self.clients.ready()
        for side in SIDES:
            await self._stream(side, 0)  # warm
            self.timings[side] = []
        with tqdm(total=self.sizes.rounds * len(SIDES), desc="text", disable=not progress) as bar:
            for round_number in range(self.sizes.rounds):
                for side in SIDES if round_number % 2 == 0 else SIDES[::-1]:
                    bar.set_postfix_str(side)
                    for number in range(self.sizes.streams):
                        seed = 1 + round_number * self.sizes.streams + number
                        self.timings[side].append(await self._stream(side, seed))
                    bar.update()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        first = {s: median([t.first_s * 1000 for t in self.timings[s]]) for s in SIDES}
        inter = {s: median([t.inter_token_s * 1000 for t in self.timings[s]]) for s in SIDES}
        rate = {
            s: sum(t.tokens for t in self.timings[s]) / sum(t.total_s for t in self.timings[s])
            for s in SIDES
        }
        return {
            "sizes": asdict(self.sizes),
            "tokens_per_stream": {s: median([t.tokens for t in self.timings[s]]) for s in SIDES},
            "first_token_p50_ms": first,
            "inter_token_p50_ms": inter,
            "tokens_per_s": rate,
            "first_token_vs_in_process": {s: first[s] / first["in-process"] for s in SIDES},
            "inter_token_vs_in_process": {s: inter[s] / inter["in-process"] for s in SIDES},
        }


def measure(
    addresses: Addresses,
    models: InProcessModels,
    work: Workloads,
    sizes: TextSizes,
    progress: bool = True,
) -> dict[str, Any]:
    call = TextCall(work.text.prompt_ids, sizes.tokens)
    return run_with_clients(
        addresses, lambda clients: TextBench(clients, models, call, sizes).run(progress)
    )


def report(results: dict[str, Any]) -> str:
    lines = [
        f"token streams of up to {results['sizes']['tokens']} tokens, one at a time",
        f"{'':28s}" + "".join(f"{side:>12s}" for side in SIDES),
    ]
    rows = [
        ("first token p50 (ms)", "first_token_p50_ms", "{:12.2f}"),
        ("  vs in-process", "first_token_vs_in_process", "{:11.2f}x"),
        ("inter-token p50 (ms)", "inter_token_p50_ms", "{:12.2f}"),
        ("  vs in-process", "inter_token_vs_in_process", "{:11.2f}x"),
        ("tokens/s", "tokens_per_s", "{:12.1f}"),
    ]
    for label, key, style in rows:
        lines.append(f"{label:28s}" + "".join(style.format(results[key][s]) for s in SIDES))
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    colours = ["#999", "#e8a33d", "#5b8fd1", "#3b5aa0"]
    for axis, key, label in (
        (left, "first_token_p50_ms", "time to first token, p50 (ms)"),
        (right, "inter_token_p50_ms", "inter-token latency, p50 (ms)"),
    ):
        axis.bar(SIDES, [results[key][s] for s in SIDES], color=colours)
        axis.set_title(label)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
