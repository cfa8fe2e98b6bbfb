"""The digits CycleGAN trainer writes generators that Triton's loader serves as they are."""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genmedia_models.cyclegan import config_from_state_dict, load_generator
from tools.training import cyclegan_digits, digits
from tools.training.cyclegan_digits import (
    CHECKPOINT_NAME,
    DIRECTIONS,
    CycleGanDigitsConfig,
    evaluate,
    sample_grid,
    train,
)
from tools.training.report import QualityReport, TrainingReport

STEPS = 3
# The real architecture and losses; only the digit readers train for fewer steps.
FAST = dataclasses.replace(CycleGanDigitsConfig(), classifier_steps=5)


@dataclasses.dataclass
class Recorded:
    typeset_renders: list[np.ndarray]
    """The images of every typeset set rendered."""
    translated: list[np.ndarray]
    """Every batch of images sent through a generator."""


@contextlib.contextmanager
def recording() -> Iterator[Recorded]:
    """Records the typeset digits rendered and the images translated, meanwhile."""
    recorded = Recorded([], [])
    render, translate = digits.typeset_digits, cyclegan_digits.translate

    def rendering(per_class: int, seed: int) -> digits.DigitSet:
        digit_set = render(per_class, seed)
        recorded.typeset_renders.append(digit_set.images)
        return digit_set

    def translating(net: torch.nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        recorded.translated.append(images)
        return translate(net, images, batch_size)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(digits, "typeset_digits", rendering)
        patch.setattr(cyclegan_digits, "translate", translating)
        yield recorded


@pytest.fixture(scope="module")
def training_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainingReport, Recorded]:
    out = tmp_path_factory.mktemp("cyclegan_digits")
    with recording() as recorded:
        report = train(out, seed=0, steps=STEPS, config=FAST)
    return out, report, recorded


@pytest.fixture(scope="module")
def trained(training_run: tuple[Path, TrainingReport, Recorded]) -> tuple[Path, TrainingReport]:
    out, report, _ = training_run
    return out, report


@pytest.fixture(scope="module")
def evaluation(trained: tuple[Path, TrainingReport]) -> tuple[QualityReport, Recorded]:
    with recording() as recorded:
        quality = evaluate(trained[0])
    return quality, recorded


def test_training_writes_one_generator_per_direction(
    trained: tuple[Path, TrainingReport],
) -> None:
    out, report = trained
    for direction in DIRECTIONS:
        path = out / direction / CHECKPOINT_NAME
        assert path.is_file()
        assert path.stat().st_size < 4 * 1024 * 1024
    assert report.model == "cyclegan-digits"
    assert report.resolution == 32
    assert report.steps == STEPS
    assert report.details["stopped_early"] == "False"


def test_checkpoints_have_the_original_layout_and_the_configured_shape(
    trained: tuple[Path, TrainingReport],
) -> None:
    out, _ = trained
    for direction in DIRECTIONS:
        state_dict = torch.load(out / direction / CHECKPOINT_NAME, weights_only=True)
        config = config_from_state_dict(state_dict)
        assert (config.ngf, config.n_blocks) == (FAST.ngf, FAST.n_blocks)
        assert (config.input_nc, config.output_nc) == (3, 3)
        assert "model.1.weight" in state_dict


def test_served_model_translates_uint8_batches_with_each_generator(
    trained: tuple[Path, TrainingReport],
    pb_utils: types.ModuleType,
) -> None:
    from genmedia_models.cyclegan import translate

    out, _ = trained
    batch = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    for direction in DIRECTIONS:
        net = load_generator(out / direction / CHECKPOINT_NAME)  # strict=True inside
        result = translate(net, batch)
        assert result.shape == batch.shape
        assert result.dtype == np.uint8


def test_same_seed_gives_identical_weights(tmp_path: Path) -> None:
    first = train(tmp_path / "a", seed=3, steps=2, config=FAST)
    second = train(tmp_path / "b", seed=3, steps=2, config=FAST)
    assert first.steps == second.steps == 2
    for direction in DIRECTIONS:
        a = torch.load(tmp_path / "a" / direction / CHECKPOINT_NAME, weights_only=True)
        b = torch.load(tmp_path / "b" / direction / CHECKPOINT_NAME, weights_only=True)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_time_cap_stops_training_early(tmp_path: Path) -> None:
    report = train(tmp_path, steps=50, max_seconds=0.0, config=FAST)
    assert report.steps < 50
    assert report.details["stopped_early"] == "True"
    assert all((tmp_path / d / CHECKPOINT_NAME).is_file() for d in DIRECTIONS)


def test_evaluation_reports_both_directions_against_the_targets(
    evaluation: tuple[QualityReport, Recorded],
) -> None:
    quality, _ = evaluation
    main = {
        f"{direction}_{figure}"
        for direction in DIRECTIONS
        for figure in ("class_preserved", "target_domain")
    }
    assert set(quality.targets) == main
    assert set(quality.targets.values()) == {">= 0.80"}
    assert main < set(quality.figures)
    assert all(0.0 <= value <= 1.0 for value in quality.figures.values())
    # The judges themselves read real held-out digits well, or the figures mean nothing.
    assert quality.figures["class_judge_accuracy_handwritten"] > 0.95
    assert quality.figures["class_judge_accuracy_typeset"] > 0.95
    assert quality.figures["domain_classifier_accuracy"] > 0.95
    # Three steps cannot translate digits: the check must be able to fail.
    assert not quality.passed
    assert quality.method


def test_sample_grid_shows_inputs_above_translations(
    trained: tuple[Path, TrainingReport], tmp_path: Path
) -> None:
    out, _ = trained
    png = tmp_path / "grid.png"
    sample_grid(out, png, per_direction=10)
    with Image.open(png) as image:
        # 10 columns, 4 rows (input and output per direction) of 32 px + 2 px gaps, doubled.
        assert image.size == ((10 * 34 + 2) * 2, (4 * 34 + 2) * 2)


def test_evaluation_never_sees_the_training_typeset_render(
    training_run: tuple[Path, TrainingReport, Recorded],
    evaluation: tuple[QualityReport, Recorded],
) -> None:
    trained_on = {image.tobytes() for images in training_run[2].typeset_renders for image in images}
    assert trained_on, "training rendered no typeset digits"
    _, recorded = evaluation
    # The typeset digits evaluation translates: one of the sets it rendered, sent whole.
    typeset = [
        images
        for images in recorded.translated
        if any(images is rendered for rendered in recorded.typeset_renders)
    ]
    assert len(typeset) == 1
    shared = trained_on & {image.tobytes() for image in typeset[0]}
    assert len(shared) == 0, "evaluation translated typeset digits the generators trained on"
