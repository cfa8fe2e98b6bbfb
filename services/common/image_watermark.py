"""An invisible watermark in every image genmedia serves, found again after the edits
people make: JPEG at quality 75, halving, cropping 10% off each side, PNG to WebP.

A keyed pseudo-random tile (32 x 32 pixels of +-1 cells, 4 pixels each, so
that JPEG and halving keep it) is repeated over the whole image and added to
its brightness a few grey levels deep. To find it, the image's fine detail
(brightness minus a blur of it) is folded onto one tile: every copy adds
up, the picture underneath averages out. The folded tile is correlated with
the key's tile at every cyclic shift (a crop only shifts it) and at scale 1
and 1/2 (a halved image is brought back to scale first); the best peak,
measured in standard deviations of the other shifts, is the score. numpy and
Pillow only: the services and the gateway run it.

The detector reads a centred window of at most WORK_SIDE pixels a side, not
the whole image: the tile repeats everywhere, so the window holds a thousand
copies of it (plenty), and the cost of a check stays bounded whatever the
image's size (an anonymous caller may send 16 megapixels).
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

TILE = 32
CELL = 4
STRENGTH = (2.5, 0.5, 12.0)
"""Depth of the pattern in grey levels: base + factor x local detail, at most max. Busy
areas hide a deeper pattern (and need it: their own detail is the detector's noise)."""
SCALES = (1.0, 0.5)
MIN_SIDE = 64
"""Images with a side under this are left unmarked: a pattern that survives the edits
would be plainly visible on them, and there is too little of them to find it reliably."""
THRESHOLD = 0.4
"""Correlation from which the watermark counts as found (bench/watermark_image.py measures
detections and false positives on photos at this threshold)."""
WORK_SIDE = 1024
"""Largest side of the window the detector reads (at scale 1/2, half of it, brought back)."""
DEVELOPMENT_KEY = "genmedia-development-image-watermark"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _box_blur(values: np.ndarray, size: int, wrap: bool = False) -> np.ndarray:
    """Mean over a size x size window (edges repeated, or wrapped for a tile)."""
    pad = size // 2
    mode = "wrap" if wrap else "edge"
    # Summed in float64: a float32 running sum over a large window loses the small values.
    padded = np.pad(values.astype(np.float64), pad, mode=mode)
    summed = padded.cumsum(0).cumsum(1)
    summed = np.pad(summed, ((1, 0), (1, 0)))
    h, w = values.shape
    window = (
        summed[size : size + h, size : size + w]
        - summed[:h, size : size + w]
        - summed[size : size + h, :w]
        + summed[:h, :w]
    )
    return (window / (size * size)).astype(np.float32)


def key_tile(key: str) -> np.ndarray:
    """The key's TILE x TILE pattern of +-1 cells, softened at the cell edges, unit power."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    cells = np.random.default_rng(seed).choice([-1.0, 1.0], (TILE // CELL, TILE // CELL))
    tile = _box_blur(np.kron(cells, np.ones((CELL, CELL))), 3, wrap=True)
    tile -= tile.mean()
    return (tile / np.abs(tile).max()).astype(np.float32)


def _detail(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fine detail of the brightness, and its local size (RMS over 9 x 9 pixels)."""
    detail = luma - _box_blur(luma, 5)
    # Summed-area tables round: a flat area can come out a hair below zero.
    return detail, np.sqrt(np.maximum(_box_blur(detail * detail, 9), 0.0))


def applies(width: int, height: int) -> bool:
    return min(width, height) >= MIN_SIDE


def embed(pixels: np.ndarray, key: str) -> np.ndarray:
    """``pixels`` [H, W, 3] uint8 with the key's tile added to their brightness (unchanged
    when a side is under MIN_SIDE)."""
    height, width = pixels.shape[:2]
    if not applies(width, height):
        return pixels
    reps = (-(-height // TILE), -(-width // TILE))
    base, factor, most = STRENGTH
    _, activity = _detail(pixels.astype(np.float32) @ _LUMA)
    depth = np.clip(base + factor * activity, base, most)
    pattern = np.tile(key_tile(key), reps)[:height, :width] * depth
    marked = pixels.astype(np.float32) + pattern[..., None]
    return np.clip(np.rint(marked), 0, 255).astype(np.uint8)


def _fold(residual: np.ndarray) -> np.ndarray:
    """Adds every TILE x TILE block of the residual (by absolute position) onto one tile."""
    height, width = (residual.shape[0] // TILE) * TILE, (residual.shape[1] // TILE) * TILE
    blocks = residual[:height, :width].reshape(height // TILE, TILE, width // TILE, TILE)
    return blocks.sum(axis=(0, 2))


def _score_at(luma: np.ndarray, reference: np.ndarray) -> float:
    """Best correlation coefficient of the folded detail with the reference, over shifts."""
    if min(luma.shape) < TILE:
        return 0.0
    detail, activity = _detail(luma)
    # Busy areas are noisy evidence: weigh each pixel by how quiet its surroundings are.
    folded = _fold(detail / (activity + 2.0))
    folded -= folded.mean()
    norm = np.linalg.norm(folded) * np.linalg.norm(reference)
    if norm == 0:
        return 0.0
    correlation = np.real(np.fft.ifft2(np.fft.fft2(folded) * np.conj(np.fft.fft2(reference))))
    return float(correlation.max() / norm)


def centre_window(values: np.ndarray, side: int) -> np.ndarray:
    """The centred ``side`` x ``side`` part of an array (all of a side that is shorter).

    Any window will do: the tile is repeated over the whole image, and a crop only shifts it.
    """
    top = max(0, (values.shape[0] - side) // 2)
    left = max(0, (values.shape[1] - side) // 2)
    return values[top : top + side, left : left + side]


def score(pixels: np.ndarray, key: str) -> float:
    """How strongly the key's watermark is in ``pixels`` [H, W, 3]: the best correlation of
    their folded detail with the key's tile, about 0.1-0.3 without the watermark. Reads at
    most WORK_SIDE x WORK_SIDE pixels of the centre, so its time and memory are bounded."""
    tile = key_tile(key)
    reference = tile - _box_blur(tile, 5, wrap=True)
    reference -= reference.mean()
    luma = centre_window(pixels, WORK_SIDE).astype(np.float32) @ _LUMA
    best = 0.0
    for scale in SCALES:
        scaled = centre_window(luma, round(WORK_SIDE * scale))
        if scale != 1.0:
            size = (round(scaled.shape[1] / scale), round(scaled.shape[0] / scale))
            scaled = np.asarray(
                Image.fromarray(scaled, mode="F").resize(size, Image.Resampling.BICUBIC)
            )
        best = max(best, _score_at(scaled, reference))
    return best
