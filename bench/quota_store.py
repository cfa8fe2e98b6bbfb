"""What sharing the quotas in Redis costs a call: the memory store and the Redis store side by side.

``python -m bench.quota_store`` starts the demo stack, a redis-server and a
second gateway on it, so two gateways stand in front of the same backends:
one keeping the keys' limits in memory (``GENMEDIA_QUOTA_STORE=memory``), one
in Redis. The key has every limit set (rate, concurrency, daily budgets),
high enough never to refuse, so each call runs the whole admission and
settlement. In alternating rounds:

- ListModels one call at a time: p50 added over calling the backend directly,
  and what Redis adds over memory (target: at most +0.3 ms);
- GenerateImages at 8 callers: images/s, Redis over memory (target: 0.95x or more).

Figures go to stdout, ``bench/results/quota_store.json`` and ``quota_store.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from grpc import aio
from tqdm import tqdm

from bench.common import (
    CHANNEL_OPTIONS,
    DEMO_WEIGHTS,
    figure_bench_arguments,
    machine,
    percentile,
)
from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from services.common.registry import GATEWAY, IMAGE_GENERATION, IMAGE_TRANSLATION
from services.gateway.keys import hash_key, new_key
from services.launcher.redis_server import RedisServer
from services.launcher.stack import GatewayReplica, ProcessPorts, Stack, StackPorts, free_port
from tools.figures import pyplot, save_figure, write_json

SIDES = ("direct", "memory", "redis")
ADDED_P50_LIMIT_MS = 0.3
THROUGHPUT_MIN_RATIO = 0.95
HIGH = 10**9
"""Limits no run reaches: every check runs, none refuses."""


@dataclass(frozen=True)
class Sizes:
    rounds: int = 6
    cheap_calls: int = 400
    """Per side and round."""
    images_seconds: float = 4.0
    """Per side and round."""
    images_concurrency: int = 8

    @classmethod
    def quick(cls) -> Sizes:
        return cls(rounds=1, cheap_calls=30, images_seconds=1.0)


class Bench:
    def __init__(self, sides: dict[str, tuple[str, str]], key: str, sizes: Sizes) -> None:
        """``sides``: for each side, the ListModels and GenerateImages addresses."""
        self.sizes = sizes
        self._addresses = sides
        self._metadata = (("authorization", f"Bearer {key}"),)
        self.cheap_ms: dict[str, list[float]] = {side: [] for side in sides}
        self.images: dict[str, int] = dict.fromkeys(sides, 0)
        self.images_seconds: dict[str, float] = dict.fromkeys(sides, 0.0)

    def _metadata_for(self, side: str) -> tuple[tuple[str, str], ...]:
        return () if side == "direct" else self._metadata

    async def cheap(self, side: str, channel: aio.Channel) -> None:
        stub = trans_grpc.ImageTranslationServiceStub(channel)
        request, metadata = trans_pb.ListModelsRequest(), self._metadata_for(side)
        for _ in range(self.sizes.cheap_calls):
            started = time.perf_counter()
            await stub.ListModels(request, metadata=metadata, timeout=10)
            self.cheap_ms[side].append((time.perf_counter() - started) * 1000)

    async def generate(self, side: str, channel: aio.Channel) -> None:
        stub = gen_grpc.ImageGenerationServiceStub(channel)
        metadata = self._metadata_for(side)
        started = time.perf_counter()
        stop_at = started + self.sizes.images_seconds
        done = 0

        async def caller(number: int) -> None:
            nonlocal done
            seed = number * 100_000
            while time.perf_counter() < stop_at:
                seed += 1
                request = gen_pb.GenerateImagesRequest(
                    classes=[gen_pb.ClassSelector(id=seed % 10)], count=1, seed=seed
                )
                reply = await stub.GenerateImages(request, metadata=metadata, timeout=60)
                done += len(reply.images)

        await asyncio.gather(*(caller(n) for n in range(self.sizes.images_concurrency)))
        self.images[side] += done
        self.images_seconds[side] += time.perf_counter() - started

    async def run(self, progress: bool = True) -> dict[str, Any]:
        channels = {
            side: (
                aio.insecure_channel(cheap, options=CHANNEL_OPTIONS),
                aio.insecure_channel(images, options=CHANNEL_OPTIONS),
            )
            for side, (cheap, images) in self._addresses.items()
        }
        sides = list(self._addresses)
        with tqdm(total=self.sizes.rounds * 2 * len(sides), disable=not progress) as bar:
            for side in sides:  # connections, caches, Triton's first batches
                await self.cheap(side, channels[side][0])
            self.cheap_ms = {side: [] for side in sides}
            for number in range(self.sizes.rounds):
                order = sides if number % 2 == 0 else sides[::-1]
                for phase in (self.cheap, self.generate):
                    for side in order:
                        bar.set_postfix_str(f"{phase.__name__} {side}")
                        await phase(side, channels[side][0 if phase == self.cheap else 1])
                        bar.update()
        for pair in channels.values():
            for channel in pair:
                await channel.close()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        p50 = {side: percentile(values, 50) for side, values in self.cheap_ms.items()}
        p99 = {side: percentile(values, 99) for side, values in self.cheap_ms.items()}
        per_s = {side: self.images[side] / self.images_seconds[side] for side in self.images}
        redis_added = p50["redis"] - p50["memory"]
        ratio = per_s["redis"] / per_s["memory"]
        return {
            "cheap_call": {
                "method": "ImageTranslationService/ListModels, one call at a time",
                "calls_per_side": len(self.cheap_ms["direct"]),
                "p50_ms": p50,
                "p99_ms": p99,
                "added_p50_ms": {s: p50[s] - p50["direct"] for s in ("memory", "redis")},
                "redis_over_memory_p50_ms": redis_added,
            },
            "generate_images": {
                "concurrency": self.sizes.images_concurrency,
                "images_per_s": per_s,
                "redis_over_memory": ratio,
            },
            "targets": {
                "redis_added_p50_ms": {
                    "limit": ADDED_P50_LIMIT_MS,
                    "figure": redis_added,
                    "met": redis_added <= ADDED_P50_LIMIT_MS,
                },
                "redis_throughput_ratio": {
                    "limit": THROUGHPUT_MIN_RATIO,
                    "figure": ratio,
                    "met": ratio >= THROUGHPUT_MIN_RATIO,
                },
            },
            "sizes": asdict(self.sizes),
            "raw_cheap_ms": self.cheap_ms,
        }


def report(results: dict[str, Any]) -> str:
    cheap, images = results["cheap_call"], results["generate_images"]
    lines = [f"{'':36s}" + "".join(f"{side:>10s}" for side in SIDES)]
    lines.append(
        f"{'ListModels p50 (ms)':36s}" + "".join(f"{cheap['p50_ms'][s]:10.3f}" for s in SIDES)
    )
    lines.append(
        f"{'ListModels p99 (ms)':36s}" + "".join(f"{cheap['p99_ms'][s]:10.3f}" for s in SIDES)
    )
    lines.append(
        f"{'GenerateImages c=8 (images/s)':36s}"
        + "".join(f"{images['images_per_s'][s]:10.2f}" for s in SIDES)
    )
    for name, target in results["targets"].items():
        verdict = "met" if target["met"] else "NOT met"
        lines.append(f"{name}: {target['figure']:.3f} (limit {target['limit']}): {verdict}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    raw, images = results["raw_cheap_ms"], results["generate_images"]["images_per_s"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.boxplot([raw[side] for side in SIDES], showfliers=False)
    left.set_xticks(range(1, len(SIDES) + 1), SIDES)
    left.set_title("ListModels latency (ms), one at a time")
    right.bar(SIDES, [images[side] for side in SIDES], color=["#888", "#37a", "#c44"])
    right.set_title("GenerateImages at 8 callers (images/s)")
    figure.suptitle("quota store: memory vs Redis, same backends, same run", fontsize=9)
    save_figure(figure, path)


def limited_key(directory: Path) -> tuple[str, Path]:
    """A key with every limit set, out of reach, and the keys file that holds it."""
    key = new_key()
    daily = {"images": HIGH, "megapixels": HIGH, "tokens": HIGH}
    entry = {
        "name": "bench",
        "sha256": hash_key(key),
        "rate_per_s": HIGH,
        "burst": HIGH,
        "max_concurrent": HIGH,
        "daily": daily,
    }
    path = directory / "keys.json"
    path.write_text(json.dumps({"keys": [entry]}))
    return key, path


@contextlib.contextmanager
def two_gateways(weights: Path, scratch: Path) -> Iterator[tuple[Stack, GatewayReplica, str]]:
    """The stack (its gateway on the memory store) and a second gateway on a redis-server."""
    key, keys_file = limited_key(scratch)
    env = {
        "GENMEDIA_AUTH_MODE": "api-keys",
        "GENMEDIA_API_KEYS_FILE": str(keys_file),
        "GENMEDIA_LOG_LEVEL": "warning",
    }
    stack = Stack(weights_dir=weights, work_dir=scratch, ports=StackPorts.free(), extra_env=env)
    redis = RedisServer(port=free_port(), work_dir=scratch / "redis")
    try:
        stack.start(timeout_s=600)
        redis.start()
        second = GatewayReplica("gateway-redis", ProcessPorts(free_port(), free_port()))
        stack.start_process(GATEWAY, second, env={"GENMEDIA_QUOTA_STORE": redis.url})
        stack.wait_serving(GATEWAY, timeout_s=60, replica=second)
        yield stack, second, key
    finally:
        stack.stop()  # the second gateway too
        redis.stop()


def measure(weights: Path, sizes: Sizes, progress: bool = True) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="genmedia-bench-") as scratch,
        two_gateways(weights, Path(scratch)) as (stack, redis_gateway, key),
    ):
        memory = stack.ports.address(GATEWAY)
        sides = {
            "direct": (
                stack.ports.address(IMAGE_TRANSLATION),
                stack.ports.address(IMAGE_GENERATION),
            ),
            "memory": (memory, memory),
            "redis": (redis_gateway.address, redis_gateway.address),
        }
        return asyncio.run(Bench(sides, key, sizes).run(progress))


def main() -> None:
    arguments = figure_bench_arguments(__doc__ or "").parse_args()
    sizes = Sizes.quick() if arguments.quick else Sizes()
    results = measure(DEMO_WEIGHTS, sizes)
    results["machine"] = machine()
    print(report(results))
    plot(results, arguments.out / "quota_store.png")
    del results["raw_cheap_ms"]  # the plot's samples; the JSON keeps the figures
    write_json(results, arguments.out / "quota_store.json")


if __name__ == "__main__":
    main()
