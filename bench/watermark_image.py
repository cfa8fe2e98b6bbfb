"""How well the invisible image watermark survives common edits, and how rarely it is
imagined in clean photos (issue #10).

    python -m bench.watermark_image            # make bench runs it
    python -m bench.watermark_image --quick    # a smoke run

Images: random crops of the photos scikit-learn bundles (``china.jpg``,
``flower.jpg``) at 128, 256 and 384 pixels, and its handwritten digits
scaled up to 128. Each is scored clean (false positives) and watermarked
(detections) after each edit: none, JPEG at quality 75, halving, cropping
10% off each side, PNG to WebP (Pillow's default quality). Also the cost:
PSNR of a marked image against its original. Writes ``watermark-image.json``
and ``watermark-image.png`` into ``bench/results/``.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images
from tqdm import tqdm

from bench.common import RESULTS_DIR, machine, pyplot, save_figure, write_json
from services.common.image_watermark import DEVELOPMENT_KEY, THRESHOLD, embed, score

SIZES = (128, 256, 384)  # the photos are 427 x 640


def _reencode(pixels: np.ndarray, image_format: str, **options: Any) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format, **options)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _halve(pixels: np.ndarray) -> np.ndarray:
    size = (pixels.shape[1] // 2, pixels.shape[0] // 2)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def _crop(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    return pixels[height // 10 : height * 9 // 10, width // 10 : width * 9 // 10]


EDITS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda pixels: pixels,
    "JPEG q75": lambda pixels: _reencode(pixels, "JPEG", quality=75),
    "halved": _halve,
    "10% cropped off each side": _crop,
    "PNG -> WebP": lambda pixels: _reencode(pixels, "WEBP"),
}


def images(per_size: int) -> dict[str, list[np.ndarray]]:
    """Crops of the bundled photos per size, and upscaled digits."""
    rng = np.random.default_rng(0)
    photos = load_sample_images().images
    sets: dict[str, list[np.ndarray]] = {}
    for size in SIZES:
        crops = []
        for index in range(per_size):
            photo = photos[index % len(photos)]
            top = int(rng.integers(0, photo.shape[0] - size + 1))
            left = int(rng.integers(0, photo.shape[1] - size + 1))
            crops.append(np.ascontiguousarray(photo[top : top + size, left : left + size]))
        sets[f"photos {size}px"] = crops
    digits = load_digits().images[:per_size]
    sets["digits 128px"] = [
        np.asarray(
            Image.fromarray((255 - d * 16).astype(np.uint8)).resize((128, 128)).convert("RGB")
        )
        for d in digits
    ]
    return sets


def psnr(original: np.ndarray, marked: np.ndarray) -> float:
    error = np.mean((original.astype(np.float64) - marked.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / error)) if error else float("inf")


def measure(per_size: int, progress: bool = True) -> dict[str, Any]:
    key = DEVELOPMENT_KEY
    results: dict[str, Any] = {"threshold": THRESHOLD, "per_set": per_size, "sets": {}}
    sets = images(per_size)
    with tqdm(total=sum(map(len, sets.values())), desc="watermark", disable=not progress) as bar:
        for name, originals in sets.items():
            rows: dict[str, Any] = {}
            marked = [embed(pixels, key) for pixels in originals]
            for edit, apply in EDITS.items():
                found = [score(apply(m), key) for m in marked]
                clean = [score(apply(o), key) for o in originals]
                rows[edit] = {
                    "detection_rate": sum(s >= THRESHOLD for s in found) / len(found),
                    "false_positive_rate": sum(s >= THRESHOLD for s in clean) / len(clean),
                    "marked_min": min(found),
                    "clean_max": max(clean),
                }
            results["sets"][name] = {
                "edits": rows,
                "psnr_db": float(
                    np.mean([psnr(o, m) for o, m in zip(originals, marked, strict=True)])
                ),
            }
            bar.update(len(originals))
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        f"image watermark, threshold {results['threshold']}, {results['per_set']} images a set",
        f"{'set':16s}{'edit':28s}{'found':>7s}{'false +':>9s}{'min marked':>12s}{'max clean':>11s}",
    ]
    for name, figures in results["sets"].items():
        for edit, row in figures["edits"].items():
            lines.append(
                f"{name:16s}{edit:28s}{row['detection_rate']:7.0%}{row['false_positive_rate']:9.0%}"
                f"{row['marked_min']:12.2f}{row['clean_max']:11.2f}"
            )
        lines.append(f"{name:16s}{'PSNR of the marked image':28s}{figures['psnr_db']:7.1f} dB")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(12, 5))
    names, edits = list(results["sets"]), list(EDITS)
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        rows = results["sets"][name]["edits"]
        x = np.arange(len(edits)) + index * width
        axes.bar(x, [rows[e]["detection_rate"] for e in edits], width, label=f"{name} found")
        axes.scatter(x, [rows[e]["false_positive_rate"] for e in edits], color="black",
                     marker="x", zorder=3)  # fmt: skip
    axes.set_xticks(np.arange(len(edits)) + 0.4 - width / 2, edits)
    axes.set_ylabel("share of images (x: false positives on clean images)")
    axes.set_ylim(0, 1.05)
    axes.set_title("invisible image watermark: found after each edit")
    axes.legend(fontsize=8, loc="lower left")
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    results = measure(per_size=2 if args.quick else 40)
    results["machine"] = machine()
    print(report(results))
    write_json(results, args.out / "watermark-image.json")
    plot(results, args.out / "watermark-image.png")


if __name__ == "__main__":
    main()
