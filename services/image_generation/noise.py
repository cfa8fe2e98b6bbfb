"""Seeded truncated-normal latent noise, as BigGAN samples it.

The seed's ``truncated_noise_sample`` draws from a normal truncated to
[-2, 2] and scales by the truncation. Here numpy's PCG64 generator does the
drawing (resampling out-of-range values), one stream per row keyed by
(seed, row), so services need no scipy, the same seed gives the same noise
on every machine, and image i of a request does not depend on how many
images were asked for.
"""

from __future__ import annotations

import numpy as np

from genmedia_shared.limits import MAX_SEED

TRUNCATION_BOUND = 2.0


def truncated_noise(seed: int, rows: int, dim: int, truncation: float) -> np.ndarray:
    """[rows, dim] float32 noise in [-2t, 2t]."""
    noise = np.empty((rows, dim), dtype=np.float32)
    for row in range(rows):
        rng = np.random.Generator(np.random.PCG64([seed, row]))
        values = rng.standard_normal(dim)
        outside = np.abs(values) > TRUNCATION_BOUND
        while outside.any():
            values[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(values) > TRUNCATION_BOUND
        noise[row] = values * truncation
    return noise


def random_seed() -> int:
    return int(np.random.default_rng().integers(0, MAX_SEED))
