"""Detecting genmedia's text watermark: how many tokens are green, as a z-score.

The green lists are the ones the ``gpt2`` model biases its sampling towards
(models/genmedia_models/text_watermark.py, Kirchenbauer et al. 2023): after
token p, token t is green when (u(t) + h(p)) mod 1 < gamma, u and h keyed.
This side needs no torch; tests/unit/test_text_watermark.py checks that both
sides compute the same lists. Human text has about gamma of its tokens
green; a z-score of 4 or more happens by chance about 3 times in 100,000.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# What the gpt2 model uses when GENMEDIA_TEXT_WATERMARK_KEY is unset (local runs, tests).
DEVELOPMENT_KEY = "genmedia-development-text-watermark"


def token_uniforms(key: str, vocab_size: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).random(vocab_size)


def previous_token_shift(key: str, previous: int) -> float:
    keyed = hashlib.sha256(key.encode()).digest()
    digest = hashlib.blake2b(int(previous).to_bytes(8, "little"), key=keyed, digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


@dataclass(frozen=True)
class WatermarkScore:
    tokens_scored: int
    green_tokens: int
    z_score: float


class WatermarkDetector:
    def __init__(self, key: str, vocab_size: int, gamma: float) -> None:
        self._key = key
        self._gamma = gamma
        self._uniforms = token_uniforms(key, vocab_size)

    @property
    def gamma(self) -> float:
        return self._gamma

    def is_green(self, previous: int, token: int) -> bool:
        return bool((self._uniforms[token] + previous_token_shift(self._key, previous)) % 1.0
                    < self._gamma)  # fmt: skip

    def score(self, token_ids: Sequence[int]) -> WatermarkScore:
        """Every token after the first is scored against the list its predecessor picks."""
        pairs = list(itertools.pairwise(token_ids))
        green = sum(self.is_green(previous, token) for previous, token in pairs)
        scored = len(pairs)
        if scored == 0:
            return WatermarkScore(0, 0, 0.0)
        expected = self._gamma * scored
        spread = math.sqrt(scored * self._gamma * (1 - self._gamma))
        return WatermarkScore(scored, green, (green - expected) / spread)
