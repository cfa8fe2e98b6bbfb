"""Digit images from data every machine has: no download, no hub.

- Handwritten: scikit-learn's bundled digits (1797 8x8 scans, 10 classes),
  upscaled to 32x32.
- Typeset: the digits 0-9 rendered with Pillow's bundled font at random
  sizes, offsets and small rotations, the same 32x32 frame.

Images are float32 [N, 32, 32] in [0, 1] with bright ink on a dark ground;
splits are fixed by a seed so every run sees the same data. A small
classifier (scikit-learn) measures the quality figures of the model cards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

SIDE = 32
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLIT_SEED = 0
HELDOUT_FRACTION = 0.3
_CLASSIFIER_SIDE = 16


@dataclass(frozen=True)
class DigitSet:
    images: np.ndarray
    """float32 [N, 32, 32] in [0, 1], bright ink on a dark ground."""
    labels: np.ndarray
    """int64 [N], the digit 0..9."""

    def __len__(self) -> int:
        return len(self.labels)


def _resize(images: np.ndarray, side: int) -> np.ndarray:
    """Bicubic resize of [N, H, W] floats in [0, 1]."""
    out = np.empty((len(images), side, side), dtype=np.float32)
    for i, image in enumerate(images):
        picture = Image.fromarray(image.astype(np.float32), mode="F")
        out[i] = np.asarray(picture.resize((side, side), Image.Resampling.BICUBIC))
    return np.clip(out, 0.0, 1.0)


def handwritten_digits(split: Literal["train", "heldout"]) -> DigitSet:
    """scikit-learn's digits at 32x32; "heldout" is never used for training generators."""
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    train_images, held_images, train_labels, held_labels = train_test_split(
        images,
        digits.target,
        test_size=HELDOUT_FRACTION,
        random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    chosen = (train_images, train_labels) if split == "train" else (held_images, held_labels)
    return DigitSet(_resize(chosen[0], SIDE), chosen[1].astype(np.int64))


def typeset_digits(per_class: int, seed: int) -> DigitSet:
    """Digits rendered with Pillow's bundled font, jittered in size, place and angle."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for digit in range(10):
        for _ in range(per_class):
            size = int(rng.integers(20, 29))
            font = ImageFont.load_default(size=size)
            canvas = Image.new("L", (SIDE * 2, SIDE * 2), 0)
            # Draw at the centre of a larger canvas, rotate, then crop the middle.

            draw = ImageDraw.Draw(canvas)
            draw.text((SIDE, SIDE), str(digit), fill=255, font=font, anchor="mm")
            canvas = canvas.rotate(float(rng.uniform(-10, 10)), resample=Image.Resampling.BILINEAR)
            dx, dy = rng.integers(-2, 3, size=2)
            left, top = SIDE // 2 + int(dx), SIDE // 2 + int(dy)
            crop = canvas.crop((left, top, left + SIDE, top + SIDE))
            images.append(np.asarray(crop, dtype=np.float32) / 255.0)
            labels.append(digit)
    return DigitSet(np.stack(images), np.asarray(labels, dtype=np.int64))


def to_rgb_uint8(images: np.ndarray) -> np.ndarray:
    """[N, H, W] floats in [0, 1] -> [N, H, W, 3] uint8, as Triton's image tensors."""
    grey = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def from_rgb_uint8(images: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] uint8 -> [N, 32, 32] floats in [0, 1] (mean over channels, resized)."""
    grey = images.astype(np.float32).mean(axis=-1) / 255.0
    return grey if grey.shape[1:] == (SIDE, SIDE) else _resize(grey, SIDE)


def _features(images: np.ndarray) -> np.ndarray:
    return _resize(images, _CLASSIFIER_SIDE).reshape(len(images), -1)


class ImageClassifier:
    """An RBF support-vector classifier on 16x16 thumbnails: fast, deterministic, and
    strong enough (about 98% on held-out real digits) that a miss means a bad image."""

    def __init__(self) -> None:
        self._model: Pipeline = make_pipeline(StandardScaler(), SVC(C=5.0))

    def fit(self, images: np.ndarray, labels: np.ndarray) -> ImageClassifier:
        self._model.fit(_features(images), labels)
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._model.predict(_features(images))

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict(images) == labels).mean())


def image_grid(images: np.ndarray, columns: int, scale: int = 2, pad: int = 2) -> Image.Image:
    """[N, H, W, 3] uint8 -> one PNG-ready grid, ``columns`` images a row."""
    count, height, width, _ = images.shape
    rows = -(-count // columns)
    grid = Image.new("RGB", (columns * (width + pad) + pad, rows * (height + pad) + pad), "white")
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid.paste(
            Image.fromarray(image), (pad + column * (width + pad), pad + row * (height + pad))
        )
    return grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
