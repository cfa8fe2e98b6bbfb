"""Full-size models on a GPU: images/s and tokens/s through the stack against raw PyTorch.

    bench/gpu/run.sh                          # on a machine with an NVIDIA GPU
    python -m bench.gpu --device cpu --quick  # the same code path on a CPU (make test)

Triton runs every model as a ``KIND_GPU`` instance (``KIND_CPU`` with
``--device cpu``) on full-size architectures with random weights:
BigGAN-deep-512, CycleGAN at 256x256 and GPT-2 124M (``bench.full_size``).
In the same run, on the same device, the bench process runs the same
model code in raw PyTorch:

- images/s: GenerateImages (one image per call, 16 concurrent callers, so
  Triton's dynamic batcher can fill its batch of 16) and TranslateImage (16
  callers, batches of up to 8), through the gateway, against raw PyTorch
  looping at the model's largest batch;
- tokens/s: one StreamText at a time through the gateway against the raw
  generate loop.

The ratios (stack / raw) go to stdout, ``gpu.json`` and ``gpu.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import batching, text
from bench.common import RESULTS_DIR, bench_stack, machine
from bench.full_size import FullSizeSet, write_full_size
from bench.inprocess import InProcessModels
from bench.workloads import Addresses, Workloads
from genmedia_shared.paths import REPO_ROOT
from services.launcher.repository import InstanceGroup
from tools.figures import pyplot, write_json
from tools.test_weights import GPT2Size

GPU_SET = FullSizeSet(biggan_resolution=512, gpt2="124m")
# The CPU smoke: the same code on tiny stand-ins.
QUICK_SET = FullSizeSet(
    biggan_resolution=512, biggan_channel_width=4, cyclegan_ngf=8, gpt2="124m",
    gpt2_size=GPT2Size(vocab_size=50257),
)  # fmt: skip
TARGETS = {"images": 0.9, "tokens": 0.8}
"""Issue #23: stack/raw at least this for images/s (both image RPCs) and for tokens/s."""
BIGGAN_BATCH = 16  # max_batch_size of models/repository/biggan
CYCLEGAN_BATCH = 8  # and of cyclegan_<direction>
CALLERS = 16


def raw_rate(step: Callable[[], Any], items_per_step: int, seconds: float) -> float:
    """Items per second of ``step`` repeated for about ``seconds`` (after one warm-up step)."""
    step()
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or done == 0:
        step()
        done += items_per_step
    return done / (time.perf_counter() - started)


def raw_latency_ms(step: Callable[[], Any], calls: int) -> float:
    """Median milliseconds of one ``step`` (after one warm-up)."""
    step()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def gpu_utilization(metrics_url: str) -> float | None:
    """Triton's ``nv_gpu_utilization`` now (0..1, the mean over its GPUs); None on a CPU."""
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text_format = reply.read().decode()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text_format.splitlines()
        if line.startswith("nv_gpu_utilization{")
    ]
    return sum(values) / len(values) if values else None


class UtilizationSampler:
    """Samples Triton's GPU utilisation every half second while the stack is measured."""

    def __init__(self, metrics_url: str) -> None:
        self._url = metrics_url
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(OSError, ValueError):
                value = gpu_utilization(self._url)
                if value is not None:
                    self.samples.append(value)

    def __enter__(self) -> UtilizationSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        return {"mean": statistics.fmean(self.samples), "max": max(self.samples)}


def measure(weights: Path, device: str, quick: bool) -> dict[str, Any]:
    seconds = 1.0 if quick else 10.0
    kind = "KIND_GPU" if device.startswith("cuda") else "KIND_CPU"
    work = Workloads.for_weights(weights)
    models = InProcessModels(weights, device)
    with bench_stack(weights, instance_group=InstanceGroup(kind, 1)) as running:
        addresses = Addresses.of(running)
        with UtilizationSampler(running.stack.triton.metrics_url) as utilization:
            through = batching.measure(
                addresses,
                work,
                batching.BatchingSizes(levels=(1, CALLERS), seconds=seconds, rounds=1),
            )
            streams = text.measure(
                addresses,
                models,
                work,
                text.TextSizes(rounds=1, streams=2 if quick else 8, tokens=64),
            )
    raw_images = raw_rate(
        lambda: models.generate_images(work.images, seed=1, count=BIGGAN_BATCH),
        BIGGAN_BATCH, seconds,
    )  # fmt: skip
    raw_translations = raw_rate(
        lambda: models.translate(work.translate, count=CYCLEGAN_BATCH), CYCLEGAN_BATCH, seconds
    )
    calls = 3 if quick else 20
    raw_one = {
        "GenerateImages": raw_latency_ms(
            lambda: models.generate_images(work.images, seed=1), calls
        ),
        "TranslateImage": raw_latency_ms(lambda: models.translate(work.translate), calls),
    }
    one_caller = {
        rpc: {
            "stack_p50_ms": through["rpcs"][rpc]["levels"]["1"]["latency_p50_ms"],
            "raw_p50_ms": raw_ms,
            "stack_minus_raw_ms": through["rpcs"][rpc]["levels"]["1"]["latency_p50_ms"] - raw_ms,
        }
        for rpc, raw_ms in raw_one.items()
    }
    level = str(CALLERS)
    stack_images = through["rpcs"]["GenerateImages"]["levels"][level]["images_per_s"]
    stack_translations = through["rpcs"]["TranslateImage"]["levels"][level]["images_per_s"]
    rows = {
        "GenerateImages (images/s)": (stack_images, raw_images),
        "TranslateImage (images/s)": (stack_translations, raw_translations),
        "StreamText (tokens/s)": (
            streams["tokens_per_s"]["gateway"],
            streams["tokens_per_s"]["in-process"],
        ),
    }
    return {
        "device": device_name(device),
        "triton_instance_kind": kind,
        "models": GPU_SET.describe() if not quick else QUICK_SET.describe(),
        "figures": {
            name: {"stack": stack, "raw_pytorch": raw, "stack_vs_raw": stack / raw}
            for name, (stack, raw) in rows.items()
        },
        "one_caller": one_caller,
        "gpu_utilization": utilization.summary(),
        "targets": targets(rows),
        "batching": through,
        "text": streams,
        "machine": machine(),
    }


def targets(rows: dict[str, tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """Each ratio against issue #23's target: images >= 0.9x raw, tokens >= 0.8x."""
    judged = {}
    for name, (stack, raw) in rows.items():
        target = TARGETS["tokens"] if "tokens" in name else TARGETS["images"]
        judged[name] = {"ratio": stack / raw, "target": target, "met": stack / raw >= target}
    return judged


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({machine()['cpu']})"


def report(results: dict[str, Any]) -> str:
    lines = [
        f"{results['device']}, Triton {results['triton_instance_kind']}: {results['models']}",
        f"{'':28s}{'stack':>10s}{'raw PyTorch':>13s}{'stack/raw':>11s}",
    ]
    for name, row in results["figures"].items():
        verdict = "met" if results["targets"][name]["met"] else "MISSED"
        lines.append(
            f"{name:28s}{row['stack']:10.1f}{row['raw_pytorch']:13.1f}{row['stack_vs_raw']:10.2f}x"
            f"  (target {results['targets'][name]['target']}x: {verdict})"
        )
    for rpc, row in results["one_caller"].items():
        lines.append(
            f"{rpc} one caller p50: stack {row['stack_p50_ms']:.1f} ms, raw "
            f"{row['raw_p50_ms']:.1f} ms, +{row['stack_minus_raw_ms']:.1f} ms"
        )
    usage = results["gpu_utilization"]
    lines.append(
        "GPU utilisation (Triton): n/a on a CPU"
        if usage is None
        else f"GPU utilisation (Triton): mean {usage['mean']:.0%}, max {usage['max']:.0%}"
    )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    names = list(results["figures"])
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5))
    for axis, name in zip(axes, names, strict=True):
        row = results["figures"][name]
        axis.bar(["stack", "raw PyTorch"], [row["stack"], row["raw_pytorch"]],
                 color=["#3b5aa0", "#999"])  # fmt: skip
        axis.set_title(f"{name}: x{row['stack_vs_raw']:.2f}", fontsize=9)
    figure.suptitle(f"{results['device']}: {results['models']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device: cuda, cuda:1 or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny stand-ins, short runs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "gpu")
    parser.add_argument(
        "--weights", type=Path, default=REPO_ROOT / "var" / "bench-weights" / "gpu",
        help="where the full-size random set is written (once) and served from",
    )  # fmt: skip
    args = parser.parse_args()
    weights = write_full_size(args.weights, QUICK_SET if args.quick else GPU_SET)
    results = measure(weights, args.device, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(results, args.out / "gpu.json")
    plot(results, args.out / "gpu.png")
    print(report(results))
    print(f"written: {args.out / 'gpu.json'}, {args.out / 'gpu.png'}")


if __name__ == "__main__":
    main()
