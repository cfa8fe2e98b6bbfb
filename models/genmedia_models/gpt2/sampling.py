"""Picking the next token for many sequences at once, each with its own parameters.

Every row keeps its own random stream and draws exactly one uniform number
per step, whether it samples or decodes greedily, so its tokens depend only on
its seed, prompt and parameters, never on which other rows share the batch.
The filters work row by row (sort, softmax and cumulative sums never mix
rows), vectorised over the rows that use them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from genmedia_models.gpt2.watermark import GreenList
from genmedia_models.runtime import InvalidInputError

MAX_REPETITION_PENALTY = 10.0
MIN_SAMPLING_TEMPERATURE = 1e-4


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token.

    temperature 0 means greedy (argmax); top_k 0, top_p 1.0 and
    repetition_penalty 1.0 switch those off. The same seed with the same prompt
    gives the same tokens.
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    repetition_penalty: float = 1.0

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0.0 <= self.temperature < float("inf"):
            raise InvalidInputError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise InvalidInputError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidInputError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not 0.0 < self.repetition_penalty <= MAX_REPETITION_PENALTY:
            raise InvalidInputError(
                f"repetition_penalty must be in (0, {MAX_REPETITION_PENALTY}] (1 = off), "
                f"got {self.repetition_penalty}"
            )


@dataclass
class SamplerState:
    """One sequence's sampling state: parameters, random stream, tokens seen so far."""

    params: SamplingParams
    # Python's Mersenne Twister: a draw costs far less than a torch call, on any device.
    generator: random.Random
    seen: torch.Tensor | None = field(default=None)
    watermark: GreenList | None = None
    previous: int = 0
    """The last token of the sequence so far: what the watermark's green list follows."""

    @classmethod
    def start(
        cls,
        params: SamplingParams,
        prompt: Sequence[int],
        vocab_size: int,
        device: torch.device,
        watermark: GreenList | None = None,
    ) -> SamplerState:
        generator = random.Random(params.seed)
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            seen[torch.tensor(list(prompt), dtype=torch.long, device=device)] = True
        return cls(params, generator, seen, watermark, previous=int(prompt[-1]))

    def record(self, token: int) -> None:
        if self.seen is not None:
            self.seen[token] = True
        self.previous = token


def add_watermark(logits: torch.Tensor, states: Sequence[SamplerState]) -> torch.Tensor:
    """Each watermarked row's green tokens (after its previous token) gain delta."""
    for row, state in enumerate(states):
        if state.watermark is not None:
            logits[row] += state.watermark.bias(state.previous, logits.device)
    return logits


def penalise_repetitions(logits: torch.Tensor, states: Sequence[SamplerState]) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019) as transformers applies it: seen tokens lose weight."""
    for row, state in enumerate(states):
        if state.seen is not None:
            penalty = state.params.repetition_penalty
            values = logits[row]
            penalised = torch.where(values > 0, values / penalty, values * penalty)
            logits[row] = torch.where(state.seen, penalised, values)
    return logits


def keep_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Rows with k > 0 keep their k largest logits. top_k: [rows] int64."""
    limited = (top_k > 0) & (top_k < logits.shape[-1])
    if not bool(limited.any()):
        return logits
    rows = limited.nonzero().squeeze(1)
    k = top_k[rows]
    largest = torch.topk(logits[rows], int(k.max()), dim=-1).values
    kth = largest.gather(1, (k - 1).unsqueeze(1))
    logits[rows] = logits[rows].masked_fill(logits[rows] < kth, float("-inf"))
    return logits


def keep_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Rows with p < 1 keep the smallest set of most likely tokens whose mass reaches p."""
    limited = top_p < 1.0
    if not bool(limited.any()):
        return logits
    rows = limited.nonzero().squeeze(1)
    sorted_logits, order = torch.sort(logits[rows], dim=-1, descending=True)
    probabilities = torch.softmax(sorted_logits, dim=-1)
    # Drop a token once the more likely ones before it cover p: the top token always stays.
    mass_before = probabilities.cumsum(dim=-1) - probabilities
    drop_sorted = mass_before >= top_p[rows].unsqueeze(1)
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    logits[rows] = logits[rows].masked_fill(drop, float("-inf"))
    return logits


@torch.inference_mode()
def pick_tokens(logits: torch.Tensor, states: Sequence[SamplerState]) -> list[int]:
    """The next token of every row. logits: [rows, vocab], float32; modified in place."""
    device = logits.device
    params = [state.params for state in states]
    # One draw per row per step, used or not: a row's random stream never
    # depends on its own settings' branches or on other rows.
    uniforms = torch.tensor([s.generator.random() for s in states], device=device)
    logits = add_watermark(penalise_repetitions(logits, states), states)
    temperature = torch.tensor([p.temperature for p in params], device=device)
    # Temperatures this small only differ from greedy by overflowing the softmax.
    greedy = temperature < MIN_SAMPLING_TEMPERATURE
    tokens = torch.argmax(logits, dim=-1)
    if not bool(greedy.all()):
        rows = (~greedy).nonzero().squeeze(1)
        scaled = logits[rows] / temperature[rows].unsqueeze(1)
        top_k = torch.tensor([p.top_k for p in params], dtype=torch.long, device=device)[rows]
        top_p = torch.tensor([p.top_p for p in params], device=device)[rows]
        scaled = keep_top_p(keep_top_k(scaled, top_k), top_p)
        probabilities = torch.softmax(scaled, dim=-1)
        cumulative = probabilities.cumsum(dim=-1)
        # Inverse transform sampling; scaling by the total keeps the draw
        # inside the distribution whatever the rounding of the sum.
        targets = (uniforms[rows] * cumulative[:, -1]).unsqueeze(1)
        drawn = torch.searchsorted(cumulative, targets, right=True).squeeze(1)
        tokens[rows] = drawn.clamp(max=logits.shape[-1] - 1)
    picked = tokens.tolist()
    for state, token in zip(states, picked, strict=True):
        state.record(token)
    return picked
