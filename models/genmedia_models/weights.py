"""Where a Triton model finds its weights.

Weights are mounted, never downloaded: a model's `weights_path` parameter in
config.pbtxt is either absolute or relative to the directory named by
GENMEDIA_WEIGHTS_DIR, so one model repository serves any weights pack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WEIGHTS_DIR_ENV = "GENMEDIA_WEIGHTS_DIR"
WEIGHTS_PATH_PARAMETER = "weights_path"


class WeightsNotFoundError(FileNotFoundError):
    """The configured weights are missing or the weights root is not set."""


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or does not fit its model.

    The message names the file. A RuntimeError like the torch errors it wraps
    (`load_state_dict`'s), so code that caught those still does.
    """


class MissingCheckpointError(CheckpointError, WeightsNotFoundError):
    """A file the checkpoint needs is not there (also a FileNotFoundError)."""


def read_state_dict(path: Path) -> Mapping[str, Any]:
    """The state dict in the PyTorch file at `path`, read on the CPU with weights_only=True.

    Returned as loaded (with any `_metadata` version stamps). Raises
    CheckpointError naming the file when it is missing, unreadable (truncated,
    corrupt, not a PyTorch file) or holds something else.
    """
    import torch  # here only: resolving weights paths does not need torch

    if not path.is_file():
        raise MissingCheckpointError(f"checkpoint file {path} is missing")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    # Random or damaged bytes fail deep in the unpickler in many ways (IndexError,
    # KeyError, struct errors, ...): each one means this file is not a checkpoint.
    except Exception as error:
        # torch's weights_only message is mostly advice to unpickle unsafely: keep the cause.
        cause = error.__context__ or error
        detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        detail = detail.split(". ")[0][:200]  # the first sentence says what is wrong
        raise CheckpointError(
            f"{path} ({path.stat().st_size} bytes) is truncated, corrupt or not a PyTorch "
            f"checkpoint: {detail}"
        ) from error
    if not isinstance(loaded, Mapping) or not all(isinstance(key, str) for key in loaded):
        raise CheckpointError(
            f"{path} holds a {type(loaded).__name__}, not a state dict (parameter names -> tensors)"
        )
    return loaded


def weights_root(env: Mapping[str, str] | None = None) -> Path:
    """The weights root directory named by GENMEDIA_WEIGHTS_DIR."""
    env = os.environ if env is None else env
    value = env.get(WEIGHTS_DIR_ENV, "").strip()
    if not value:
        raise WeightsNotFoundError(
            f"{WEIGHTS_DIR_ENV} is not set: it must name the directory that holds "
            "the weights (biggan/, cyclegan/, gpt2/)"
        )
    root = Path(value).expanduser()
    if not root.is_dir():
        raise WeightsNotFoundError(f"{WEIGHTS_DIR_ENV}={value} is not a directory")
    return root


def resolve_weights_path(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> Path:
    """An absolute path for `path`, which is absolute or relative to the weights root.

    The path must exist; the root is only consulted for relative paths.
    """
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = weights_root(env) / candidate
    if not candidate.exists():
        raise WeightsNotFoundError(f"weights not found at {candidate}")
    return candidate


def model_parameter(model_config: Mapping[str, Any], key: str) -> str | None:
    """A string parameter from a parsed Triton model config, or None when absent."""
    parameters = model_config.get("parameters") or {}
    entry = parameters.get(key)
    if entry is None:
        return None
    value = entry.get("string_value") if isinstance(entry, Mapping) else entry
    return str(value) if value not in (None, "") else None


def weights_path_from_config(
    model_config: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> Path:
    """Resolve the `weights_path` parameter of a parsed Triton model config."""
    value = model_parameter(model_config, WEIGHTS_PATH_PARAMETER)
    if value is None:
        name = model_config.get("name", "<unnamed>")
        raise WeightsNotFoundError(
            f'model "{name}" has no "{WEIGHTS_PATH_PARAMETER}" parameter in config.pbtxt'
        )
    return resolve_weights_path(value, env)
