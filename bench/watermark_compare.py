"""genmedia's invisible image watermark against the ``invisible-watermark``
package's three methods (dwtDct, dwtDctSvd, rivaGan), on the same images and
the same edits (issue #10).

    python -m bench.watermark_compare            # make bench runs it
    python -m bench.watermark_compare --quick    # a smoke run

Images and edits: ``bench/watermark_images.py``, shared with
``bench.watermark_image``. The package's methods carry a 32-bit payload; an
image counts as marked when at least 26 of its 32 decoded bits match (a
random guess does that once in about 4,000), which is what a verifier
without the original would have to decide on. The package refuses images of
under 256 x 256 pixels: those count as not marked, and its verifier is given
an edited image scaled back up by the smallest whole factor that it accepts
(a halved 384 px image becomes 384 px again). genmedia's own method decides
at its score 0.4, as ``VerifyImage`` does. Writes ``watermark-compare.json``
and ``watermark-compare.png`` into ``bench/results/``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from imwatermark import WatermarkDecoder, WatermarkEncoder
from PIL import Image
from tqdm import tqdm

from bench.common import figure_bench_arguments, median, publish
from bench.watermark_images import EDITS, images, psnr
from services.common import image_watermark
from tools.figures import pyplot, save_figure

PAYLOAD_BITS = 32  # rivaGan's only length
PACKAGE_MIN_PIXELS = 256 * 256  # imwatermark's own limit, on width x height
BITS_TO_MATCH = 26  # P(>= 26 of 32 by chance) = 2.6e-4
PACKAGE_METHODS = ("dwtDct", "dwtDctSvd", "rivaGan")
# A fixed, balanced payload: a decoder stuck at all zeros or all ones scores half.
PAYLOAD = [int(bit) for bit in np.random.default_rng(10).permutation([0, 1] * 16)]


class Refused(Exception):
    """The method does not mark an image this small."""


@dataclass(frozen=True)
class Method:
    name: str
    embed: Callable[[np.ndarray], np.ndarray]  # RGB uint8 -> RGB uint8, or raises Refused
    score: Callable[[np.ndarray], float]  # higher: more surely marked
    threshold: float


def genmedia_method() -> Method:
    key = image_watermark.DEVELOPMENT_KEY

    def embed(pixels: np.ndarray) -> np.ndarray:
        if not image_watermark.applies(pixels.shape[1], pixels.shape[0]):
            raise Refused
        return image_watermark.embed(pixels, key)

    def score(pixels: np.ndarray) -> float:
        return image_watermark.score(pixels, key)

    return Method("genmedia", embed, score, image_watermark.THRESHOLD)


def _scaled_up_for_package(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    factor = math.ceil(math.sqrt(PACKAGE_MIN_PIXELS / (height * width)))
    if factor <= 1:
        return pixels
    size = (width * factor, height * factor)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def package_method(name: str) -> Method:
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", PAYLOAD)
    decoder = WatermarkDecoder("bits", PAYLOAD_BITS)
    if name == "rivaGan":
        WatermarkEncoder.loadModel()  # its ONNX encoder and decoder, shipped in the wheel

    def embed(pixels: np.ndarray) -> np.ndarray:
        if pixels.shape[0] * pixels.shape[1] < PACKAGE_MIN_PIXELS:
            raise Refused
        # The package works on OpenCV's BGR order.
        bgr = encoder.encode(np.ascontiguousarray(pixels[..., ::-1]), name)
        return np.ascontiguousarray(bgr[..., ::-1])

    def score(pixels: np.ndarray) -> float:
        bgr = np.ascontiguousarray(_scaled_up_for_package(pixels)[..., ::-1])
        bits = decoder.decode(bgr, name)
        return float(np.mean(np.asarray(bits, dtype=int) == PAYLOAD))

    return Method(name, embed, score, BITS_TO_MATCH / PAYLOAD_BITS)


def methods() -> list[Method]:
    return [genmedia_method(), *(package_method(name) for name in PACKAGE_METHODS)]


def _judge(method: Method, originals: list[np.ndarray]) -> dict[str, Any]:
    """Detection and false-positive rates per edit, PSNR and embedding time on one set."""
    marked: list[np.ndarray | None] = []
    seconds: list[float] = []
    for pixels in originals:
        started = time.perf_counter()
        try:
            marked.append(method.embed(pixels))
        except Refused:
            marked.append(None)
        seconds.append(time.perf_counter() - started)
    done = [(o, m) for o, m in zip(originals, marked, strict=True) if m is not None]
    edits: dict[str, Any] = {}
    for edit, apply in EDITS.items():
        found = [method.score(apply(m)) >= method.threshold for _, m in done]
        clean = [method.score(apply(o)) >= method.threshold for o in originals]
        edits[edit] = {
            # A refused image is an image the verifier cannot find marked.
            "detection_rate": sum(found) / len(originals),
            "false_positive_rate": sum(clean) / len(clean),
        }
    return {
        "marked_share": len(done) / len(originals),
        "edits": edits,
        "psnr_db": float(np.mean([psnr(o, m) for o, m in done])) if done else None,
        "embed_ms_p50": 1000 * median(seconds) if done else None,
    }


def measure(per_size: int, progress: bool = True) -> dict[str, Any]:
    sets = images(per_size)
    chosen = methods()
    results: dict[str, Any] = {
        "per_set": per_size,
        "bits_to_match": f"{BITS_TO_MATCH} of {PAYLOAD_BITS}",
        "methods": {},
    }
    with tqdm(total=len(chosen) * len(sets), desc="compare", disable=not progress) as bar:
        for method in chosen:
            judged: dict[str, Any] = {}
            for name, originals in sets.items():
                bar.set_postfix_str(f"{method.name}, {name}")
                judged[name] = _judge(method, originals)
                bar.update(1)
            results["methods"][method.name] = {"threshold": method.threshold, "sets": judged}
    return results


def report(results: dict[str, Any]) -> str:
    edits = list(EDITS)
    lines = [
        f"image watermarks compared, {results['per_set']} images a set; found / false positives",
        f"{'method':11s}{'set':14s}"
        + "".join(f"{e[:13]:>15s}" for e in edits)
        + f"{'PSNR':>8s}{'embed':>10s}",
    ]
    for name, figures in results["methods"].items():
        for set_name, row in figures["sets"].items():
            rates = [row["edits"][e] for e in edits]
            cells = "".join(
                f"{r['detection_rate']:>9.0%} /{r['false_positive_rate']:>4.0%}" for r in rates
            )
            if row["psnr_db"] is None:
                tail = f"{'refused: too small':>18s}"
            else:
                tail = f"{row['psnr_db']:6.1f}dB{row['embed_ms_p50']:8.1f}ms"
            lines.append(f"{name:11s}{set_name:14s}{cells}{tail}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    names = list(results["methods"])
    set_names = list(next(iter(results["methods"].values()))["sets"])
    edits = list(EDITS)
    figure, axes = plt.subplots(1, len(set_names), figsize=(4.2 * len(set_names), 4.5), sharey=True)
    width = 0.8 / len(names)
    for axis, set_name in zip(np.atleast_1d(axes), set_names, strict=True):
        for index, name in enumerate(names):
            rows = results["methods"][name]["sets"][set_name]["edits"]
            x = np.arange(len(edits)) + index * width
            axis.bar(x, [rows[e]["detection_rate"] for e in edits], width, label=name)
            axis.scatter(x, [rows[e]["false_positive_rate"] for e in edits], color="black",
                         marker="x", s=12, zorder=3)  # fmt: skip
        axis.set_xticks(np.arange(len(edits)) + 0.4 - width / 2, edits, rotation=35, ha="right")
        axis.set_title(set_name)
        axis.set_ylim(0, 1.05)
    np.atleast_1d(axes)[0].set_ylabel("found (bars) / false positives (x)")
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="lower left")
    figure.suptitle("genmedia's watermark and invisible-watermark's, after the same edits")
    save_figure(figure, path)


def main() -> None:
    args = figure_bench_arguments(__doc__).parse_args()
    results = measure(per_size=2 if args.quick else 20)
    publish(results, "watermark-compare", report, plot, args.out)


if __name__ == "__main__":
    main()
