"""What Content Credentials cost: a 512x512 image's resize-and-encode tail with and
without signing, side by side (issue #10: signing must not double the latency).

    python -m bench.signing            # make bench runs it
    python -m bench.signing --quick    # a smoke run

The tail is what a service does after the model answers, so the ratio is an
upper bound on what signing adds to a whole call (which also waits for the
model). Writes ``signing.json`` and ``signing.png`` into ``bench/results/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import figure_bench_arguments, median, publish
from genmedia.v1 import common_pb2
from services.common.content_credentials import ContentCredentials
from services.common.images import EncodeOptions, resize_and_encode
from services.common.provenance import make_provenance
from services.common.signing_keys import development_credentials
from tools.figures import pyplot, save_figure

SIDE = 512
MODEL_SIDE = 128  # what biggan-deep-128 hands the service
LIMIT_RATIO = 2.0
FORMATS = {
    "PNG": common_pb2.IMAGE_FORMAT_PNG,
    "JPEG": common_pb2.IMAGE_FORMAT_JPEG,
    "WebP": common_pb2.IMAGE_FORMAT_WEBP,
}


def model_output() -> np.ndarray:
    """A smooth image with texture, like a generator's (noise would flatter PNG's cost)."""
    y, x = np.mgrid[0:MODEL_SIDE, 0:MODEL_SIDE] / MODEL_SIDE
    rng = np.random.default_rng(0)
    channels = [np.sin(6 * x + c) * np.cos(5 * y - c) for c in range(3)]
    pixels = (np.stack(channels, -1) + 1) * 110 + rng.normal(0, 6, (MODEL_SIDE, MODEL_SIDE, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def measure(calls: int) -> dict[str, Any]:
    signer = ContentCredentials(development_credentials())
    pixels = model_output()
    provenance = make_provenance("biggan", "1", 1, "bench")
    results: dict[str, Any] = {"calls": calls, "side": SIDE, "formats": {}}
    for name, image_format in FORMATS.items():
        timings: dict[str, list[float]] = {"unsigned": [], "signed": []}
        sizes: dict[str, int] = {}
        # Alternate the two so that a noisy neighbour hits both alike.
        for _ in range(calls):
            for side, credentials in (("unsigned", None), ("signed", signer)):
                options = EncodeOptions(image_format, credentials=credentials)
                started = time.perf_counter()
                image = resize_and_encode(pixels, (SIDE, SIDE), provenance, options)
                timings[side].append((time.perf_counter() - started) * 1000)
                sizes[side] = len(image.data)
        unsigned, signed = median(timings["unsigned"]), median(timings["signed"])
        results["formats"][name] = {
            "unsigned_p50_ms": unsigned,
            "signed_p50_ms": signed,
            "added_ms": signed - unsigned,
            "ratio": signed / unsigned,
            "bytes_added": sizes["signed"] - sizes["unsigned"],
        }
    worst = max(results["formats"].items(), key=lambda item: item[1]["ratio"])
    results["verdict"] = {
        "target": f"signing a {SIDE}x{SIDE} image < {LIMIT_RATIO:g}x its unsigned latency",
        "figure": f"{worst[1]['ratio']:.2f}x ({worst[0]}, the largest)",
        "met": worst[1]["ratio"] < LIMIT_RATIO,
    }
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        f"{results['side']}x{results['side']} resize + encode, p50 of {results['calls']}:",
        f"{'format':8s}{'unsigned':>10s}{'signed':>10s}{'added':>9s}{'ratio':>8s}{'bytes':>8s}",
    ]
    for name, row in results["formats"].items():
        lines.append(
            f"{name:8s}{row['unsigned_p50_ms']:8.2f}ms{row['signed_p50_ms']:8.2f}ms"
            f"{row['added_ms']:7.2f}ms{row['ratio']:7.2f}x{row['bytes_added']:8d}"
        )
    verdict = results["verdict"]
    lines.append(f"{'met    ' if verdict['met'] else 'NOT MET'}  {verdict['target']}: "
                 f"{verdict['figure']}")  # fmt: skip
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.5))
    names = list(results["formats"])
    x = np.arange(len(names))
    for offset, side in ((-0.2, "unsigned"), (0.2, "signed")):
        values = [results["formats"][n][f"{side}_p50_ms"] for n in names]
        axes.bar(x + offset, values, width=0.4, label=side)
    for i, name in enumerate(names):
        row = results["formats"][name]
        axes.annotate(f"{row['ratio']:.2f}x", (i + 0.2, row["signed_p50_ms"]), ha="center",
                      va="bottom")  # fmt: skip
    axes.set_xticks(x, names)
    axes.set_ylabel("ms per image (p50)")
    axes.set_title(f"{results['side']}x{results['side']} image: resize + encode, with and "
                   "without Content Credentials")  # fmt: skip
    axes.legend()
    save_figure(figure, path)


def main() -> None:
    args = figure_bench_arguments(__doc__).parse_args()
    publish(measure(calls=3 if args.quick else 40), "signing", report, plot, args.out)


if __name__ == "__main__":
    main()
