"""TranslateFrames: frames per second at 1 and 4 concurrent streams, against TranslateImage
called once a frame, with time to first frame, frame latency and memory over a long stream.

``python -m bench.frames`` starts the local stack on the demo pack (CycleGAN at 32 px, an
API key on the gateway) and, through the gateway, in one run:

- one stream of frames against TranslateImage called per frame, one call at a time
  (target: the stream makes at least 1.5x the frames per second);
- 4 concurrent streams against 1 (target: at least 1.5x the total frames per second);
- time to first frame, and each frame's latency (sent to answered) p50/p99;
- the image-translation service's resident memory over a 2,000-frame stream, sampled as it
  goes (target: the last tenth within 5% of the first tenth);
- the floor of "4 streams against 1": the same CycleGAN in this process, after the stack
  has stopped, at batch 1 against batch 8 (the model's max_batch_size). Streams can gain
  from sharing batches at most what batching gains the model itself.

Figures go to stdout, ``bench/results/frames.json`` and ``frames.png``.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import statistics
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from grpc import aio
from PIL import Image
from tqdm import tqdm

from bench.common import bench_stack, figure_bench_arguments, judged, percentile, publish
from bench.gpu.__main__ import CYCLEGAN_BATCH, raw_rate
from bench.inprocess import InProcessModels
from bench.workloads import Workloads
from genmedia.v1 import image_translation_pb2 as pb
from genmedia.v1 import image_translation_pb2_grpc as pb_grpc
from genmedia_shared.paths import REPO_ROOT
from services.common.registry import IMAGE_TRANSLATION
from tools.figures import pyplot, save_figure

TARGETS = {"stream_vs_per_frame": 1.5, "four_streams_vs_one": 1.5, "memory_growth": 0.05}


@dataclass(frozen=True)
class Sizes:
    frames: int = 240
    """Per stream, and per-frame calls, for the rate figures."""
    long_frames: int = 2000
    side: int = 32

    @classmethod
    def quick(cls) -> Sizes:
        return cls(frames=24, long_frames=80)


def frames_of(count: int, side: int) -> list[bytes]:
    """A moving gradient as PNG frames: every frame different, as a video's are."""
    y, x = np.mgrid[0:side, 0:side]
    encoded = []
    for index in range(count):
        pixels = np.stack(
            [(x * 8 + index * 5) % 256, (y * 8) % 256, (x + y + index) % 256], -1
        ).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG")
        encoded.append(out.getvalue())
    return encoded


class Bench:
    def __init__(self, address: str, key: str, model: str, sizes: Sizes, service_pid: int) -> None:
        self.address = address
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.model = model
        self.sizes = sizes
        self.service = psutil.Process(service_pid)
        self.frames = frames_of(sizes.frames, sizes.side)

    async def _stream(self, frames: list[bytes], on_answer: Any = None) -> dict[str, Any]:
        sent: dict[int, float] = {}

        async def requests() -> AsyncIterator[pb.TranslateFramesRequest]:
            yield pb.TranslateFramesRequest(config=pb.FrameStreamConfig(model=self.model))
            for index, frame in enumerate(frames):
                sent[index] = time.perf_counter()
                yield pb.TranslateFramesRequest(image=frame)

        started = time.perf_counter()
        first = None
        latencies = []
        call = self.stub.TranslateFrames(requests(), metadata=self.metadata, timeout=3600)
        async for answer in call:
            now = time.perf_counter()
            first = first or now - started
            latencies.append((now - sent[answer.index]) * 1000)
            if on_answer is not None:
                on_answer(answer)
        return {"seconds": time.perf_counter() - started, "first_ms": (first or 0) * 1000,
                "latencies_ms": latencies, "frames": len(latencies)}  # fmt: skip

    async def _per_frame(self) -> float:
        started = time.perf_counter()
        for frame in self.frames:
            request = pb.TranslateImageRequest(image=frame, model=self.model)
            await self.stub.TranslateImage(request, metadata=self.metadata, timeout=60)
        return len(self.frames) / (time.perf_counter() - started)

    async def run(self, progress: bool) -> dict[str, Any]:
        async with aio.insecure_channel(self.address) as channel:
            self.stub = pb_grpc.ImageTranslationServiceStub(channel)
            await self._stream(self.frames[:4])  # warm
            with tqdm(total=4, desc="frames bench", disable=not progress) as bar:
                outputs: list[bytes] = []
                one = await self._stream(
                    self.frames, lambda answer: outputs.append(answer.image.data)
                )
                bar.update()
                per_frame_fps = await self._per_frame()
                bar.update()
                started = time.perf_counter()
                four = await asyncio.gather(*(self._stream(self.frames) for _ in range(4)))
                four_seconds = time.perf_counter() - started
                bar.update()
                memory = await self._memory_over_long_stream()
                bar.update()
        one_fps = one["frames"] / one["seconds"]
        four_fps = sum(s["frames"] for s in four) / four_seconds
        latencies = one["latencies_ms"]
        measured = {
            "stream_vs_per_frame": one_fps / per_frame_fps,
            "four_streams_vs_one": four_fps / one_fps,
            "memory_growth": memory["growth"],
        }
        return {
            "sizes": asdict(self.sizes),
            "model": self.model,
            "temporal_stability": temporal_stability(self.frames, outputs),
            "one_stream_fps": one_fps,
            "per_frame_calls_fps": per_frame_fps,
            "four_streams_fps": four_fps,
            "first_frame_ms": one["first_ms"],
            "frame_latency_p50_ms": percentile(latencies, 50),
            "frame_latency_p99_ms": percentile(latencies, 99),
            "memory": memory,
            "targets": judged(measured, TARGETS, at_most=("memory_growth",)),
        }

    async def _memory_over_long_stream(self) -> dict[str, Any]:
        """The service's RSS, sampled every 50 frames answered, over one long stream."""
        frames = (self.frames * (self.sizes.long_frames // len(self.frames) + 1))[
            : self.sizes.long_frames
        ]
        samples: list[tuple[int, float]] = []
        lock = threading.Lock()

        def sample(answer: pb.TranslateFramesResponse) -> None:
            if answer.index % 50 == 0:
                with lock:
                    samples.append((answer.index, self.service.memory_info().rss / 2**20))

        await self._stream(frames, on_answer=sample)
        tenth = max(1, len(samples) // 10)
        early = statistics.mean(rss for _, rss in samples[:tenth])
        late = statistics.mean(rss for _, rss in samples[-tenth:])
        return {"samples_mib": samples, "first_tenth_mib": early, "last_tenth_mib": late,
                "growth": late / early - 1}  # fmt: skip


def model_batching_floor(weights: Path, seconds: float) -> dict[str, Any]:
    """Frames/s of the translation model alone at batch 1 and at its largest batch."""
    models = InProcessModels(weights, "cpu")
    call = Workloads.for_weights(weights).translate
    one = raw_rate(lambda: models.translate(call, count=1), 1, seconds)
    batched = raw_rate(
        lambda: models.translate(call, count=CYCLEGAN_BATCH), CYCLEGAN_BATCH, seconds
    )
    return {"side": call.side, "batch_1_fps": one, f"batch_{CYCLEGAN_BATCH}_fps": batched,
            "batching_gain": batched / one}  # fmt: skip


def mean_change(frames: list[bytes]) -> float:
    """Mean absolute difference of consecutive frames, in 0-255 pixel levels."""
    pixels = [
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16) for data in frames
    ]
    return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(pixels)]))


def temporal_stability(inputs: list[bytes], outputs: list[bytes]) -> dict[str, float]:
    """How much consecutive output frames differ against how much their inputs do: CycleGAN
    works frame by frame, so it adds flicker where this is above 1."""
    input_change, output_change = mean_change(inputs), mean_change(outputs)
    return {
        "input_mean_change": input_change,
        "output_mean_change": output_change,
        "output_vs_input": output_change / input_change,
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        f"one stream: {results['one_stream_fps']:.1f} frames/s; TranslateImage per frame: "
        f"{results['per_frame_calls_fps']:.1f}; four streams: {results['four_streams_fps']:.1f}",
        f"first frame {results['first_frame_ms']:.1f} ms; frame latency p50 "
        f"{results['frame_latency_p50_ms']:.1f} ms, p99 {results['frame_latency_p99_ms']:.1f} ms",
        f"service RSS over {results['sizes']['long_frames']} frames: "
        f"{results['memory']['first_tenth_mib']:.0f} -> "
        f"{results['memory']['last_tenth_mib']:.0f} MiB",
        "model alone: x{batching_gain:.2f} from batching (batch 1 -> {n}), the ceiling of "
        "4 streams vs 1".format(n=CYCLEGAN_BATCH, **results["model_batching_floor"]),
        "consecutive frames differ by {input_mean_change:.2f} levels in, "
        "{output_mean_change:.2f} out (x{output_vs_input:.2f})".format(
            **results["temporal_stability"]
        ),
    ]
    for name, target in results["targets"].items():
        verdict = "met" if target["met"] else "MISSED"
        lines.append(f"{name}: {target['measured']:.3f} (target {target['target']}) {verdict}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["TranslateImage\nper frame", "1 stream", "4 streams"]
    values = [results[k] for k in ("per_frame_calls_fps", "one_stream_fps", "four_streams_fps")]
    left.bar(names, values, color=["#999", "#37a", "#159"])
    left.set_title("frames per second (total)")
    samples = results["memory"]["samples_mib"]
    right.plot([i for i, _ in samples], [rss for _, rss in samples], marker=".")
    right.set_title("image-translation RSS (MiB) over one long stream")
    right.set_xlabel("frames answered")
    save_figure(figure, path)


def main() -> None:
    parser = figure_bench_arguments(__doc__ or "")
    parser.add_argument("--weights", type=Path, default=REPO_ROOT / "models" / "demo")
    args = parser.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes()
    with bench_stack(args.weights) as running:
        stack = running.stack
        key = running.gateway_metadata[0][1].removeprefix("Bearer ")
        models = sorted(
            p.parent.name for p in (args.weights / "cyclegan").glob("*/latest_net_G.pth")
        )
        bench = Bench(
            stack.gateways[0].address, key, models[0], sizes, stack.pid_of(IMAGE_TRANSLATION)
        )
        results = asyncio.run(bench.run(progress=True))
    results["model_batching_floor"] = model_batching_floor(args.weights, 1.0 if args.quick else 5.0)
    publish(results, "frames", report, plot, args.out)


if __name__ == "__main__":
    main()
