"""The images and the edits both image-watermark benches use, so that genmedia's
watermark and the ``invisible-watermark`` package's are judged on the same ones.

Images: random square crops of every photo scikit-learn and scikit-image
bundle (14 photos: a temple, a flower, an astronaut, a cat, coffee, a
rocket, galaxies, tissue, brick, grass, gravel, the moon, coins, a
cameraman) at 128, 256 and 384 pixels, and scikit-learn's handwritten
digits scaled up to 128. Edits: none, JPEG at quality 75, halving, cropping
10% off each side, PNG to WebP (Pillow's default quality).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import skimage.data
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

SIZES = (128, 256, 384)
# scikit-image's bundled photographs (no download needed); its drawings,
# scans of text and binary masks are left out: nobody watermarks those.
SKIMAGE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "rocket",
)

Edit = Callable[[np.ndarray], np.ndarray]


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


EDITS: dict[str, Edit] = {
    "none": lambda pixels: pixels,
    "JPEG q75": lambda pixels: _reencode(pixels, "JPEG", quality=75),
    "halved": _halve,
    "10% cropped off each side": _crop,
    "PNG -> WebP": lambda pixels: _reencode(pixels, "WEBP"),
}


def photos() -> list[np.ndarray]:
    """Every bundled photo as RGB uint8 (grey ones repeated over three channels)."""
    pool = list(load_sample_images().images)
    for name in SKIMAGE_PHOTOS:
        pixels = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
        pool.append(np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels)
    return pool


def images(per_size: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """``per_size`` crops a size, taking the photos large enough in turn; and digits."""
    rng = np.random.default_rng(seed)
    pool = photos()
    sets: dict[str, list[np.ndarray]] = {}
    for size in SIZES:
        large_enough = [p for p in pool if min(p.shape[:2]) >= size]
        crops = []
        for index in range(per_size):
            photo = large_enough[index % len(large_enough)]
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
