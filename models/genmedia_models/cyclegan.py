"""The ResNet generator of the original CycleGAN (Zhu et al., 2017).

Same layer order as junyanz/pytorch-CycleGAN-and-pix2pix `ResnetGenerator`
with `--norm instance`, so its published `*_net_G.pth` state dicts (keys such
as `model.1.weight`, `model.10.conv_block.5.bias`) load with strict=True:

    c7s1-ngf, d(2ngf), d(4ngf), n_blocks x R(4ngf), u(2ngf), u(ngf), c7s1-3, tanh

Every index of the `model` Sequential matters: it is part of the key names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genmedia_models.runtime import InvalidInputError, signed_unit_to_uint8, uint8_to_signed_unit
from genmedia_models.weights import CheckpointError, read_state_dict

# Index of the first residual block in `model`: pad, conv, norm, relu, then two
# (conv, norm, relu) downsampling stages.
_FIRST_BLOCK_INDEX = 10
_BLOCK_KEY = re.compile(r"^model\.(\d+)\.conv_block\.(\d+)\.weight$")
_INSTANCE_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class ResnetGeneratorConfig:
    """Shape of a generator; the published CycleGAN models are 3->3, ngf 64, 9 blocks."""

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    n_blocks: int = 9
    use_dropout: bool = False

    def __post_init__(self) -> None:
        if min(self.input_nc, self.output_nc, self.ngf) < 1 or self.n_blocks < 0:
            raise ValueError(f"invalid generator config: {self}")


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    # The original's `--norm instance`: no affine parameters, no running stats,
    # hence conv biases everywhere (there is no norm shift to absorb them).
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """x + (pad, conv3, norm, relu, [dropout], pad, conv3, norm)(x)."""

    def __init__(self, channels: int, use_dropout: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=True),
            _instance_norm(channels),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=True),
            _instance_norm(channels),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """[B, input_nc, H, W] in [-1, 1] -> [B, output_nc, H, W] in [-1, 1]; H, W multiples of 4."""

    def __init__(self, config: ResnetGeneratorConfig) -> None:
        super().__init__()
        self.config = config
        ngf = config.ngf
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(config.input_nc, ngf, kernel_size=7, bias=True),
            _instance_norm(ngf),
            nn.ReLU(True),
        ]
        # Two stride-2 convolutions: this is why H and W must be multiples of 4.
        for scale in (1, 2):
            layers += [
                nn.Conv2d(
                    ngf * scale, ngf * scale * 2, kernel_size=3, stride=2, padding=1, bias=True
                ),
                _instance_norm(ngf * scale * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4, config.use_dropout) for _ in range(config.n_blocks)]
        for scale in (4, 2):
            layers += [
                nn.ConvTranspose2d(
                    ngf * scale,
                    ngf * scale // 2,
                    kernel_size=3,
                    stride=2,
                    padding=1,
                    output_padding=1,
                    bias=True,
                ),
                _instance_norm(ngf * scale // 2),
                nn.ReLU(True),
            ]
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, config.output_nc, kernel_size=7),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> ResnetGeneratorConfig:
    """Read ngf, channel counts, block count and dropout off a generator state dict."""
    if "model.1.weight" not in state_dict:
        raise ValueError("not a CycleGAN ResNet generator state dict: no model.1.weight")
    first = state_dict["model.1.weight"]
    block_indices: set[int] = set()
    second_conv_positions: set[int] = set()
    for key in state_dict:
        match = _BLOCK_KEY.match(key)
        if match:
            block_indices.add(int(match.group(1)))
            if int(match.group(2)) > 1:
                second_conv_positions.add(int(match.group(2)))
    n_blocks = len(block_indices)
    if block_indices != set(range(_FIRST_BLOCK_INDEX, _FIRST_BLOCK_INDEX + n_blocks)):
        raise ValueError(f"unexpected residual block indices: {sorted(block_indices)}")
    # The dropout layer shifts the second conv of each block from index 5 to 6.
    use_dropout = second_conv_positions == {6}
    # Blocks, then two (convT, norm, relu) stages and a pad before the last conv.
    last_conv = state_dict[f"model.{_FIRST_BLOCK_INDEX + n_blocks + 7}.weight"]
    return ResnetGeneratorConfig(
        input_nc=int(first.shape[1]),
        output_nc=int(last_conv.shape[0]),
        ngf=int(first.shape[0]),
        n_blocks=n_blocks,
        use_dropout=use_dropout,
    )


def drop_instance_norm_stats(
    state_dict: Mapping[str, torch.Tensor], net: nn.Module
) -> dict[str, torch.Tensor]:
    """A copy of `state_dict` without InstanceNorm running statistics that `net` has no slot for.

    Checkpoints saved by PyTorch < 0.4 (the published CycleGAN ones among them)
    store running_mean/running_var for every InstanceNorm, which modern
    InstanceNorm2d(track_running_stats=False) does not have; the original
    load_networks() deletes them the same way before a strict load.
    """
    modules = dict(net.named_modules())
    kept: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        owner, _, attribute = key.rpartition(".")
        module = modules.get(owner)
        is_stat = isinstance(module, nn.InstanceNorm2d) and attribute in _INSTANCE_NORM_STATS
        if is_stat and getattr(module, attribute, None) is None:
            continue
        kept[key] = value
    return kept


def load_generator(path: Path, device: torch.device | str = "cpu") -> ResnetGenerator:
    """Build a generator shaped like the checkpoint at `path` and load it strictly, in eval mode."""
    # A plain dict, like the original's `del state_dict._metadata`: version
    # stamps written by old PyTorch releases must not steer today's loaders.
    state_dict = dict(read_state_dict(path))
    try:
        net = ResnetGenerator(config_from_state_dict(state_dict))
    except (ValueError, KeyError, AttributeError, IndexError) as error:
        raise CheckpointError(
            f"{path} is not a CycleGAN ResNet generator ({type(error).__name__}: {error})"
        ) from error
    try:
        net.load_state_dict(drop_instance_norm_stats(state_dict, net), strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit a ResnetGenerator: {error}") from error
    return net.to(device).eval()


@torch.inference_mode()
def translate(net: ResnetGenerator, images: np.ndarray) -> np.ndarray:
    """Run uint8 images [B, H, W, 3] through the generator; returns uint8 of the same shape."""
    device = next(net.parameters()).device
    batch = uint8_to_signed_unit(torch.from_numpy(np.ascontiguousarray(images)).to(device))
    return signed_unit_to_uint8(net(batch)).cpu().numpy()


MODEL_NAME_PREFIX = "cyclegan_"
CHECKPOINT_NAME = "latest_net_G.pth"
# Below 8 pixels the bottleneck is 1 pixel wide and reflection padding fails.
MIN_SIDE = 8


def direction_from_model_name(model_name: str) -> str:
    """`cyclegan_horse2zebra` -> `horse2zebra`."""
    if not model_name.startswith(MODEL_NAME_PREFIX) or len(model_name) == len(MODEL_NAME_PREFIX):
        raise ValueError(
            f'model name must look like "{MODEL_NAME_PREFIX}<direction>", got "{model_name}"'
        )
    return model_name[len(MODEL_NAME_PREFIX) :]


def checkpoint_path(weights_path: Path, direction: str) -> Path:
    """The generator file for `direction` under the resolved weights_path."""
    if weights_path.is_file():
        return weights_path
    path = weights_path / direction / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no CycleGAN generator for {direction} at {path}")
    return path


def validate_images(images: np.ndarray) -> None:
    """Raise InvalidInputError unless `images` is [B, H, W, 3] with usable H and W."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InvalidInputError(
            f"image must have shape [batch, height, width, 3], got {list(images.shape)}"
        )
    height, width = images.shape[1:3]
    if height % 4 or width % 4 or min(height, width) < MIN_SIDE:
        raise InvalidInputError(
            f"image height and width must be multiples of 4 and at least {MIN_SIDE}, "
            f"got {height}x{width}"
        )
