"""The rule that keeps public development keys out of production.

A watermark key that anyone can read (the development key in the source, a
Secret template's placeholder, an empty or short string) would let anyone
forge or strip genmedia's marks. Every process that marks or verifies
refuses such a key at start-up unless ``GENMEDIA_DEVELOPMENT_MODE`` says this
is local development.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEVELOPMENT_MODE_ENV = "GENMEDIA_DEVELOPMENT_MODE"
MIN_KEY_CHARACTERS = 32
"""`openssl rand -hex 32` gives 64; anything shorter than 32 is too easy to guess."""
PLACEHOLDER_WORDS = ("replace", "placeholder", "changeme", "change-me", "example", "your-")
_TRUE = ("1", "true", "yes", "on")


def development_mode(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``GENMEDIA_DEVELOPMENT_MODE`` is on (1, true, yes or on)."""
    value = (os.environ if env is None else env).get(DEVELOPMENT_MODE_ENV, "")
    return value.strip().lower() in _TRUE


def weak_key_reason(key: str, development_key: str) -> str | None:
    """Why ``key`` must not mark or verify anything outside development, or None."""
    if not key.strip():
        return "is empty"
    if key == development_key:
        return "is the public development key (it is in the source code)"
    if any(word in key.lower() for word in PLACEHOLDER_WORDS):
        return "is a placeholder (the Secret template's text)"
    if len(key) < MIN_KEY_CHARACTERS:
        return f"is {len(key)} characters; at least {MIN_KEY_CHARACTERS} are needed"
    return None
