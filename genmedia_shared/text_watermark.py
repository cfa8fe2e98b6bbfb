"""The text watermark's keyed green lists (Kirchenbauer et al. 2023), computed once for both
sides: the ``gpt2`` model adds delta to the green tokens' logits, the gateway counts them.

Every token t gets a keyed uniform number u(t) once; the green list after
token p is {t : (u(t) + h(p)) mod 1 < gamma}, where h(p) is a keyed hash of
p as a number in [0, 1). numpy only.
"""

from __future__ import annotations

import hashlib

import numpy as np

KEY_ENV = "GENMEDIA_TEXT_WATERMARK_KEY"
KEY_FILE_ENV = "GENMEDIA_TEXT_WATERMARK_KEY_FILE"
DEVELOPMENT_KEY = "genmedia-development-text-watermark"
"""Local runs and tests mark and verify with this; a deployment sets its own secret key."""
DEFAULT_GAMMA, DEFAULT_DELTA = 0.25, 2.0


def keyed_digest(key: str) -> bytes:
    """The key as the hashes use it (computed once per key, not per token)."""
    return hashlib.sha256(key.encode()).digest()


def token_uniforms(key: str, vocab_size: int) -> np.ndarray:
    """u(t) for every token t of the vocabulary, float64 in [0, 1)."""
    seed = int.from_bytes(keyed_digest(key)[:8], "little")
    return np.random.default_rng(seed).random(vocab_size)


def shift(keyed: bytes, previous: int) -> float:
    """h(previous) in [0, 1) under a key's digest."""
    digest = hashlib.blake2b(int(previous).to_bytes(8, "little"), key=keyed, digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def previous_token_shift(key: str, previous: int) -> float:
    return shift(keyed_digest(key), previous)


def green(uniforms: np.ndarray, keyed: bytes, previous: int, gamma: float) -> np.ndarray:
    """Which tokens are green after ``previous``: a [vocab] bool array."""
    return (uniforms + shift(keyed, previous)) % 1.0 < gamma
