"""The CycleGAN ResNet generator matches the original code's published checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genmedia_models.cyclegan import (
    ResnetGenerator,
    ResnetGeneratorConfig,
    config_from_state_dict,
    drop_instance_norm_stats,
    load_generator,
)


def original_nine_block_keys() -> set[str]:
    """Key names of junyanz/pytorch-CycleGAN-and-pix2pix resnet_9blocks with --norm instance.

    Written out from the original layer order: conv7 at 1, stride-2 convs at 4
    and 7, residual blocks 10..18 (convs at conv_block.1 and .5), transposed
    convs at 19 and 22, the output conv7 at 26; all with biases.
    """
    convs = ["model.1", "model.4", "model.7", "model.19", "model.22", "model.26"]
    for block in range(10, 19):
        convs += [f"model.{block}.conv_block.1", f"model.{block}.conv_block.5"]
    return {f"{conv}.{kind}" for conv in convs for kind in ("weight", "bias")}


def test_state_dict_keys_equal_the_original_nine_block_generator() -> None:
    net = ResnetGenerator(ResnetGeneratorConfig(ngf=64, n_blocks=9))
    assert set(net.state_dict()) == original_nine_block_keys()


def test_full_size_generator_has_the_original_parameter_count() -> None:
    # The original prints "[Network G_A] Total number of parameters : 11.378 M".
    net = ResnetGenerator(ResnetGeneratorConfig())
    assert sum(p.numel() for p in net.parameters()) == 11_378_179
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["model.1.weight"] == (64, 3, 7, 7)
    assert shapes["model.19.weight"] == (256, 128, 3, 3)  # ConvTranspose2d: (in, out, k, k)
    assert shapes["model.26.weight"] == (3, 64, 7, 7)


@pytest.mark.parametrize(
    "config",
    [
        ResnetGeneratorConfig(ngf=8, n_blocks=9),
        ResnetGeneratorConfig(ngf=16, n_blocks=6),
        ResnetGeneratorConfig(ngf=4, n_blocks=3, use_dropout=True),
        ResnetGeneratorConfig(input_nc=1, output_nc=3, ngf=4, n_blocks=2),
    ],
)
def test_config_is_inferred_from_a_state_dict(config: ResnetGeneratorConfig) -> None:
    assert config_from_state_dict(ResnetGenerator(config).state_dict()) == config


def test_config_inference_rejects_other_networks() -> None:
    with pytest.raises(ValueError, match=r"model\.1\.weight"):
        config_from_state_dict({"encoder.weight": torch.zeros(1)})


def legacy_state_dict(net: ResnetGenerator) -> dict[str, torch.Tensor]:
    """What PyTorch < 0.4 saved: running stats for every InstanceNorm too."""
    state = dict(net.state_dict())
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            channels = module.num_features
            state[f"{name}.running_mean"] = torch.zeros(channels)
            state[f"{name}.running_var"] = torch.ones(channels)
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    return state


def test_instance_norm_running_stats_are_dropped_and_nothing_else() -> None:
    net = ResnetGenerator(ResnetGeneratorConfig(ngf=4, n_blocks=2))
    legacy = legacy_state_dict(net)
    assert len(legacy) > len(net.state_dict())
    assert drop_instance_norm_stats(legacy, net).keys() == net.state_dict().keys()


def test_legacy_checkpoint_loads_strictly_and_translates_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ResnetGenerator(ResnetGeneratorConfig(ngf=8, n_blocks=9)).eval()
    path = tmp_path / "latest_net_G.pth"
    torch.save(legacy_state_dict(net), path)

    loaded = load_generator(path)
    image = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded(image), net(image))
    assert not loaded.training


def test_checkpoint_with_a_missing_key_is_rejected(tmp_path: Path) -> None:
    state = ResnetGenerator(ResnetGeneratorConfig(ngf=4, n_blocks=9)).state_dict()
    del state["model.14.conv_block.5.bias"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_generator(path)


def test_output_keeps_size_and_range() -> None:
    net = ResnetGenerator(ResnetGeneratorConfig(ngf=4, n_blocks=2)).eval()
    with torch.inference_mode():
        out = net(torch.rand(2, 3, 20, 36) * 2 - 1)
    assert out.shape == (2, 3, 20, 36)
    assert out.abs().max() <= 1
