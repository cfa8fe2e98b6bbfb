"""What every Triton model here does the same way: device, threads, caller errors."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

TORCH_THREADS_ENV = "GENMEDIA_TORCH_THREADS"


class InvalidInputError(ValueError):
    """A caller error: answered as a TritonError in that request's response, never raised."""


def select_device(args: Mapping[str, str]) -> torch.device:
    """The torch device for a model instance, from Triton's initialize() args.

    KIND_AUTO resolves to GPU instances when Triton sees a GPU; fall back to
    the CPU when this torch build has no CUDA, so one repository serves both.
    """
    if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
        return torch.device("cuda", int(args.get("model_instance_device_id") or 0))
    return torch.device("cpu")


def configure_torch_threads(env: Mapping[str, str] | None = None) -> int | None:
    """Apply GENMEDIA_TORCH_THREADS to torch's intra-op pool; returns the value applied."""
    env = os.environ if env is None else env
    value = env.get(TORCH_THREADS_ENV, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"{TORCH_THREADS_ENV} must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"{TORCH_THREADS_ENV} must be a positive integer, got {value!r}")
    torch.set_num_threads(threads)
    return threads


def uint8_to_signed_unit(images: torch.Tensor) -> torch.Tensor:
    """[B,H,W,3] uint8 -> [B,3,H,W] float in [-1, 1], the range the GANs work in."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def signed_unit_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] float in [-1, 1] -> [B,H,W,3] uint8, rounded and clamped."""
    scaled = images.add(1.0).mul(127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).contiguous()
