"""GPT-2 text generation, one token at a time.

The model comes from a standard Hugging Face directory (config.json,
model.safetensors); tokenising stays with the callers, which send and receive
token ids. `generate_tokens` is a generator: it yields each token as soon as
it is sampled and does no more work until asked for the next one, so a caller
stops generation (on cancellation, say) simply by not asking again.
"""

from __future__ import annotations

import inspect
import json
import pickle
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from transformers import GPT2Config, GPT2LMHeadModel

from genmedia_models.runtime import InvalidInputError
from genmedia_models.weights import CheckpointError, MissingCheckpointError

if TYPE_CHECKING:
    from tokenizers import ByteLevelBPETokenizer

WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
# Attention-mask buffers: published GPT-2 files carry them, GPT2Attention rebuilds them.
_HARMLESS_BUFFER = re.compile(r"(^|\.)attn\.(bias|masked_bias)$")


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token.

    temperature 0 means greedy (argmax); top_k 0 and top_p 1.0 switch those
    filters off. The same seed with the same prompt gives the same tokens.
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0.0 <= self.temperature < float("inf"):
            raise InvalidInputError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise InvalidInputError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidInputError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")


def save_tokenizer_files(
    tokenizer: ByteLevelBPETokenizer, directory: Path, end_of_text: str, max_length: int
) -> None:
    """tokenizer.json (what the service reads), plus vocab.json, merges.txt and
    tokenizer_config.json, so transformers' GPT2Tokenizer loads the directory too."""
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer.save_model(str(directory))
    tokenizer_config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "bos_token": end_of_text,
        "eos_token": end_of_text,
        "unk_token": end_of_text,
        "model_max_length": max_length,
    }
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8"
    )


def load_gpt2(directory: Path, device: torch.device | str = "cpu") -> GPT2LMHeadModel:
    """Load GPT2LMHeadModel from a local directory only, in eval mode.

    As strict as load_state_dict(strict=True): from_pretrained would keep
    randomly initialised layers for missing weights with only a warning.
    """
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise MissingCheckpointError(f"GPT-2 checkpoint incomplete: {config_file} is missing")
    weights_file = next((directory / n for n in WEIGHTS_NAMES if (directory / n).is_file()), None)
    if weights_file is None:
        raise MissingCheckpointError(
            f"GPT-2 checkpoint incomplete: {directory / WEIGHTS_NAMES[0]} is missing"
        )
    try:
        config = GPT2Config.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{config_file} is not a valid GPT-2 config: {error}") from error
    try:
        model, info = GPT2LMHeadModel.from_pretrained(
            directory, config=config, local_files_only=True, output_loading_info=True
        )
    except (
        OSError,
        ValueError,
        TypeError,
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        SafetensorError,
    ) as error:
        raise CheckpointError(
            f"{weights_file} ({weights_file.stat().st_size} bytes) is truncated, corrupt or "
            f"does not fit {config_file}: {error}"
        ) from error
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    problems = {
        "missing": sorted(
            k for k in info["missing_keys"] if k not in tied and not _HARMLESS_BUFFER.search(k)
        ),
        "unexpected": sorted(k for k in info["unexpected_keys"] if not _HARMLESS_BUFFER.search(k)),
        "wrongly shaped": sorted(str(k) for k in info["mismatched_keys"]),
    }
    if any(problems.values()):
        found = "; ".join(
            f"{kind} keys: {', '.join(keys[:8])}" for kind, keys in problems.items() if keys
        )
        raise CheckpointError(f"{weights_file} does not fit {config_file}: {found}")
    return model.to(device).eval()


def validate_prompt(
    input_ids: Sequence[int], max_new_tokens: int, n_positions: int, vocab_size: int
) -> None:
    """Raise InvalidInputError unless the prompt and its continuation fit the context window."""
    if len(input_ids) == 0:
        raise InvalidInputError("input_ids must hold at least one token")
    if len(input_ids) > n_positions - 1:
        raise InvalidInputError(
            f"prompt has {len(input_ids)} tokens; the limit is {n_positions - 1} "
            f"(context window {n_positions} tokens)"
        )
    if len(input_ids) + max_new_tokens > n_positions:
        raise InvalidInputError(
            f"prompt ({len(input_ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"context window of {n_positions} tokens"
        )
    if min(input_ids) < 0 or max(input_ids) >= vocab_size:
        raise InvalidInputError(
            f"input_ids must be in [0, {vocab_size}), got {min(input_ids)}..{max(input_ids)}"
        )


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set every logit outside the top-k and the top-p nucleus to -inf. logits: [vocab]."""
    if 0 < top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        sorted_probabilities = torch.softmax(sorted_logits, dim=-1)
        # Drop a token once the more likely tokens before it already cover
        # top_p, so the most likely token always survives.
        mass_before = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """The next token id from last-position logits [vocab]."""
    if params.temperature == 0.0:
        return int(torch.argmax(logits))
    scaled = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    probabilities = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probabilities, num_samples=1, generator=generator))


def _cache_argument(model: GPT2LMHeadModel) -> str:
    # transformers 5 renamed `past_key_values` to `cache`; older releases
    # (e.g. in NVIDIA's Triton containers) only know the old name.
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def _forward(
    model: GPT2LMHeadModel, tokens: list[int], cache: Any, cache_argument: str
) -> tuple[torch.Tensor, Any]:
    """Run the new tokens through the model; returns last-position logits and the grown KV cache."""
    device = model.device
    input_ids = torch.tensor([tokens], dtype=torch.long, device=device)
    output = model(input_ids=input_ids, use_cache=True, **{cache_argument: cache})
    return output.logits[0, -1], getattr(output, cache_argument)


def eos_token_ids(model: GPT2LMHeadModel) -> frozenset[int]:
    """Ids that end a generation: generation_config's eos_token_id (int or list), else config's."""
    value = getattr(model.generation_config, "eos_token_id", None)
    if value is None:
        value = model.config.eos_token_id
    if value is None:
        return frozenset()
    return frozenset([value] if isinstance(value, int) else value)


def generate_tokens(
    model: GPT2LMHeadModel,
    input_ids: Sequence[int],
    params: SamplingParams,
    stop_token_ids: Collection[int] = frozenset(),
) -> Iterator[int]:
    """Yield up to max_new_tokens token ids; a sampled stop (eos) token is yielded, then it ends.

    The prompt goes through the model once; each later step feeds only the
    newest token and reuses the key/value cache, so a step costs the same at
    any position.
    """
    params.validate()
    validate_prompt(
        input_ids, params.max_new_tokens, model.config.n_positions, model.config.vocab_size
    )
    generator = torch.Generator(device=model.device).manual_seed(params.seed)
    cache_argument = _cache_argument(model)
    logits, cache = _forward(model, list(input_ids), None, cache_argument)
    for step in range(params.max_new_tokens):
        token = pick_token(logits, params, generator)
        yield token
        if token in stop_token_ids or step + 1 == params.max_new_tokens:
            return
        logits, cache = _forward(model, [token], cache, cache_argument)
