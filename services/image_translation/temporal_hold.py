"""Temporal hold: where a video's picture stands still, its translation stands still too.

CycleGAN translates each frame on its own, so the encoder's noise in a still picture (a
level or two, different in every frame) comes out as flicker several times larger. The
hold keeps, for each pixel, the input it was last translated from and that output; a
pixel takes the new frame's output only when its input has moved ``threshold`` levels or
more from the one it holds. A margin around every moved pixel takes the new output too:
the model's output at a pixel depends on its neighbours, so holding right up to a moving
edge would leave a seam. The held output carries the watermark (its pattern is the same
in every frame).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

MARGIN_PX = 4
"""Pixels around a moved one that take the new output as well."""


class TemporalHold:
    def __init__(self, threshold: int) -> None:
        self._threshold = threshold
        self._input: np.ndarray | None = None
        self._output: np.ndarray | None = None

    def __call__(self, source: np.ndarray, translated: np.ndarray) -> np.ndarray:
        """The output to show for ``source`` [H, W, 3] given its fresh ``translated``."""
        if self._threshold <= 0:
            return translated
        if self._input is None or self._output is None or self._input.shape != source.shape:
            self._input, self._output = source.copy(), translated.copy()
            return translated
        moved = np.abs(source.astype(np.int16) - self._input).max(axis=2) >= self._threshold
        if moved.all():
            self._input, self._output = source.copy(), translated.copy()
            return translated
        if moved.any():
            grown = Image.fromarray(moved.astype(np.uint8) * 255).filter(
                ImageFilter.MaxFilter(2 * MARGIN_PX + 1)
            )
            moved = np.asarray(grown) > 0
            self._input[moved] = source[moved]
            self._output[moved] = translated[moved]
        return self._output.copy()
