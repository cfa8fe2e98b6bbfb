"""The types of GPT-2 serving, in one place: what a request is, where its tokens go, how it
ends, and the batch's limits and state. The batcher (batching.py) and token delivery
(delivery.py) both use them; neither imports the other's module for them."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from genmedia_models.gpt2.sampling import SamplingParams


class FinishReason(enum.Enum):
    LENGTH = "length"
    EOS = "eos"
    CANCELLED = "cancelled"
    UNLOADING = "unloading"
    FAILED = "failed"


class TokenSink(Protocol):
    """Where one request's tokens go (a Triton response sender, a test's list)."""

    def emit(self, tokens: list[int]) -> None:
        """The next tokens, in order: one or more (several when delivery was behind)."""

    def finish(self, reason: FinishReason, error: BaseException | None = None) -> None:
        """Called exactly once, after the last emit."""

    def cancelled(self) -> bool: ...


ErrorLog = Callable[[str, BaseException], None]
"""Where the model code reports an error it survives: what failed, and the exception.
Inside Triton it writes Triton's log; elsewhere, Python's logging."""


class QueueFull(RuntimeError):
    """Every slot is busy and the waiting queue is full: the caller should retry later."""


@dataclass(frozen=True)
class BatchLimits:
    """max_sequences generate together, their prompts + max_new_tokens adding
    up to at most max_total_tokens (which bounds the attention work of a
    step); up to max_queued more wait."""

    max_sequences: int = 16
    max_total_tokens: int = 8192
    max_queued: int = 64

    def validate(self, n_positions: int) -> None:
        if self.max_sequences < 1:
            raise ValueError(f"max_sequences must be at least 1, got {self.max_sequences}")
        if self.max_queued < 0:
            raise ValueError(f"max_queued_requests must be >= 0, got {self.max_queued}")
        if self.max_total_tokens < n_positions:
            raise ValueError(
                f"max_total_tokens ({self.max_total_tokens}) must hold at least one full "
                f"context of {n_positions} tokens"
            )


@dataclass
class GenerationRequest:
    prompt: list[int]
    params: SamplingParams
    sink: TokenSink


@dataclass(frozen=True)
class BatchState:
    running: int
    queued: int
