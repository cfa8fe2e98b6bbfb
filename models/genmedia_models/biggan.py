"""BigGAN-deep from `pytorch_pretrained_biggan`, loaded from a mounted directory.

The directory has the package's published layout: `config.json` (a
BigGANConfig) and `pytorch_model.bin` (a state dict). `BigGAN.forward` takes
one float truncation for the whole batch (it selects pre-computed batch-norm
statistics), so a mixed batch runs one forward pass per distinct truncation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pytorch_pretrained_biggan import BigGAN, BigGANConfig

from genmedia_models.runtime import InvalidInputError, signed_unit_to_uint8
from genmedia_models.weights import CheckpointError, MissingCheckpointError, read_state_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"


def load_biggan(directory: Path, device: torch.device | str = "cpu") -> BigGAN:
    """Build BigGAN from `directory`/config.json and load its weights strictly, in eval mode.

    Stricter than `BigGAN.from_pretrained` (which loads with strict=False and
    would silently keep random layers) and never reaches for the network.
    """
    config_file = directory / CONFIG_NAME
    weights_file = directory / WEIGHTS_NAME
    for required in (config_file, weights_file):
        if not required.is_file():
            raise MissingCheckpointError(f"BigGAN checkpoint incomplete: {required} is missing")
    try:
        model = BigGAN(BigGANConfig.from_json_file(str(config_file)))
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
        raise CheckpointError(
            f"{config_file} is not a valid BigGAN config ({type(error).__name__}: {error})"
        ) from error
    state_dict = read_state_dict(weights_file)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_file} does not fit {config_file}: {error}") from error
    return model.to(device).eval()


def validate_request(
    z: np.ndarray, class_vector: np.ndarray, truncation: np.ndarray, config: BigGANConfig
) -> None:
    """Raise InvalidInputError unless one request's tensors fit the model.

    z: [B, z_dim], class_vector: [B, num_classes], truncation: [B, 1].
    """
    batch = z.shape[0] if z.ndim == 2 else -1
    if z.ndim != 2 or z.shape[1] != config.z_dim:
        raise InvalidInputError(f"z must have shape [batch, {config.z_dim}], got {list(z.shape)}")
    if class_vector.ndim != 2 or class_vector.shape[1] != config.num_classes:
        raise InvalidInputError(
            f"class_vector must have {config.num_classes} entries per row (the checkpoint's "
            f"num_classes), got shape {list(class_vector.shape)}"
        )
    if truncation.shape != (batch, 1):
        raise InvalidInputError(
            f"truncation must have shape [{batch}, 1], got {list(truncation.shape)}"
        )
    if class_vector.shape[0] != batch:
        raise InvalidInputError(f"class_vector has {class_vector.shape[0]} rows but z has {batch}")
    if not (np.isfinite(z).all() and np.isfinite(class_vector).all()):
        raise InvalidInputError("z and class_vector must be finite")
    values = truncation.reshape(-1)
    if not (np.isfinite(values).all() and (values > 0).all() and (values <= 1).all()):
        raise InvalidInputError(f"truncation must be in (0, 1], got {values.tolist()}")


def truncation_groups(truncation: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(value, row indices) for each distinct truncation, in order of first appearance."""
    values = truncation.reshape(-1)
    distinct, first_seen = np.unique(values, return_index=True)
    ordered = distinct[np.argsort(first_seen)]
    return [(float(value), np.flatnonzero(values == value)) for value in ordered]


@torch.inference_mode()
def generate_images(
    model: BigGAN, z: np.ndarray, class_vector: np.ndarray, truncation: np.ndarray
) -> np.ndarray:
    """uint8 images [N, H, W, 3] in row order; one forward pass per distinct truncation."""
    device = next(model.parameters()).device
    z_all = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)).to(device)
    class_all = torch.from_numpy(np.ascontiguousarray(class_vector, dtype=np.float32)).to(device)
    images: torch.Tensor | None = None
    for value, rows in truncation_groups(truncation):
        index = torch.from_numpy(rows).to(device)
        generated = signed_unit_to_uint8(model(z_all[index], class_all[index], value))
        if images is None:
            images = torch.empty(
                (z.shape[0], *generated.shape[1:]), dtype=torch.uint8, device=device
            )
        images[index] = generated
    if images is None:
        raise InvalidInputError("no rows to generate")
    return images.cpu().numpy()
