"""The HTTP door against the gRPC door of the same gateway, side by side in one run.

``python -m bench.http_door`` starts the local stack (demo models, an API key on the
gateway) and measures both doors in alternating rounds, so both see the same noise:

- a cheap call, one at a time: gRPC ``ImageTranslationService/ListModels`` against its
  JSON route ``GET /v1/genmedia/translation-models``: added p50 (target <= +1 ms);
- streamed text at 16 concurrent streams: gRPC ``StreamText`` against OpenAI
  ``/v1/completions`` with ``stream: true`` (SSE): tokens/s ratio (target >= 0.9x);
- images at 8 callers: gRPC ``GenerateImages`` against OpenAI ``/v1/images/generations``
  (b64_json): images/s ratio (target >= 0.9x).

The HTTP client is aiohttp (C-accelerated, keep-alive), the gRPC one grpc.aio.
Figures go to stdout, ``bench/results/http_door.json`` and ``http_door.png``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from grpc import aio
from tqdm import tqdm

from bench.common import bench_stack, figure_bench_arguments, judged, percentile, publish
from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from genmedia_shared.paths import REPO_ROOT

SIDES = ("grpc", "http")
TARGETS = {"added_p50_ms": 1.0, "stream_tokens_ratio": 0.9, "images_ratio": 0.9}
"""Issue #20's figures: the HTTP door's cost over the gRPC door's."""


@dataclass(frozen=True)
class Sizes:
    rounds: int = 4
    cheap_calls: int = 400
    """Per side and round."""
    streams: int = 16
    stream_tokens: int = 64
    images_seconds: float = 5.0
    """Per side and round."""
    images_concurrency: int = 8

    @classmethod
    def quick(cls) -> Sizes:
        return cls(rounds=1, cheap_calls=20, streams=2, stream_tokens=8, images_seconds=1.0)


@dataclass
class SideFigures:
    cheap_ms: list[float] = field(default_factory=list)
    stream_tokens: int = 0
    stream_seconds: float = 0.0
    first_token_ms: list[float] = field(default_factory=list)
    images: int = 0
    images_seconds: float = 0.0


class Bench:
    def __init__(self, grpc_address: str, http_url: str, key: str, sizes: Sizes) -> None:
        self.grpc_address = grpc_address
        self.http_url = http_url
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.headers = {"authorization": f"Bearer {key}"}
        self.sizes = sizes
        self.figures = {side: SideFigures() for side in SIDES}
        self.class_names: list[str] = []

    async def run(self, progress: bool = True) -> dict[str, Any]:
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        connector = aiohttp.TCPConnector(limit=64)
        async with (
            aio.insecure_channel(self.grpc_address, options=options) as channel,
            aiohttp.ClientSession(
                self.http_url, connector=connector, headers=self.headers
            ) as session,
        ):
            self.channel, self.session = channel, session
            listed = await gen_grpc.ImageGenerationServiceStub(channel).ListClasses(
                gen_pb.ListClassesRequest(), metadata=self.metadata, timeout=30
            )
            self.class_names = [image_class.name for image_class in listed.classes[:10]]
            phases: list[Callable[[str], Awaitable[None]]] = [self.cheap, self.streams, self.images]
            steps = self.sizes.rounds * len(phases) * len(SIDES)
            with tqdm(total=steps, desc="HTTP door bench", disable=not progress) as bar:
                for round_number in range(self.sizes.rounds):
                    for phase in phases:
                        order = SIDES if round_number % 2 == 0 else SIDES[::-1]
                        for side in order:
                            bar.set_postfix_str(f"{phase.__name__} {side}")
                            await phase(side)
                            bar.update()
        return self.summary()

    # -- one call at a time ------------------------------------------------------------

    async def cheap(self, side: str) -> None:
        stub = trans_grpc.ImageTranslationServiceStub(self.channel)
        request = trans_pb.ListModelsRequest()
        for _ in range(self.sizes.cheap_calls):
            started = time.perf_counter()
            if side == "grpc":
                await stub.ListModels(request, metadata=self.metadata, timeout=10)
            else:
                async with self.session.get("/v1/genmedia/translation-models") as reply:
                    reply.raise_for_status()
                    await reply.read()
            self.figures[side].cheap_ms.append((time.perf_counter() - started) * 1000)

    # -- concurrent streams --------------------------------------------------------------

    async def streams(self, side: str) -> None:
        one = self._grpc_stream if side == "grpc" else self._http_stream
        started = time.perf_counter()
        results = await asyncio.gather(*(one(number) for number in range(self.sizes.streams)))
        figures = self.figures[side]
        figures.stream_seconds += time.perf_counter() - started
        for tokens, first_ms in results:
            figures.stream_tokens += tokens
            figures.first_token_ms.append(first_ms)

    async def _grpc_stream(self, number: int) -> tuple[int, float]:
        stub = text_grpc.TextGenerationServiceStub(self.channel)
        request = text_pb.GenerateTextRequest(
            prompt="Return the",
            max_new_tokens=self.sizes.stream_tokens,
            seed=number,
            temperature=1.0,
        )
        started = time.perf_counter()
        first, tokens = 0.0, 0
        async for message in stub.StreamText(request, metadata=self.metadata, timeout=300):
            first = first or (time.perf_counter() - started) * 1000
            if message.HasField("usage"):
                tokens = message.usage.generated_tokens
        return tokens, first

    async def _http_stream(self, number: int) -> tuple[int, float]:
        body = {
            "model": "gpt2",
            "prompt": "Return the",
            "max_tokens": self.sizes.stream_tokens,
            "seed": number,
            "temperature": 1.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        first, tokens = 0.0, 0
        async with self.session.post("/v1/completions", json=body) as reply:
            reply.raise_for_status()
            async for line in reply.content:
                if not line.startswith(b"data: {"):
                    continue
                first = first or (time.perf_counter() - started) * 1000
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        return tokens, first

    # -- images at concurrency ---------------------------------------------------------

    async def images(self, side: str) -> None:
        stub = gen_grpc.ImageGenerationServiceStub(self.channel)
        stop_at = time.perf_counter() + self.sizes.images_seconds
        started = time.perf_counter()
        done = 0

        async def worker(number: int) -> None:
            nonlocal done
            seed = number * 100_000
            while time.perf_counter() < stop_at:
                seed += 1
                name = self.class_names[seed % len(self.class_names)]
                if side == "grpc":
                    request = gen_pb.GenerateImagesRequest(
                        classes=[gen_pb.ClassSelector(name=name)], count=1, seed=seed
                    )
                    reply = await stub.GenerateImages(request, metadata=self.metadata, timeout=60)
                    done += len(reply.images)
                else:
                    body = {"model": "biggan", "prompt": name, "n": 1, "seed": seed}
                    async with self.session.post("/v1/images/generations", json=body) as answer:
                        answer.raise_for_status()
                        done += len((await answer.json())["data"])

        await asyncio.gather(*(worker(n) for n in range(self.sizes.images_concurrency)))
        self.figures[side].images += done
        self.figures[side].images_seconds += time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        figures = self.figures
        p50 = {s: percentile(figures[s].cheap_ms, 50) for s in SIDES}
        p99 = {s: percentile(figures[s].cheap_ms, 99) for s in SIDES}
        tokens_per_s = {s: figures[s].stream_tokens / figures[s].stream_seconds for s in SIDES}
        images_per_s = {s: figures[s].images / figures[s].images_seconds for s in SIDES}
        first_token = {s: statistics.median(figures[s].first_token_ms) for s in SIDES}
        measured = {
            "added_p50_ms": p50["http"] - p50["grpc"],
            "stream_tokens_ratio": tokens_per_s["http"] / tokens_per_s["grpc"],
            "images_ratio": images_per_s["http"] / images_per_s["grpc"],
        }
        targets = judged(measured, TARGETS, at_most=("added_p50_ms",))
        return {
            "cheap_call": {
                "calls": "gRPC ImageTranslationService/ListModels vs "
                "GET /v1/genmedia/translation-models",
                "calls_per_side": len(figures["grpc"].cheap_ms),
                "p50_ms": p50,
                "p99_ms": p99,
            },
            "streams": {
                "concurrent": self.sizes.streams,
                "tokens_per_stream": self.sizes.stream_tokens,
                "tokens_per_s": tokens_per_s,
                "first_token_p50_ms": first_token,
            },
            "images": {"concurrency": self.sizes.images_concurrency, "images_per_s": images_per_s},
            "targets": targets,
            "sizes": asdict(self.sizes),
            "raw_cheap_ms": {s: figures[s].cheap_ms for s in SIDES},
        }


def report(results: dict[str, Any]) -> str:
    cheap, streams, images = results["cheap_call"], results["streams"], results["images"]
    rows = [
        ("cheap call p50 (ms)", cheap["p50_ms"]),
        ("cheap call p99 (ms)", cheap["p99_ms"]),
        (f"{streams['concurrent']} streams (tokens/s)", streams["tokens_per_s"]),
        ("first token p50 (ms)", streams["first_token_p50_ms"]),
        (f"images at {images['concurrency']} callers (img/s)", images["images_per_s"]),
    ]
    lines = [f"{'':34s}{'gRPC':>10s}{'HTTP':>10s}"]
    lines += [f"{label:34s}{values['grpc']:10.2f}{values['http']:10.2f}" for label, values in rows]
    for name, target in results["targets"].items():
        verdict = "met" if target["met"] else "MISSED"
        lines.append(f"{name}: {target['measured']:.3f} (target {target['target']}) {verdict}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = ["#888", "#37a"]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    raw = results["raw_cheap_ms"]
    left.boxplot([raw[s] for s in SIDES], showfliers=False)
    left.set_xticks([1, 2], ["gRPC", "HTTP"])
    left.set_title("cheap call latency (ms), one at a time")
    streams, images = results["streams"], results["images"]
    middle.bar(["gRPC", "HTTP"], [streams["tokens_per_s"][s] for s in SIDES], color=colours)
    middle.set_title(f"{streams['concurrent']} concurrent streams (tokens/s)")
    right.bar(["gRPC", "HTTP"], [images["images_per_s"][s] for s in SIDES], color=colours)
    right.set_title(f"images at {images['concurrency']} callers (images/s)")
    figure.suptitle(f"HTTP door vs gRPC door: {results['machine']['cpu']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def measure(
    grpc_address: str, http_url: str, key: str, sizes: Sizes, progress: bool = True
) -> dict[str, Any]:
    return asyncio.run(Bench(grpc_address, http_url, key, sizes).run(progress))


def main() -> None:
    parser = figure_bench_arguments(__doc__ or "")
    parser.add_argument("--weights", type=Path, default=REPO_ROOT / "models" / "demo")
    args = parser.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes()
    with bench_stack(args.weights) as running:
        gateway = running.stack.gateways[0]
        key = running.gateway_metadata[0][1].removeprefix("Bearer ")
        results = measure(gateway.address, gateway.http_url, key, sizes)
    raw = results.pop("raw_cheap_ms")

    def plot_with_raw(figures: dict[str, Any], path: Path) -> None:
        plot({**figures, "raw_cheap_ms": raw}, path)

    publish(results, "http_door", report, plot_with_raw, args.out)


if __name__ == "__main__":
    main()
