"""What the gateway costs: the same calls through it and straight to the backend, side by side.

``python -m bench.gateway`` starts the local stack (demo models, an API key
on the gateway, as in production), then measures in alternating rounds so
both sides see the same machine noise:

- a cheap call (ListModels), one at a time: added latency p50/p99;
- GenerateImages at concurrency 8: throughput ratio gateway / direct;
- a token stream (StreamText): time to first token and tokens/s.

A bare grpc.aio pass-through proxy (``bench.passthrough``) is measured in
the same rounds: the floor of any Python gRPC hop on the machine, so the
gateway's own cost is what it adds on top.

Figures go to stdout, ``bench/results/gateway.json`` and ``gateway.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc import aio
from tqdm import tqdm

from bench.common import RESULTS_DIR, bench_stack, machine, percentile
from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from genmedia_shared.paths import REPO_ROOT
from services.common.registry import (
    BACKENDS,
    GATEWAY,
    IMAGE_GENERATION,
    IMAGE_TRANSLATION,
    TEXT_GENERATION,
)
from services.launcher.stack import Stack, free_port

SIDES = ("direct", "passthrough", "gateway")


@dataclass(frozen=True)
class Endpoints:
    """Where each side of the comparison is reached."""

    gateway: str
    image_generation: str
    image_translation: str
    text_generation: str
    gateway_metadata: tuple[tuple[str, str], ...] = ()
    passthrough: str | None = None
    """A bare pass-through proxy in front of the same backends, if one runs."""


@dataclass(frozen=True)
class Sizes:
    rounds: int = 4
    cheap_calls: int = 500
    """Per side and round."""
    images_seconds: float = 5.0
    """Per side and round."""
    images_concurrency: int = 8
    streams: int = 3
    """Per side and round."""
    stream_tokens: int = 64

    @classmethod
    def quick(cls) -> Sizes:
        return cls(rounds=1, cheap_calls=30, images_seconds=1.0, streams=1, stream_tokens=8)


@dataclass
class SideFigures:
    cheap_ms: list[float] = field(default_factory=list)
    images: int = 0
    images_seconds: float = 0.0
    first_token_ms: list[float] = field(default_factory=list)
    stream_tokens: int = 0
    stream_seconds: float = 0.0


class Bench:
    def __init__(self, endpoints: Endpoints, sizes: Sizes) -> None:
        self.endpoints = endpoints
        self.sizes = sizes
        self._channels: dict[str, aio.Channel] = {}
        self.sides = SIDES if endpoints.passthrough else ("direct", "gateway")
        self.figures = {side: SideFigures() for side in self.sides}

    def _target(self, side: str, backend_address: str) -> tuple[aio.Channel, tuple]:
        if side == "gateway":
            return self._channels[self.endpoints.gateway], self.endpoints.gateway_metadata
        if side == "passthrough":
            return self._channels[self.endpoints.passthrough or ""], ()
        return self._channels[backend_address], ()

    async def cheap(self, side: str) -> None:
        channel, metadata = self._target(side, self.endpoints.image_translation)
        stub = trans_grpc.ImageTranslationServiceStub(channel)
        request = trans_pb.ListModelsRequest()
        for _ in range(self.sizes.cheap_calls):
            started = time.perf_counter()
            await stub.ListModels(request, metadata=metadata, timeout=10)
            self.figures[side].cheap_ms.append((time.perf_counter() - started) * 1000)

    async def images(self, side: str) -> None:
        channel, metadata = self._target(side, self.endpoints.image_generation)
        stub = gen_grpc.ImageGenerationServiceStub(channel)
        stop_at = time.perf_counter() + self.sizes.images_seconds
        started = time.perf_counter()
        done = 0

        async def worker(number: int) -> None:
            nonlocal done
            seed = number * 100_000
            while time.perf_counter() < stop_at:
                seed += 1
                request = gen_pb.GenerateImagesRequest(
                    classes=[gen_pb.ClassSelector(id=seed % 10)], count=1, seed=seed
                )
                reply = await stub.GenerateImages(request, metadata=metadata, timeout=60)
                done += len(reply.images)

        await asyncio.gather(*(worker(n) for n in range(self.sizes.images_concurrency)))
        self.figures[side].images += done
        self.figures[side].images_seconds += time.perf_counter() - started

    async def stream(self, side: str) -> None:
        channel, metadata = self._target(side, self.endpoints.text_generation)
        stub = text_grpc.TextGenerationServiceStub(channel)
        for number in range(self.sizes.streams):
            request = text_pb.GenerateTextRequest(
                prompt="Return the", max_new_tokens=self.sizes.stream_tokens, seed=number,
                temperature=1.0,
            )  # fmt: skip
            started = time.perf_counter()
            first: float | None = None
            final = None
            async for message in stub.StreamText(request, metadata=metadata, timeout=120):
                if first is None:
                    first = time.perf_counter() - started
                final = message
            figures = self.figures[side]
            figures.first_token_ms.append((first or 0.0) * 1000)
            figures.stream_tokens += final.usage.generated_tokens if final is not None else 0
            figures.stream_seconds += time.perf_counter() - started

    async def run(self, progress: bool = True) -> dict[str, object]:
        phases: list[Callable[[str], Awaitable[None]]] = [self.cheap, self.images, self.stream]
        steps = self.sizes.rounds * len(phases) * len(self.sides)
        # Channels belong to the running event loop, so they are opened here.
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        endpoints = self.endpoints
        self._channels = {
            address: aio.insecure_channel(address, options=options)
            for address in {
                endpoints.gateway,
                endpoints.image_generation,
                endpoints.image_translation,
                endpoints.text_generation,
                endpoints.passthrough,
            }
            if address
        }
        with tqdm(total=steps, desc="gateway bench", disable=not progress) as bar:
            # Warm both paths (connections, caches, Triton's first batches).
            for side in self.sides:
                await self._target(side, self.endpoints.image_translation)[0].channel_ready()
            for round_number in range(self.sizes.rounds):
                for phase in phases:
                    # Alternate which side goes first, so drift affects both alike.
                    order = self.sides if round_number % 2 == 0 else self.sides[::-1]
                    for side in order:
                        bar.set_postfix_str(f"{phase.__name__} {side}")
                        await phase(side)
                        bar.update()
        await asyncio.gather(*(c.close() for c in self._channels.values()))
        return self.summary()

    def summary(self) -> dict[str, object]:
        sides, figures = self.sides, self.figures
        p50 = {s: percentile(figures[s].cheap_ms, 50) for s in sides}
        p99 = {s: percentile(figures[s].cheap_ms, 99) for s in sides}
        images_per_s = {s: figures[s].images / figures[s].images_seconds for s in sides}
        tokens_per_s = {s: figures[s].stream_tokens / figures[s].stream_seconds for s in sides}
        first_token = {s: statistics.median(figures[s].first_token_ms) for s in sides}

        def added(values: dict[str, float]) -> dict[str, float]:
            return {s: values[s] - values["direct"] for s in sides if s != "direct"}

        def ratio(values: dict[str, float]) -> dict[str, float]:
            return {s: values[s] / values["direct"] for s in sides if s != "direct"}

        return {
            "sides": list(sides),
            "cheap_call": {
                "method": "ImageTranslationService/ListModels, one call at a time",
                "calls_per_side": len(figures["direct"].cheap_ms),
                "p50_ms": p50,
                "p99_ms": p99,
                "added_p50_ms": added(p50),
                "added_p99_ms": added(p99),
            },
            "generate_images": {
                "concurrency": self.sizes.images_concurrency,
                "images_per_side": {s: figures[s].images for s in sides},
                "images_per_s": images_per_s,
                "throughput_ratio": ratio(images_per_s),
            },
            "stream_text": {
                "streams_per_side": len(figures["direct"].first_token_ms),
                "tokens_per_stream": self.sizes.stream_tokens,
                "first_token_p50_ms": first_token,
                "added_first_token_ms": added(first_token),
                "tokens_per_s": tokens_per_s,
                "throughput_ratio": ratio(tokens_per_s),
            },
            "sizes": asdict(self.sizes),
            "gateway_auth": "api-key" if self.endpoints.gateway_metadata else "open",
            "raw_cheap_ms": {s: figures[s].cheap_ms for s in sides},
        }


def report(results: dict[str, object]) -> str:
    sides = results["sides"]
    cheap, images, stream = (
        results["cheap_call"], results["generate_images"], results["stream_text"]
    )  # fmt: skip
    rows = [
        ("ListModels p50 (ms)", cheap["p50_ms"], cheap["added_p50_ms"], "{:+.2f} ms"),
        ("ListModels p99 (ms)", cheap["p99_ms"], cheap["added_p99_ms"], "{:+.2f} ms"),
        (f"GenerateImages c={images['concurrency']} (img/s)", images["images_per_s"],
         images["throughput_ratio"], "x{:.3f}"),
        ("StreamText first token p50 (ms)", stream["first_token_p50_ms"],
         stream["added_first_token_ms"], "{:+.2f} ms"),
        ("StreamText (tokens/s)", stream["tokens_per_s"], stream["throughput_ratio"], "x{:.3f}"),
    ]  # fmt: skip
    hops = [s for s in sides if s != "direct"]
    header = f"{'':34s}" + "".join(f"{s:>12s}" for s in sides)
    header += "".join(f"{s + ' vs direct':>22s}" for s in hops)
    lines = [header]
    for label, values, versus, style in rows:
        line = f"{label:34s}" + "".join(f"{values[s]:12.2f}" for s in sides)
        line += "".join(f"{style.format(versus[s]):>22s}" for s in hops)
        lines.append(line)
    machine_info = results.get("machine", {})
    lines.append(f"machine: {machine_info.get('cpu')}, {machine_info.get('cpus')} CPUs")
    return "\n".join(lines)


def plot(results: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = results["sides"]
    colours = {"direct": "#888", "passthrough": "#aac", "gateway": "#37a"}
    cheap, images, stream = (
        results["raw_cheap_ms"], results["generate_images"], results["stream_text"]
    )  # fmt: skip
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    left.boxplot([cheap[s] for s in sides], showfliers=False)
    left.set_xticks(range(1, len(sides) + 1), sides)
    left.set_title("ListModels latency (ms), one at a time")
    middle.bar(sides, [images["images_per_s"][s] for s in sides], color=[colours[s] for s in sides])
    middle.set_title(f"GenerateImages, concurrency {images['concurrency']} (images/s)")
    right.bar(sides, [stream["tokens_per_s"][s] for s in sides], color=[colours[s] for s in sides])
    right.set_title("StreamText (tokens/s)")
    figure.suptitle(f"gateway vs direct: {results['machine']['cpu']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def measure(
    endpoints: Endpoints, sizes: Sizes, out_dir: Path, progress: bool = True
) -> dict[str, object]:
    """Runs the bench against running endpoints; writes JSON and PNG into ``out_dir``."""
    results = asyncio.run(Bench(endpoints, sizes).run(progress))
    results["machine"] = machine()
    out_dir.mkdir(parents=True, exist_ok=True)
    # The raw samples feed the plot; the JSON keeps the figures (small enough for git).
    figures = {key: value for key, value in results.items() if key != "raw_cheap_ms"}
    (out_dir / "gateway.json").write_text(json.dumps(figures, indent=2))
    plot(results, out_dir / "gateway.png")
    return results


@contextlib.contextmanager
def passthrough_beside(stack: Stack) -> Iterator[str]:
    """A bare pass-through proxy in front of ``stack``'s backends; yields its address."""
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.passthrough", "--port", address.rsplit(":", 1)[1],
         *(f"--backend={p.name}={stack.ports.address(p)}" for p in BACKENDS)],
        cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def stack_endpoints(
    stack: Stack, passthrough: str | None, gateway_metadata: tuple[tuple[str, str], ...] = ()
) -> Endpoints:
    return Endpoints(
        gateway=stack.ports.address(GATEWAY),
        image_generation=stack.ports.address(IMAGE_GENERATION),
        image_translation=stack.ports.address(IMAGE_TRANSLATION),
        text_generation=stack.ports.address(TEXT_GENERATION),
        gateway_metadata=gateway_metadata,
        passthrough=passthrough,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=REPO_ROOT / "models" / "demo")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes()

    with bench_stack(args.weights) as running, passthrough_beside(running.stack) as passthrough:
        endpoints = stack_endpoints(running.stack, passthrough, running.gateway_metadata)
        results = measure(endpoints, sizes, args.out)
    print(report(results))
    print(f"written: {args.out / 'gateway.json'}, {args.out / 'gateway.png'}")


if __name__ == "__main__":
    main()
