"""The temporal hold: still pixels keep their output, moved ones (and a margin) take the new."""

from __future__ import annotations

import numpy as np

from services.image_translation.temporal_hold import MARGIN_PX, TemporalHold


def still_picture(noise_seed: int, side: int = 32) -> np.ndarray:
    """The same grey picture with encoder-like noise of a level or two."""
    rng = np.random.default_rng(noise_seed)
    return np.clip(120 + rng.integers(-2, 3, (side, side, 3)), 0, 255).astype(np.uint8)


def output(seed: int, side: int = 32) -> np.ndarray:
    """A translation that differs every frame, as CycleGAN's does on noisy input."""
    return np.random.default_rng(1000 + seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_off_passes_every_fresh_output_through() -> None:
    hold = TemporalHold(0)
    for seed in range(3):
        assert np.array_equal(hold(still_picture(seed), output(seed)), output(seed))


def test_a_still_picture_keeps_its_first_output_through_its_noise() -> None:
    hold = TemporalHold(6)
    first = hold(still_picture(0), output(0))
    assert np.array_equal(first, output(0))
    for seed in range(1, 5):
        assert np.array_equal(hold(still_picture(seed), output(seed)), output(0))


def test_moved_pixels_and_their_margin_take_the_new_output_the_rest_holds() -> None:
    hold = TemporalHold(6)
    hold(still_picture(0), output(0))
    moved = still_picture(1)
    moved[10:14, 10:14] = 255  # a bright square appears
    shown = hold(moved, output(1))
    near = slice(10 - MARGIN_PX, 14 + MARGIN_PX)
    assert np.array_equal(shown[near, near], output(1)[near, near])
    far = np.ones((32, 32), bool)
    far[near, near] = False
    assert np.array_equal(shown[far], output(0)[far])
    # The square stays: from now on it holds too, against the input it was taken from.
    again = still_picture(2)
    again[10:14, 10:14] = 255
    assert np.array_equal(hold(again, output(2)), shown)


def test_a_slow_drift_is_taken_once_it_adds_up_to_the_threshold() -> None:
    hold = TemporalHold(6)
    base = np.full((8, 8, 3), 100, np.uint8)
    hold(base, output(0, 8))
    assert np.array_equal(hold(base + 3, output(1, 8)), output(0, 8))  # 3 levels: held
    assert np.array_equal(hold(base + 6, output(2, 8)), output(2, 8))  # 6 from the held one


def test_a_new_size_starts_afresh() -> None:
    hold = TemporalHold(6)
    hold(still_picture(0), output(0))
    assert np.array_equal(hold(still_picture(1, 16), output(1, 16)), output(1, 16))
