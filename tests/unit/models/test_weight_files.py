"""tools.test_weights writes small checkpoints that load like the published ones."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_pretrained_biggan import BigGAN
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from genmedia_models.biggan import generate_images, load_biggan
from genmedia_models.cyclegan import ResnetGenerator, ResnetGeneratorConfig, load_generator
from genmedia_models.gpt2.loading import load_gpt2
from tools.test_weights import main, write_all


def test_biggan_loads_both_ways_and_draws_finite_varied_images(weights_dir: Path) -> None:
    directory = weights_dir / "biggan"
    model = load_biggan(directory)
    assert model.config.num_classes == 1000 and model.config.z_dim == 128
    assert model.config.output_dim == 128
    # The package's own loader accepts the directory too.
    assert isinstance(BigGAN.from_pretrained(str(directory)), BigGAN)
    assert (directory / "pytorch_model.bin").stat().st_size < 8 * 2**20

    rng = np.random.default_rng(3)
    z = (rng.standard_normal((2, 128)) * 0.5).astype(np.float32)
    with torch.inference_mode():
        raw = model(torch.from_numpy(z), torch.eye(1000)[:2], 0.5)
    assert torch.isfinite(raw).all()
    images = generate_images(
        model, z, np.eye(1000, dtype=np.float32)[:2], np.full((2, 1), 0.5, np.float32)
    )
    assert images.shape == (2, 128, 128, 3)
    assert images.std() > 5  # not a constant image


def test_cyclegan_checkpoints_have_exactly_the_original_keys(weights_dir: Path) -> None:
    expected = ResnetGenerator(ResnetGeneratorConfig(ngf=8, n_blocks=9)).state_dict().keys()
    for direction in ("horse2zebra", "zebra2horse"):
        path = weights_dir / "cyclegan" / direction / "latest_net_G.pth"
        assert torch.load(path, weights_only=True).keys() == expected
        assert load_generator(path).config == ResnetGeneratorConfig(ngf=8, n_blocks=9)


def test_gpt2_directory_is_a_standard_hugging_face_one(weights_dir: Path) -> None:
    directory = weights_dir / "gpt2"
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        assert (directory / name).is_file()
    model = load_gpt2(directory)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    end_of_text = tokenizer.token_to_id("<|endoftext|>")
    assert model.config.vocab_size == tokenizer.get_vocab_size() == 1000
    assert model.config.eos_token_id == model.config.bos_token_id == end_of_text
    assert model.config.n_positions == 1024

    text = "Return a new list containing the items."
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    # vocab.json + merges.txt describe the same BPE as tokenizer.json.
    vocab = json.loads((directory / "vocab.json").read_text())
    assert vocab == tokenizer.get_vocab()
    assert (directory / "merges.txt").read_text().startswith("#version")
    hf_tokenizer = AutoTokenizer.from_pretrained(directory)
    assert hf_tokenizer.encode(text) == tokenizer.encode(text).ids
    assert hf_tokenizer.eos_token_id == end_of_text


def _files(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under ``root``: its SHA-256, inode and modification time."""
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_ino,
            path.stat().st_mtime_ns,
        )
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_rewriting_changes_nothing(weights_dir: Path) -> None:
    before = _files(weights_dir)
    report = write_all(weights_dir)
    # Same bytes as the first time, and not one file replaced or touched to get them.
    assert _files(weights_dir) == before
    assert report == [(name, False) for name in before]


def test_command_line_prints_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert any("biggan/pytorch_model.bin" in line and line.startswith("wrote") for line in lines)
    assert (tmp_path / "cyclegan" / "zebra2horse" / "latest_net_G.pth").is_file()
