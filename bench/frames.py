"""TranslateFrames and TranslateVideo: frames per second at 1 and 4 concurrent streams, against
TranslateImage called once a frame, with time to first frame, frame latency, memory over a
long stream, where the CPU goes, and the temporal hold against flicker.

``python -m bench.frames`` starts the local stack on the demo pack (CycleGAN at 32 px, an
API key on the gateway) and, through the gateway, in one run:

- one stream of frames against TranslateImage called per frame, one call at a time
  (target: the stream makes at least 1.5x the frames per second);
- 4 concurrent streams against 1 (target: at least 1.5x the total frames per second), with
  encoded frames (each one PNG-encoded and signed with Content Credentials) and with
  ``raw_output`` (bare RGB: no encoding, no signing), and the CPU each process spent a
  frame in each case: with a single stream already keeping both cores busy, more streams
  can only add what batching saves;
- time to first frame, and each frame's latency (sent to answered) p50/p99;
- the image-translation service's resident memory over a 2,000-frame stream, sampled as it
  goes (target: the last tenth within 5% of the first tenth);
- TranslateVideo: frames per second of a 128x128 MP4 (a still picture with a camera's noise
  and a moving square), and the flicker in its still part without and with the temporal
  hold (``hold_still_below=6``), with how far the held frames are from the fresh ones;
- the floor of "4 streams against 1": the same CycleGAN in this process, after the stack
  has stopped, at batch 1 against batch 8 (the model's max_batch_size). Streams can gain
  from sharing batches at most what batching gains the model itself.

Then a second stack on the full-size CycleGAN (ResNet, ngf 64, 256x256, random weights;
``bench.full_size``): frames per second at 1 and 4 streams.

Figures go to stdout, ``bench/results/frames.json`` and ``frames.png``.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import tempfile
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
from tritonclient.grpc import aio as triton_aio

from bench.batching import batch_counts
from bench.common import bench_stack, figure_bench_arguments, judged, percentile, publish
from bench.full_size import DIRECTION as FULL_SIZE_DIRECTION
from bench.full_size import FullSizeSet, write_full_size
from bench.gpu.__main__ import CYCLEGAN_BATCH, raw_rate
from bench.inprocess import InProcessModels
from bench.workloads import Workloads
from genmedia.v1 import image_translation_pb2 as pb
from genmedia.v1 import image_translation_pb2_grpc as pb_grpc
from genmedia_shared.paths import REPO_ROOT
from services.common.registry import GATEWAY, IMAGE_TRANSLATION
from services.image_translation.translator import TRITON_PREFIX
from services.launcher.stack import Stack
from tools.figures import pyplot, save_figure
from tools.video_files import frames_of, mean_change, noisy_still_with_a_mover, write_video

TARGETS = {"stream_vs_per_frame": 1.5, "four_streams_vs_one": 1.5, "memory_growth": 0.05}
MODES = ("encoded", "raw_output")
HOLD_LEVELS = 6
"""The temporal hold measured (VideoConfig.hold_still_below)."""
FULL_SIZE_WEIGHTS = REPO_ROOT / "var" / "bench-weights" / "cpu"
QUICK_FULL_SIZE = FullSizeSet(biggan_channel_width=4, cyclegan_ngf=8)


@dataclass(frozen=True)
class Sizes:
    frames: int = 240
    """Per stream, and per-frame calls, for the rate figures."""
    long_frames: int = 2000
    side: int = 32
    video_frames: int = 60
    video_side: int = 128
    full_size_frames: int = 6
    """Per stream at 256x256: about a second a frame on 2 cores."""

    @classmethod
    def quick(cls) -> Sizes:
        return cls(frames=24, long_frames=80, video_frames=10, full_size_frames=2)


def frames_of_side(count: int, side: int) -> list[bytes]:
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


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class CpuMeter:
    """CPU seconds (user + system) each process spent meanwhile, its children included (a
    Triton model's stub is one) but for this process's (the stack)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}

    @staticmethod
    def _seconds(process: psutil.Process) -> float:
        total = 0.0
        children = process.children(recursive=True) if process.pid != os.getpid() else []
        for one in (process, *children):
            try:
                times = one.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def _now(self) -> dict[str, float]:
        return {name: self._seconds(p) for name, p in self._processes.items()}

    def __enter__(self) -> CpuMeter:
        self._start, self._wall = self._now(), time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        end, wall = self._now(), time.perf_counter() - self._wall
        self.seconds = {name: end[name] - self._start[name] for name in end}
        self.busy_cores = sum(self.seconds.values()) / wall

    def per_frame_ms(self, frames: int) -> dict[str, float]:
        return {name: seconds * 1000 / frames for name, seconds in self.seconds.items()}


def cpu_pids(stack: Stack) -> dict[str, int]:
    triton = stack.triton.pid
    assert triton is not None
    return {
        "bench client": os.getpid(),
        "gateway": stack.pid_of(GATEWAY),
        "image-translation": stack.pid_of(IMAGE_TRANSLATION),
        "triton": triton,
    }


class FrameCaller:
    """TranslateFrames streams to one endpoint, timed frame by frame."""

    def __init__(self, channel: aio.Channel, key: str, model: str) -> None:
        self.stub = pb_grpc.ImageTranslationServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.model = model

    async def stream(
        self, frames: list[bytes], on_answer: Any = None, raw: bool = False
    ) -> dict[str, Any]:
        sent: dict[int, float] = {}

        async def requests() -> AsyncIterator[pb.TranslateFramesRequest]:
            config = pb.FrameStreamConfig(model=self.model, raw_output=raw)
            yield pb.TranslateFramesRequest(config=config)
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

    async def one_and_four(self, frames: list[bytes], raw: bool = False) -> dict[str, Any]:
        """One stream, then 4 at once: the total frames per second of each."""
        one = await self.stream(frames, raw=raw)
        started = time.perf_counter()
        four = await asyncio.gather(*(self.stream(frames, raw=raw) for _ in range(4)))
        four_fps = sum(s["frames"] for s in four) / (time.perf_counter() - started)
        one_fps = one["frames"] / one["seconds"]
        return {"one_stream_fps": one_fps, "four_streams_fps": four_fps,
                "four_vs_one": four_fps / one_fps, "one_stream": one}  # fmt: skip


class Bench:
    def __init__(
        self, caller: FrameCaller, sizes: Sizes, pids: dict[str, int], triton_url: str
    ) -> None:
        self.caller = caller
        self.triton_url = triton_url
        self.stub, self.metadata, self.model = caller.stub, caller.metadata, caller.model
        self.sizes = sizes
        self.pids = pids
        self.service = psutil.Process(pids["image-translation"])
        self.frames = frames_of_side(sizes.frames, sizes.side)

    async def _per_frame(self) -> float:
        started = time.perf_counter()
        for frame in self.frames:
            request = pb.TranslateImageRequest(image=frame, model=self.model)
            await self.stub.TranslateImage(request, metadata=self.metadata, timeout=60)
        return len(self.frames) / (time.perf_counter() - started)

    async def _one_and_four(self, raw: bool) -> dict[str, Any]:
        """1 stream, then 4 at once: total frames per second, and the CPU each process spent
        a frame and the cores kept busy in each (measured apart from the rates)."""
        figures = await self.caller.one_and_four(self.frames, raw)
        cpu: dict[str, Any] = {"cpu_ms_per_frame": {}, "busy_cores": {}, "mean_batch": {}}
        triton = triton_aio.InferenceServerClient(self.triton_url)
        try:
            model = TRITON_PREFIX + self.model
            for streams in (1, 4):
                name = "one_stream" if streams == 1 else "four_streams"
                before = await batch_counts(triton, model)
                with CpuMeter(self.pids) as meter:
                    await asyncio.gather(
                        *(self.caller.stream(self.frames, raw=raw) for _ in range(streams))
                    )
                ran = await batch_counts(triton, model)
                ran.subtract(before)
                cpu["cpu_ms_per_frame"][name] = meter.per_frame_ms(streams * len(self.frames))
                cpu["busy_cores"][name] = meter.busy_cores
                # The batches Triton ran the model in: what sharing them really gave.
                cpu["mean_batch"][name] = sum(b * n for b, n in ran.items()) / max(
                    1, sum(ran.values())
                )
        finally:
            await triton.close()
        return {**figures, **cpu}

    async def run(self, progress: bool) -> dict[str, Any]:
        await self.caller.stream(self.frames[:4])  # warm
        await self.caller.stream(self.frames[:4], raw=True)
        with tqdm(total=5, desc="frames bench", disable=not progress) as bar:
            outputs: list[bytes] = []
            await self.caller.stream(self.frames, lambda answer: outputs.append(answer.image.data))
            encoded = await self._one_and_four(raw=False)
            bar.update()
            per_frame_fps = await self._per_frame()
            bar.update()
            raw = await self._one_and_four(raw=True)
            bar.update()
            memory = await self._memory_over_long_stream()
            bar.update()
            video = await self._video()
            bar.update()
        one_fps = encoded["one_stream_fps"]
        one = encoded.pop("one_stream")
        raw.pop("one_stream")
        latencies = one["latencies_ms"]
        measured = {
            "stream_vs_per_frame": one_fps / per_frame_fps,
            "four_streams_vs_one": encoded["four_vs_one"],
            "memory_growth": memory["growth"],
        }
        return {
            "sizes": asdict(self.sizes),
            "model": self.model,
            "temporal_stability": temporal_stability(self.frames, outputs),
            "one_stream_fps": one_fps,
            "per_frame_calls_fps": per_frame_fps,
            "four_streams_fps": encoded["four_streams_fps"],
            "first_frame_ms": one["first_ms"],
            "frame_latency_p50_ms": percentile(latencies, 50),
            "frame_latency_p99_ms": percentile(latencies, 99),
            "encoded": encoded,
            "raw_output": raw,
            "memory": memory,
            "video": video,
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

        await self.caller.stream(frames, on_answer=sample)
        tenth = max(1, len(samples) // 10)
        early = statistics.mean(rss for _, rss in samples[:tenth])
        late = statistics.mean(rss for _, rss in samples[-tenth:])
        return {"samples_mib": samples, "first_tenth_mib": early, "last_tenth_mib": late,
                "growth": late / early - 1}  # fmt: skip

    async def _video(self) -> dict[str, Any]:
        """TranslateVideo on a noisy still picture with a mover, without and with the hold."""
        side, count = self.sizes.video_side, self.sizes.video_frames
        with tempfile.TemporaryDirectory(prefix="genmedia-bench-video-") as scratch:
            folder = Path(scratch)
            source = write_video(
                folder / "in.mp4", (noisy_still_with_a_mover(i, side) for i in range(count))
            )
            runs: dict[int, dict[str, Any]] = {}
            outputs: dict[int, list[np.ndarray]] = {}
            for hold in (0, HOLD_LEVELS):
                started = time.perf_counter()
                data = await self._translate_video(source.read_bytes(), hold)
                seconds = time.perf_counter() - started
                (folder / f"out-{hold}.mp4").write_bytes(data)
                outputs[hold] = frames_of(folder / f"out-{hold}.mp4")
                runs[hold] = {"seconds": seconds, "fps": len(outputs[hold]) / seconds}
            inputs = frames_of(source)
        still = np.r_[0 : side // 3 - 8, side // 3 + 24 : side]  # every row but the mover's
        flicker = {
            "input": mean_change([f[still] for f in inputs]),
        }
        for hold, frames in outputs.items():
            flicker[f"hold_{hold}"] = mean_change([f[still] for f in frames])
        apart = [
            float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
            for a, b in zip(outputs[0], outputs[HOLD_LEVELS], strict=True)
        ]
        return {
            "side": side,
            "frames": count,
            "fps": runs[0]["fps"],
            "fps_with_hold": runs[HOLD_LEVELS]["fps"],
            "still_part_flicker": flicker,
            "flicker_cut": flicker["hold_0"] / max(flicker[f"hold_{HOLD_LEVELS}"], 1e-9),
            "held_vs_fresh_mean_levels": statistics.mean(apart),
            # The scale to read that against: how far the model's own fresh output moves
            # from one frame to the next (the whole frame).
            "fresh_frame_to_frame_levels": mean_change(outputs[0]),
        }

    async def _translate_video(self, data: bytes, hold: int) -> bytes:
        async def requests() -> AsyncIterator[pb.TranslateVideoRequest]:
            config = pb.VideoConfig(model=self.model, hold_still_below=hold)
            yield pb.TranslateVideoRequest(config=config)
            for start in range(0, len(data), 1 << 20):
                yield pb.TranslateVideoRequest(chunk=data[start : start + (1 << 20)])

        out = bytearray()
        async for answer in self.stub.TranslateVideo(
            requests(), metadata=self.metadata, timeout=3600
        ):
            out += answer.chunk
        return bytes(out)


async def full_size_streams(address: str, key: str, count: int) -> dict[str, Any]:
    """Frames per second of the full-size CycleGAN at 1 and 4 streams of 256x256 frames."""
    frames = frames_of_side(count, 256)
    async with aio.insecure_channel(address) as channel:
        caller = FrameCaller(channel, key, FULL_SIZE_DIRECTION)
        await caller.stream(frames[:1])  # warm
        figures = await caller.one_and_four(frames)
    one = figures.pop("one_stream")
    return {**figures, "side": 256, "frames_per_stream": count, "first_frame_ms": one["first_ms"],
            "frame_latency_p50_ms": percentile(one["latencies_ms"], 50)}  # fmt: skip


FLOOR_BATCHES = (1, 2, 4, CYCLEGAN_BATCH)


def model_batching_floor(weights: Path, seconds: float) -> dict[str, Any]:
    """Frames/s of the translation model alone at batch 1, 2, 4 and its largest batch."""
    models = InProcessModels(weights, "cpu")
    call = Workloads.for_weights(weights).translate
    rates = {
        batch: raw_rate(lambda n=batch: models.translate(call, count=n), batch, seconds)
        for batch in FLOOR_BATCHES
    }
    return {"side": call.side, "fps_by_batch": rates, "batch_1_fps": rates[1],
            f"batch_{CYCLEGAN_BATCH}_fps": rates[CYCLEGAN_BATCH],
            "batching_gain": rates[CYCLEGAN_BATCH] / rates[1]}  # fmt: skip


def model_ceiling(fps_by_batch: dict[int, float], one_batch: float, four_batch: float) -> float:
    """What the model alone gains going from one stream's mean batch to four streams' (its
    rates between the measured batch sizes read off a straight line): the most sharing
    batches could give those streams."""
    sizes = sorted(fps_by_batch)
    rates = [fps_by_batch[size] for size in sizes]
    return float(np.interp(four_batch, sizes, rates) / np.interp(one_batch, sizes, rates))


def temporal_stability(inputs: list[bytes], outputs: list[bytes]) -> dict[str, float]:
    """How much consecutive output frames differ against how much their inputs do: CycleGAN
    works frame by frame, so it adds flicker where this is above 1."""
    input_change = mean_change([decoded(data) for data in inputs])
    output_change = mean_change([decoded(data) for data in outputs])
    return {
        "input_mean_change": input_change,
        "output_mean_change": output_change,
        "output_vs_input": output_change / input_change,
    }


def _cpu_line(label: str, figures: dict[str, Any]) -> str:
    parts = ", ".join(
        f"{name} {ms:.2f}" for name, ms in figures["cpu_ms_per_frame"]["one_stream"].items()
    )
    return (
        f"{label}: 1 stream {figures['one_stream_fps']:.1f} frames/s, 4 streams "
        f"{figures['four_streams_fps']:.1f} (x{figures['four_vs_one']:.2f}); CPU ms a frame at "
        f"1 stream: {parts}; busy cores {figures['busy_cores']['one_stream']:.2f} at 1 stream, "
        f"{figures['busy_cores']['four_streams']:.2f} at 4; Triton's mean batch "
        f"{figures['mean_batch']['one_stream']:.2f} at 1 stream, "
        f"{figures['mean_batch']['four_streams']:.2f} at 4, where the model alone gains "
        f"x{figures['model_ceiling']:.2f}"
    )


def report(results: dict[str, Any]) -> str:
    video = results["video"]
    lines = [
        f"one stream: {results['one_stream_fps']:.1f} frames/s; TranslateImage per frame: "
        f"{results['per_frame_calls_fps']:.1f}; four streams: {results['four_streams_fps']:.1f}",
        f"first frame {results['first_frame_ms']:.1f} ms; frame latency p50 "
        f"{results['frame_latency_p50_ms']:.1f} ms, p99 {results['frame_latency_p99_ms']:.1f} ms",
        _cpu_line("encoded (PNG, signed)", results["encoded"]),
        _cpu_line("raw_output", results["raw_output"]),
        f"service RSS over {results['sizes']['long_frames']} frames: "
        f"{results['memory']['first_tenth_mib']:.0f} -> "
        f"{results['memory']['last_tenth_mib']:.0f} MiB",
        "model alone: x{batching_gain:.2f} from batching (batch 1 -> {n}), the ceiling of "
        "4 streams vs 1".format(n=CYCLEGAN_BATCH, **results["model_batching_floor"]),
        "consecutive frames differ by {input_mean_change:.2f} levels in, "
        "{output_mean_change:.2f} out (x{output_vs_input:.2f})".format(
            **results["temporal_stability"]
        ),
        f"TranslateVideo {video['side']}px: {video['fps']:.1f} frames/s "
        f"({video['fps_with_hold']:.1f} with the hold); still-part flicker "
        f"{video['still_part_flicker']['hold_0']:.3f} -> "
        f"{video['still_part_flicker'][f'hold_{HOLD_LEVELS}']:.3f} levels with "
        f"hold_still_below={HOLD_LEVELS} (x{video['flicker_cut']:.1f} less; input "
        f"{video['still_part_flicker']['input']:.3f}); held frames "
        f"{video['held_vs_fresh_mean_levels']:.2f} levels from fresh (fresh frames move "
        f"{video['fresh_frame_to_frame_levels']:.2f} from one to the next)",
    ]
    full = results.get("full_size")
    if full is not None:
        lines.append(
            f"full-size CycleGAN 256px: 1 stream {full['one_stream_fps']:.2f} frames/s, "
            f"4 streams {full['four_streams_fps']:.2f} (x{full['four_vs_one']:.2f})"
        )
    for name, target in results["targets"].items():
        verdict = "met" if target["met"] else "MISSED"
        lines.append(f"{name}: {target['measured']:.3f} (target {target['target']}) {verdict}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.5))
    names = ["TranslateImage\nper frame", "1 stream", "4 streams"]
    names += ["1 stream\nraw", "4 streams\nraw"]
    values = [
        results["per_frame_calls_fps"],
        results["encoded"]["one_stream_fps"],
        results["encoded"]["four_streams_fps"],
        results["raw_output"]["one_stream_fps"],
        results["raw_output"]["four_streams_fps"],
    ]
    left.bar(names, values, color=["#999", "#37a", "#159", "#a73", "#951"])
    left.set_title(f"frames per second (total), {results['sizes']['side']} px demo CycleGAN")
    processes = list(results["encoded"]["cpu_ms_per_frame"]["one_stream"])
    bottom = np.zeros(2)
    for name in processes:
        heights = np.array(
            [results[mode]["cpu_ms_per_frame"]["one_stream"][name] for mode in MODES]
        )
        middle.bar(["encoded + signed", "raw_output"], heights, bottom=bottom, label=name)
        bottom += heights
    middle.set_title("CPU ms per frame, one stream, by process")
    middle.legend(fontsize=8)
    samples = results["memory"]["samples_mib"]
    right.plot([i for i, _ in samples], [rss for _, rss in samples], marker=".")
    right.set_title("image-translation RSS (MiB) over one long stream")
    right.set_xlabel("frames answered")
    save_figure(figure, path)


def stack_key(running: Any) -> str:
    return str(running.gateway_metadata[0][1]).removeprefix("Bearer ")


def demo_run(weights: Path, sizes: Sizes) -> dict[str, Any]:
    with bench_stack(weights) as running:
        stack = running.stack
        models = sorted(p.parent.name for p in (weights / "cyclegan").glob("*/latest_net_G.pth"))
        address, key = stack.gateways[0].address, stack_key(running)

        async def run() -> dict[str, Any]:
            async with aio.insecure_channel(address) as channel:
                caller = FrameCaller(channel, key, models[0])
                bench = Bench(caller, sizes, cpu_pids(stack), stack.triton.grpc_url)
                return await bench.run(progress=True)

        return asyncio.run(run())


def full_size_run(weights: Path, sizes: Sizes) -> dict[str, Any]:
    with bench_stack(weights) as running:
        address = running.stack.gateways[0].address
        return asyncio.run(full_size_streams(address, stack_key(running), sizes.full_size_frames))


def main() -> None:
    parser = figure_bench_arguments(__doc__ or "")
    parser.add_argument("--weights", type=Path, default=REPO_ROOT / "models" / "demo")
    parser.add_argument("--full-size-weights", type=Path, default=FULL_SIZE_WEIGHTS)
    parser.add_argument("--skip-full-size", action="store_true")
    args = parser.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes()
    results = demo_run(args.weights, sizes)
    floor = model_batching_floor(args.weights, 1.0 if args.quick else 5.0)
    results["model_batching_floor"] = floor
    for mode in MODES:
        batch = results[mode]["mean_batch"]
        results[mode]["model_ceiling"] = model_ceiling(
            floor["fps_by_batch"], batch["one_stream"], batch["four_streams"]
        )
    if not args.skip_full_size:
        spec = QUICK_FULL_SIZE if args.quick else FullSizeSet()
        weights = write_full_size(args.full_size_weights, spec)
        results["full_size"] = {**full_size_run(weights, sizes), "set": spec.describe()}
    publish(results, "frames", report, plot, args.out)


if __name__ == "__main__":
    main()
