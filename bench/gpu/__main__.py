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
import time
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


def measure(weights: Path, device: str, quick: bool) -> dict[str, Any]:
    seconds = 1.0 if quick else 10.0
    kind = "KIND_GPU" if device.startswith("cuda") else "KIND_CPU"
    work = Workloads.for_weights(weights)
    models = InProcessModels(weights, device)
    with bench_stack(weights, instance_group=InstanceGroup(kind, 1)) as running:
        addresses = Addresses.of(running)
        through = batching.measure(
            addresses, work, batching.BatchingSizes(levels=(CALLERS,), seconds=seconds, rounds=1)
        )
        streams = text.measure(
            addresses, models, work, text.TextSizes(rounds=1, streams=2 if quick else 8, tokens=64)
        )
    raw_images = raw_rate(
        lambda: models.generate_images(work.images, seed=1, count=BIGGAN_BATCH),
        BIGGAN_BATCH, seconds,
    )  # fmt: skip
    raw_translations = raw_rate(
        lambda: models.translate(work.translate, count=CYCLEGAN_BATCH), CYCLEGAN_BATCH, seconds
    )
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
        "batching": through,
        "text": streams,
        "machine": machine(),
    }


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
        lines.append(
            f"{name:28s}{row['stack']:10.1f}{row['raw_pytorch']:13.1f}{row['stack_vs_raw']:10.2f}x"
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
