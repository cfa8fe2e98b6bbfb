"""The demo pack's BigGAN-deep on digits: a few training steps, checked through Triton's loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_pretrained_biggan import BigGAN
from pytorch_pretrained_biggan.model import BigGANBatchNorm

from genmedia_models.biggan import generate_images, load_biggan
from tools.training.biggan_digits import (
    Discriminator,
    Hyperparameters,
    batch_statistics,
    evaluate,
    expand_darks,
    sample_grid,
    train,
    truncated_normal,
)

STEPS = 3
SEED = 5
# Few samples per stored statistics row keep the test fast; the rows are still all written.
FAST = Hyperparameters(statistics_batch=20)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("biggan-digits")
    report = train(directory, seed=SEED, steps=STEPS, hyperparameters=FAST)
    assert report.model == "biggan-digits"
    assert report.steps == STEPS and report.details["stopped_by_time_cap"] == "False"
    assert report.resolution == 32 and report.parameters > 0
    return directory


def _norms(model: BigGAN) -> list[BigGANBatchNorm]:
    return [module for module in model.modules() if isinstance(module, BigGANBatchNorm)]


def test_checkpoint_loads_strictly_and_generates_digit_sized_rgb(checkpoint: Path) -> None:
    model = load_biggan(checkpoint)  # strict=True, as the Triton model loads it
    config = model.config
    assert (config.z_dim, config.num_classes, config.output_dim) == (128, 10, 32)
    assert (checkpoint / "pytorch_model.bin").stat().st_size < 8 * 2**20

    rng = np.random.default_rng(0)
    z = (rng.standard_normal((6, 128)) * 0.4).astype(np.float32)
    classes = np.eye(10, dtype=np.float32)[[0, 1, 2, 7, 8, 9]]
    with torch.inference_mode():
        raw = model(torch.from_numpy(z), torch.from_numpy(classes), 0.4)
    assert torch.isfinite(raw).all()
    images = generate_images(model, z, classes, np.full((6, 1), 0.4, np.float32))
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert images.std() > 1  # not one flat colour


def test_every_batch_norm_has_its_own_statistics_per_truncation(checkpoint: Path) -> None:
    model = load_biggan(checkpoint)
    norms = _norms(model)
    assert len(norms) == 4 * len(model.config.layers) + 1
    for norm in norms:
        means, variances = norm.running_means, norm.running_vars
        assert means.abs().sum(dim=1).min() > 0  # every row written, none left at init zeros
        assert not torch.allclose(variances, torch.ones_like(variances))
        assert (variances >= 0).all()
        assert not torch.allclose(means[10], means[50])  # truncation 0.2 vs 1.0


@pytest.mark.parametrize("truncation", [1.0, 0.5])
def test_stored_statistics_reproduce_the_batch_they_were_taken_from(
    checkpoint: Path, truncation: float
) -> None:
    """At a grid truncation the unmodified class must redo the batch-statistics forward pass."""
    model = load_biggan(checkpoint)
    generator = torch.Generator().manual_seed(SEED)  # fill_truncation_statistics' own draw
    noise = truncated_normal(FAST.statistics_batch, 1.0, generator) * truncation
    classes = torch.eye(10)[torch.arange(FAST.statistics_batch) % 10]
    with torch.inference_mode():
        stored = model(noise, classes, truncation)
        with batch_statistics(model):
            batch = model(noise, classes, truncation)
    torch.testing.assert_close(stored, batch, atol=1e-4, rtol=0)


def test_batch_statistics_leaves_the_class_and_state_dict_untouched(checkpoint: Path) -> None:
    model = load_biggan(checkpoint)
    keys = set(model.state_dict())
    z = truncated_normal(4, 0.7, torch.Generator().manual_seed(1))
    classes = torch.eye(10)[:4]
    with torch.inference_mode():
        before = model(z, classes, 0.7)
        with batch_statistics(model):
            swapped = model(z, classes, 0.7)
        after = model(z, classes, 0.7)
    assert not torch.allclose(before, swapped)  # the swap really changes the normalisation
    torch.testing.assert_close(before, after, atol=0, rtol=0)
    assert set(model.state_dict()) == keys
    assert all("forward" not in vars(norm) for norm in _norms(model))


def test_same_seed_same_weights_and_the_time_cap_still_saves(tmp_path: Path) -> None:
    # A time cap of 0 s stops after the first step; few statistics rows keep it quick.
    quick = Hyperparameters(statistics_batch=10, n_stats=6)
    first, second = tmp_path / "first", tmp_path / "second"
    report = train(first, seed=SEED, max_seconds=0.0, steps=50, hyperparameters=quick)
    train(second, seed=SEED, max_seconds=0.0, steps=50, hyperparameters=quick)
    assert report.steps == 1
    assert report.details["stopped_by_time_cap"] == "True"
    assert report.details["planned_steps"] == "50"
    weights = [torch.load(d / "pytorch_model.bin", weights_only=True) for d in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert load_biggan(second).config.n_stats == 6


def test_evaluate_names_the_figures_and_fails_an_untrained_generator(checkpoint: Path) -> None:
    quality = evaluate(checkpoint, samples_per_class=4)
    assert {
        "class_accuracy_t0.4",
        "class_accuracy_t1.0",
        "heldout_classifier_accuracy_on_real_train",
    } <= set(quality.figures)
    assert all(0.0 <= value <= 1.0 for name, value in quality.figures.items() if "accuracy" in name)
    # The classifier itself knows digits; three training steps do not make any.
    assert quality.figures["heldout_classifier_accuracy_on_real_train"] > 0.9
    assert quality.targets == {"class_accuracy_t0.4": ">= 0.80"}
    assert quality.figures["class_accuracy_t0.4"] < 0.8 and not quality.passed


def test_sample_grid_has_one_row_per_digit(checkpoint: Path, tmp_path: Path) -> None:
    png = tmp_path / "grid.png"
    sample_grid(checkpoint, png, per_class=3)
    side, pad, scale = 32, 2, 2
    with Image.open(png) as grid:
        assert grid.size == ((3 * (side + pad) + pad) * scale, (10 * (side + pad) + pad) * scale)


def test_discriminator_input_tells_near_black_levels_apart() -> None:
    black, haze, grey = -1.0, -1.0 + 2 * 2 / 255, 0.0  # 0, 2/255 and 1/2 in [0, 1]
    expanded = expand_darks(torch.tensor([black, haze, grey, 1.0]))
    assert expanded[1] - expanded[0] > 10 * (haze - black)
    assert bool((expanded.diff() > 0).all())  # one-to-one: the GAN's target is unchanged
    scores = Discriminator(8, 10)(torch.zeros(2, 3, 32, 32), torch.tensor([0, 9]))
    assert scores.shape == (2,)
