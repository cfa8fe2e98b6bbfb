"""The serving loaders accept checkpoints in the published layouts and name the file that is bad.

Tiny checkpoints with the real key layouts load with strict=True; a missing,
truncated, random or wrongly keyed or shaped file raises CheckpointError (a
RuntimeError; MissingCheckpointError is also a FileNotFoundError) whose
message names that file.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pytorch_pretrained_biggan import BigGAN, BigGANConfig
from safetensors.torch import load_file, save_file

from genmedia_models.biggan import CONFIG_NAME, WEIGHTS_NAME, load_biggan
from genmedia_models.cyclegan import load_generator
from genmedia_models.gpt2.loading import load_gpt2
from genmedia_models.weights import CheckpointError, MissingCheckpointError
from tools.test_weights import write_cyclegan, write_gpt2

CYCLEGAN_FILE = "latest_net_G.pth"


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good tiny checkpoint of each kind, in the published layouts."""
    root = tmp_path_factory.mktemp("originals")
    torch.manual_seed(0)
    config = BigGANConfig(channel_width=4, num_classes=1000)
    (root / "biggan").mkdir()
    (root / "biggan" / CONFIG_NAME).write_text(config.to_json_string(), encoding="utf-8")
    torch.save(BigGAN(config).state_dict(), root / "biggan" / WEIGHTS_NAME)
    write_cyclegan(root / "cyclegan", "horse2zebra", seed=1)
    write_gpt2(root / "gpt2")
    return root


def _copy(originals: Path, tmp_path: Path, kind: str) -> Path:
    shutil.copytree(originals / kind, tmp_path / kind)
    return tmp_path / kind


def _load(kind: str, directory: Path) -> object:
    if kind == "biggan":
        return load_biggan(directory)
    if kind == "cyclegan":
        return load_generator(directory / "horse2zebra" / CYCLEGAN_FILE)
    return load_gpt2(directory)


# (kind, the weights file inside the copied directory)
WEIGHT_FILES = [
    ("biggan", WEIGHTS_NAME),
    ("cyclegan", f"horse2zebra/{CYCLEGAN_FILE}"),
    ("gpt2", "model.safetensors"),
]


@pytest.mark.parametrize("kind", ["biggan", "cyclegan", "gpt2"])
def test_tiny_checkpoints_in_the_published_layouts_load_strictly(
    originals: Path, tmp_path: Path, kind: str
) -> None:
    model = _load(kind, _copy(originals, tmp_path, kind))
    assert isinstance(model, torch.nn.Module) and not model.training


@pytest.mark.parametrize(("kind", "relative"), WEIGHT_FILES)
def test_missing_weights_file_is_named(
    originals: Path, tmp_path: Path, kind: str, relative: str
) -> None:
    directory = _copy(originals, tmp_path, kind)
    (directory / relative).unlink()
    with pytest.raises(MissingCheckpointError, match=re.escape(str(directory / relative))):
        _load(kind, directory)


@pytest.mark.parametrize("kind", ["biggan", "gpt2"])
def test_missing_config_is_named(originals: Path, tmp_path: Path, kind: str) -> None:
    directory = _copy(originals, tmp_path, kind)
    (directory / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(directory / "config.json"))):
        _load(kind, directory)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _randomise(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _html(path: Path) -> None:  # what a captive portal or a wrong URL serves
    path.write_bytes(b"<html><body>404 Not Found</body></html>\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _randomise, _html, _empty])
@pytest.mark.parametrize(("kind", "relative"), WEIGHT_FILES)
def test_unreadable_weights_file_is_named(
    originals: Path,
    tmp_path: Path,
    kind: str,
    relative: str,
    damage: Callable[[Path], None],
) -> None:
    directory = _copy(originals, tmp_path, kind)
    damage(directory / relative)
    with pytest.raises(CheckpointError, match=re.escape(str(directory / relative))) as caught:
        _load(kind, directory)
    message = str(caught.value)
    assert "weights_only" not in message  # not torch's advice to unpickle unsafely
    assert not isinstance(caught.value, FileNotFoundError)


@pytest.mark.parametrize("damage", [_truncate, _randomise])
@pytest.mark.parametrize("kind", ["biggan", "gpt2"])
def test_unreadable_config_is_named(
    originals: Path, tmp_path: Path, kind: str, damage: Callable[[Path], None]
) -> None:
    directory = _copy(originals, tmp_path, kind)
    damage(directory / "config.json")
    with pytest.raises(CheckpointError, match=re.escape(str(directory / "config.json"))):
        _load(kind, directory)


def _edit_state_dict(path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    if path.suffix == ".safetensors":
        state = load_file(path)
        edit(state)
        save_file(state, path, metadata={"format": "pt"})
    else:
        state = torch.load(path, weights_only=True)
        edit(state)
        torch.save(state, path)


# (kind, relative weights file, a key of that file)
KEYS = [
    ("biggan", WEIGHTS_NAME, "embeddings.weight"),
    ("cyclegan", f"horse2zebra/{CYCLEGAN_FILE}", "model.13.conv_block.1.weight"),
    ("gpt2", "model.safetensors", "transformer.h.0.attn.c_attn.weight"),
]


@pytest.mark.parametrize(("kind", "relative", "key"), KEYS)
def test_renamed_key_is_reported_with_the_file(
    originals: Path, tmp_path: Path, kind: str, relative: str, key: str
) -> None:
    directory = _copy(originals, tmp_path, kind)

    def rename(state: dict[str, torch.Tensor]) -> None:
        state[f"{key}_renamed"] = state.pop(key)

    _edit_state_dict(directory / relative, rename)
    with pytest.raises(CheckpointError) as caught:
        _load(kind, directory)
    message = str(caught.value)
    assert str(directory / relative) in message
    assert key in message


@pytest.mark.parametrize(("kind", "relative", "key"), KEYS)
def test_wrong_shape_is_reported_with_the_file(
    originals: Path, tmp_path: Path, kind: str, relative: str, key: str
) -> None:
    directory = _copy(originals, tmp_path, kind)

    def reshape(state: dict[str, torch.Tensor]) -> None:
        state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])

    _edit_state_dict(directory / relative, reshape)
    with pytest.raises(CheckpointError, match=re.escape(str(directory / relative))):
        _load(kind, directory)


def test_cyclegan_file_that_is_not_a_generator_is_named(tmp_path: Path) -> None:
    path = tmp_path / CYCLEGAN_FILE
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_generator(path)
    torch.save(torch.zeros(3), path)  # a tensor, not a state dict
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_generator(path)


def test_cyclegan_state_dict_without_its_last_layer_is_named(
    originals: Path, tmp_path: Path
) -> None:
    directory = _copy(originals, tmp_path, "cyclegan")
    path = directory / "horse2zebra" / CYCLEGAN_FILE

    def drop_last_conv(state: dict[str, torch.Tensor]) -> None:
        del state["model.26.weight"], state["model.26.bias"]

    _edit_state_dict(path, drop_last_conv)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_generator(path)


def test_gpt2_file_as_published_loads_strictly(originals: Path, tmp_path: Path) -> None:
    """The Hub's GPT-2 files: no `transformer.` prefix, no lm_head (tied), mask buffers kept."""
    directory = _copy(originals, tmp_path, "gpt2")
    path = directory / "model.safetensors"
    state = {
        key.removeprefix("transformer."): value
        for key, value in load_file(path).items()
        if key != "lm_head.weight"
    }
    for layer in range(2):
        state[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(1024, 1024)).view(1, 1, 1024, 1024)
        state[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, path, metadata={"format": "pt"})
    model = load_gpt2(directory)
    assert torch.equal(model.lm_head.weight, state["wte.weight"])


def test_gpt2_missing_layer_is_not_silently_reinitialised(originals: Path, tmp_path: Path) -> None:
    directory = _copy(originals, tmp_path, "gpt2")

    def drop(state: dict[str, torch.Tensor]) -> None:
        del state["transformer.h.1.mlp.c_fc.weight"]

    _edit_state_dict(directory / "model.safetensors", drop)
    with pytest.raises(
        CheckpointError, match=r"missing keys: transformer\.h\.1\.mlp\.c_fc\.weight"
    ):
        load_gpt2(directory)


def test_checkpoint_errors_stay_the_types_callers_caught_before() -> None:
    # load_state_dict's errors were RuntimeErrors, a missing file a FileNotFoundError.
    assert issubclass(CheckpointError, RuntimeError)
    assert issubclass(MissingCheckpointError, CheckpointError)
    assert issubclass(MissingCheckpointError, FileNotFoundError)
