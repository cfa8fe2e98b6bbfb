"""GPT-2 checkpoints: loading a Hugging Face directory, its tokenizer files, its stop tokens.

The model comes from a standard Hugging Face directory (config.json,
model.safetensors); tokenising stays with the callers, which send and receive
token ids. Generation is in continuous_batching (many sequences) and its
generate_one (one sequence).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from transformers import GPT2Config, GPT2LMHeadModel

from genmedia_models.weights import CheckpointError, MissingCheckpointError

if TYPE_CHECKING:
    from tokenizers import ByteLevelBPETokenizer

WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
# Attention-mask buffers: published GPT-2 files carry them, GPT2Attention rebuilds them.
_HARMLESS_BUFFER = re.compile(r"(^|\.)attn\.(bias|masked_bias)$")


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


def eos_token_ids(model: GPT2LMHeadModel) -> frozenset[int]:
    """Ids that end a generation: generation_config's eos_token_id (int or list), else config's."""
    value = getattr(model.generation_config, "eos_token_id", None)
    if value is None:
        value = model.config.eos_token_id
    if value is None:
        return frozenset()
    return frozenset([value] if isinstance(value, int) else value)
