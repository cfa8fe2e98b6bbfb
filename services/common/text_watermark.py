"""Detecting genmedia's text watermark: how many tokens are green, as a z-score.

The green lists are the ones the ``gpt2`` model biases its sampling towards
(genmedia_shared/text_watermark.py, Kirchenbauer et al. 2023): after token
p, token t is green when (u(t) + h(p)) mod 1 < gamma, u and h keyed. Both
sides compute the lists with the same shared code; this side needs no torch.
Human text has about gamma of its tokens green; a z-score of 4 or more
happens by chance about 3 times in 100,000.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from genmedia_shared.text_watermark import keyed_digest, shift, token_uniforms


@dataclass(frozen=True)
class WatermarkScore:
    tokens_scored: int
    green_tokens: int
    z_score: float


class WatermarkDetector:
    def __init__(self, key: str, vocab_size: int, gamma: float) -> None:
        self._keyed = keyed_digest(key)
        self._gamma = gamma
        self._uniforms = token_uniforms(key, vocab_size)

    @property
    def gamma(self) -> float:
        return self._gamma

    def is_green(self, previous: int, token: int) -> bool:
        return bool((self._uniforms[token] + shift(self._keyed, previous)) % 1.0 < self._gamma)

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
