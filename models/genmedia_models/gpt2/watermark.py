"""A statistical watermark in every generated text (Kirchenbauer et al. 2023, "A Watermark
for Large Language Models"), applied where tokens are sampled.

Before each token is picked, the vocabulary is split by a keyed hash of the
previous token into a "green" fraction gamma and the rest, and delta is
added to the green tokens' logits. Text from the model then holds far more
green tokens than gamma of them; human text holds about gamma. A detector
with the key counts them and computes a z-score
(services/common/text_watermark.py); nothing about the text shows it to
anyone without the key.

The split (genmedia_shared/text_watermark.py, which the detector uses too):
every token t gets a keyed uniform number u(t) once; the green list after
token p is {t : (u(t) + h(p)) mod 1 < gamma}, where h(p) is a keyed hash of
p as a number in [0, 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genmedia_models.weights import model_parameter
from genmedia_shared.keys import DEVELOPMENT_MODE_ENV, development_mode, weak_key_reason
from genmedia_shared.text_watermark import (
    DEFAULT_DELTA,
    DEFAULT_GAMMA,
    DEVELOPMENT_KEY,
    KEY_ENV,
    KEY_FILE_ENV,
    green,
    keyed_digest,
    shift,
    token_uniforms,
)


def watermark_key(env: Mapping[str, str] | None = None) -> str:
    """The key from the file ``GENMEDIA_TEXT_WATERMARK_KEY_FILE`` names (a mounted Secret),
    else ``GENMEDIA_TEXT_WATERMARK_KEY``, else the development key; a development,
    placeholder, empty or short key only with ``GENMEDIA_DEVELOPMENT_MODE=true`` (raises
    ValueError otherwise, so the model does not load)."""
    env = os.environ if env is None else env
    path = env.get(KEY_FILE_ENV)
    key = Path(path).read_text().strip() if path else env.get(KEY_ENV) or DEVELOPMENT_KEY
    reason = weak_key_reason(key, DEVELOPMENT_KEY)
    if reason is not None and not development_mode(env):
        raise ValueError(
            f"the text watermark key ({KEY_FILE_ENV} or {KEY_ENV}) {reason}: anyone could "
            f"forge or strip the watermark. Set a random key (`openssl rand -hex 32`), or "
            f"{DEVELOPMENT_MODE_ENV}=true for local development"
        )
    return key


@dataclass(frozen=True)
class GreenList:
    key: str
    vocab_size: int
    gamma: float = DEFAULT_GAMMA
    delta: float = DEFAULT_DELTA
    _uniforms: np.ndarray = field(init=False, repr=False, compare=False)
    _keyed: bytes = field(init=False, repr=False, compare=False)
    _on_device: dict[torch.device, torch.Tensor] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        if not 0 < self.gamma < 1:
            raise ValueError(f"watermark gamma must be in (0, 1), got {self.gamma}")
        if not 0 <= self.delta <= 20:
            raise ValueError(f"watermark delta must be 0..20, got {self.delta}")
        object.__setattr__(self, "_uniforms", token_uniforms(self.key, self.vocab_size))
        # Hashed once, not at every token: the keyed hash only needs the digest.
        object.__setattr__(self, "_keyed", keyed_digest(self.key))

    @classmethod
    def from_config(cls, model_config: Mapping[str, Any], vocab_size: int) -> GreenList | None:
        """From the model's ``watermark_gamma`` and ``watermark_delta`` parameters and the key
        of :func:`watermark_key`; None when delta is 0 (watermark off)."""

        def number(name: str, default: float) -> float:
            value = model_parameter(model_config, name)
            return default if value is None else float(value)

        delta = number("watermark_delta", DEFAULT_DELTA)
        if delta == 0:
            return None
        return cls(watermark_key(), vocab_size, number("watermark_gamma", DEFAULT_GAMMA), delta)

    def green(self, previous: int) -> np.ndarray:
        """Which tokens are green after ``previous``: a [vocab] bool array."""
        return green(self._uniforms, self._keyed, previous, self.gamma)

    def bias(self, previous: int, device: torch.device) -> torch.Tensor:
        """What to add to the logits after ``previous``: delta on the green tokens.

        The same float64 arithmetic as :meth:`green` (and the detector), on the logits'
        device, with the uniforms copied there once.
        """
        uniforms = self._on_device.get(device)
        if uniforms is None:
            uniforms = self._on_device[device] = torch.from_numpy(self._uniforms).to(device)
        marked = (uniforms + shift(self._keyed, previous)).remainder_(1.0) < self.gamma
        return marked.to(torch.float32).mul_(self.delta)
