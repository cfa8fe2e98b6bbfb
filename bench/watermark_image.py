"""How well the invisible image watermark survives common edits, and how rarely it is
imagined in clean photos (issue #10).

    python -m bench.watermark_image            # make bench runs it
    python -m bench.watermark_image --quick    # a smoke run

Images and edits: ``bench/watermark_images.py`` (crops of the photos
scikit-learn and scikit-image bundle, and digits). Each image is scored clean
(false positives) and watermarked (detections) after each edit. Also the
cost: PSNR of a marked image against its original. Writes ``watermark-image.json``
and ``watermark-image.png`` into ``bench/results/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.common import figure_bench_arguments, publish
from bench.watermark_images import EDITS, images, psnr
from services.common.image_watermark import DEVELOPMENT_KEY, THRESHOLD, embed, score
from tools.figures import pyplot, save_figure


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
    args = figure_bench_arguments(__doc__).parse_args()
    publish(measure(per_size=2 if args.quick else 40), "watermark-image", report, plot, args.out)


if __name__ == "__main__":
    main()
