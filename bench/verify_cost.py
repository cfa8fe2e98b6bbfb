"""What one image verification costs the gateway, against scoring the whole image (issue #24:
an anonymous 16-megapixel VerifyImage once took 3 GB and 13 s).

    python -m bench.verify_cost            # make bench runs it
    python -m bench.verify_cost --quick    # a smoke run (1000 px only)

Each check runs in a fresh process on a marked image file: decode, Content Credentials and
watermark, as VerifyImage does them ("bounded": the detector's centred window), and the
detector on the whole decoded image at both scales, as before the window ("whole image").
Peak resident memory above the process's own, and wall time. Writes ``verify-cost.json`` and
``verify-cost.png`` into ``bench/results/``.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import RESULTS_DIR, publish
from services.common import image_watermark
from services.common.images import decode_image
from services.gateway.provenance import VERIFY_LIMITS, _verify_image
from tools.figures import pyplot, save_figure

KEY = image_watermark.DEVELOPMENT_KEY
SIDES = (1000, 2000, 4000)
FORMATS = ("PNG", "JPEG", "WEBP")
LIMIT_MB = 160.0
"""What test_open_doors.py allows one 16-megapixel check to add to the gateway."""


def marked_image(side: int, image_format: str) -> bytes:
    """A smooth picture with the key's tile 4 grey levels deep (embed() at constant depth)."""
    coarse = np.random.default_rng(side).integers(0, 256, (side // 50 + 1,) * 2 + (3,), np.uint8)
    picture = np.asarray(Image.fromarray(coarse).resize((side, side)), dtype=np.float32)
    reps = -(-side // image_watermark.TILE)
    pattern = np.tile(image_watermark.key_tile(KEY), (reps, reps))[:side, :side, None] * 4
    buffer = io.BytesIO()
    Image.fromarray(np.clip(picture + pattern, 0, 255).astype(np.uint8)).save(buffer, image_format)
    return buffer.getvalue()


def _whole_image_score(data: bytes) -> float:
    """The detector before its window: every pixel, at scale 1 and 1/2 brought back."""
    tile = image_watermark.key_tile(KEY)
    reference = tile - image_watermark._box_blur(tile, 5, wrap=True)
    reference -= reference.mean()
    luma = decode_image(data, VERIFY_LIMITS).astype(np.float32) @ image_watermark._LUMA
    halved = luma.shape[1] * 2, luma.shape[0] * 2
    upscaled = np.asarray(Image.fromarray(luma, mode="F").resize(halved, Image.Resampling.BICUBIC))
    return max(image_watermark._score_at(scaled, reference) for scaled in (luma, upscaled))


def _peak_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def child(path: Path, mode: str) -> dict[str, float]:
    """One check in this (fresh) process: its time and what it added to peak memory."""
    data = path.read_bytes()
    rss = float(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current resident memory
    started = time.perf_counter()
    if mode == "bounded":
        watermark = _verify_image(data, None, KEY, VERIFY_LIMITS)[1]
        score = watermark.score if watermark is not None else 0.0
    else:
        score = _whole_image_score(data)
    return {"seconds": time.perf_counter() - started, "mb": _peak_mb() - rss, "score": score}


def measure(sides: tuple[int, ...]) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for side in sides:
            for image_format in FORMATS:
                path = Path(scratch) / f"{side}.{image_format.lower()}"
                path.write_bytes(marked_image(side, image_format))
                row: dict[str, Any] = {"side": side, "format": image_format}
                for mode in ("bounded", "whole"):
                    done = subprocess.run(
                        [sys.executable, "-m", "bench.verify_cost", "--child", str(path), mode],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    row[mode] = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
    largest = [row for row in rows if row["side"] == max(sides)]
    worst = max(largest, key=lambda row: row["bounded"]["mb"] if row["format"] != "WEBP" else 0)
    return {
        "rows": rows,
        "verdict": {
            "target": f"a {max(sides)} px PNG or JPEG check adds < {LIMIT_MB:g} MB",
            "figure": f"{worst['bounded']['mb']:.0f} MB ({worst['format']})",
            "met": worst["bounded"]["mb"] < LIMIT_MB,
        },
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        "one verification in a fresh process: peak memory added, wall time, watermark score",
        f"{'image':14s}{'bounded':>24s}{'whole image':>26s}{'memory':>9s}{'time':>8s}",
    ]
    for row in results["rows"]:
        bounded, whole = row["bounded"], row["whole"]
        lines.append(
            f"{row['side']:5d} px {row['format']:5s}"
            f"{bounded['mb']:8.0f} MB{bounded['seconds']:7.2f} s{bounded['score']:7.2f}"
            f"{whole['mb']:9.0f} MB{whole['seconds']:7.2f} s{whole['score']:7.2f}"
            f"{whole['mb'] / max(bounded['mb'], 1):8.1f}x"
            f"{whole['seconds'] / max(bounded['seconds'], 1e-3):7.1f}x"
        )
    verdict = results["verdict"]
    lines.append(f"{'met    ' if verdict['met'] else 'NOT MET'}  {verdict['target']}: "
                 f"{verdict['figure']}")  # fmt: skip
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, key, unit in ((axes[0], "mb", "MB added"), (axes[1], "seconds", "seconds")):
        for image_format in FORMATS:
            rows = [row for row in results["rows"] if row["format"] == image_format]
            sides = [row["side"] for row in rows]
            for mode, style in (("bounded", "-o"), ("whole", "--x")):
                values = [row[mode][key] for row in rows]
                axis.plot(sides, values, style, label=f"{image_format} {mode}")
        axis.set_xlabel("image side (px)")
        axis.set_ylabel(unit)
        axis.set_yscale("log")
    axes[0].legend(fontsize=7)
    figure.suptitle("One VerifyImage check: the detector's window against the whole image")
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--child", nargs=2, metavar=("FILE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1])))
        return
    results = measure(SIDES[:1] if args.quick else SIDES)
    publish(results, "verify-cost", report, plot, args.out)


if __name__ == "__main__":
    main()
