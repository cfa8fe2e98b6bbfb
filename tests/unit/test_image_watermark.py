"""The invisible image watermark: found after the edits it must survive, not found in
clean images or with another key, left off small images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.common import image_watermark

KEY = "test-key"


def photo(size: int = 192) -> np.ndarray:
    """A smooth picture with texture, like a generator's output."""
    y, x = np.mgrid[0:size, 0:size] / size
    rng = np.random.default_rng(1)
    channels = [np.sin(7 * x + c) * np.cos(4 * y - c) for c in range(3)]
    pixels = (np.stack(channels, -1) + 1) * 100 + rng.normal(0, 8, (size, size, 3)) + 20
    return np.clip(pixels, 0, 255).astype(np.uint8)


def reencoded(pixels: np.ndarray, image_format: str, **options: object) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format, **options)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


EDITS = {
    "none": lambda p: p,
    "jpeg 75": lambda p: reencoded(p, "JPEG", quality=75),
    "halved": lambda p: np.asarray(Image.fromarray(p).resize((p.shape[1] // 2, p.shape[0] // 2))),
    "cropped": lambda p: p[p.shape[0] // 10 : p.shape[0] * 9 // 10, p.shape[1] // 10 : -5],
    "webp": lambda p: reencoded(p, "WEBP"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_found_after_each_edit_and_absent_without_it(edit: str) -> None:
    original = photo()
    marked = image_watermark.embed(original, KEY)
    assert image_watermark.score(EDITS[edit](marked), KEY) >= image_watermark.THRESHOLD
    assert image_watermark.score(EDITS[edit](original), KEY) < image_watermark.THRESHOLD
    assert image_watermark.score(EDITS[edit](marked), "other key") < image_watermark.THRESHOLD


def test_the_mark_is_faint_and_small_images_are_left_alone() -> None:
    original = photo()
    marked = image_watermark.embed(original, KEY)
    difference = marked.astype(int) - original.astype(int)
    assert 0 < np.abs(difference).mean() < 6 and np.abs(difference).max() <= 13
    small = photo(48)
    assert np.array_equal(image_watermark.embed(small, KEY), small)
    assert not image_watermark.applies(48, 200) and image_watermark.applies(64, 64)
    assert image_watermark.score(np.zeros((16, 16, 3), np.uint8), KEY) == 0.0


def test_a_large_image_is_read_through_a_bounded_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # embed() at a constant depth of 4 grey levels: a 4000 x 4000 marked picture built cheaply.
    coarse = np.random.default_rng(7).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    picture = np.asarray(Image.fromarray(coarse).resize((4000, 4000)), dtype=np.float32)
    pattern = np.tile(image_watermark.key_tile(KEY), (125, 125))[..., None] * 4
    large = np.clip(picture + pattern, 0, 255).astype(np.uint8)
    seen: list[tuple[int, ...]] = []
    original = image_watermark._score_at

    def recording(luma: np.ndarray, reference: np.ndarray) -> float:
        seen.append(luma.shape)
        return original(luma, reference)

    monkeypatch.setattr(image_watermark, "_score_at", recording)
    assert image_watermark.score(large, KEY) >= image_watermark.THRESHOLD
    assert image_watermark.score(large, "other key") < image_watermark.THRESHOLD
    side = image_watermark.WORK_SIDE
    assert seen and all(shape == (side, side) for shape in seen)
