"""BigGAN batching: one forward per distinct truncation, rows back in request order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_pretrained_biggan import BigGANConfig

from genmedia_models.biggan import generate_images, load_biggan, truncation_groups, validate_request
from genmedia_models.runtime import InvalidInputError


class EchoGenerator(torch.nn.Module):
    """Stands in for BigGAN: pixel values reveal which row and truncation produced an image."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[int, float]] = []

    def forward(
        self, z: torch.Tensor, class_vector: torch.Tensor, truncation: float
    ) -> torch.Tensor:
        self.calls.append((len(z), truncation))
        row_id = z[:, 0].view(-1, 1, 1, 1)
        image = torch.zeros(len(z), 3, 2, 2)
        image[:, 0] = row_id[:, 0] / 100  # channel 0 encodes z[:, 0]
        image[:, 1] = truncation  # channel 1 encodes the truncation used
        return image * 2 - 1


def test_truncation_groups_keep_first_appearance_order() -> None:
    groups = truncation_groups(np.array([[0.5], [1.0], [0.5], [0.2], [1.0]], np.float32))
    assert [value for value, _ in groups] == pytest.approx([0.5, 1.0, 0.2])
    assert [rows.tolist() for _, rows in groups] == [[0, 2], [1, 4], [3]]


def test_rows_come_back_in_the_original_order() -> None:
    model = EchoGenerator()
    truncation = np.array([[0.4], [1.0], [0.4], [0.7], [1.0]], np.float32)
    z = np.zeros((5, 128), np.float32)
    z[:, 0] = np.arange(5) * 10  # row i -> 10 * i
    images = generate_images(model, z, np.zeros((5, 1000), np.float32), truncation)

    assert images.shape == (5, 2, 2, 3) and images.dtype == np.uint8
    row_ids = images[:, 0, 0, 0].astype(float) / 255 * 100
    assert row_ids == pytest.approx(np.arange(5) * 10, abs=0.5)
    used = images[:, 0, 0, 1].astype(float) / 255
    assert used == pytest.approx(truncation[:, 0], abs=0.01)
    assert [n for n, _ in model.calls] == [2, 2, 1]  # one forward per distinct truncation


def test_mixed_batch_equals_rows_generated_alone(weights_dir: Path) -> None:
    model = load_biggan(weights_dir / "biggan")
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((4, 128)) * 0.5).astype(np.float32)
    classes = np.eye(1000, dtype=np.float32)[[1, 207, 980, 1]]
    truncation = np.array([[0.4], [1.0], [0.4], [0.7]], np.float32)

    batch = generate_images(model, z, classes, truncation)
    assert batch.shape == (4, 128, 128, 3)
    for row in range(4):
        alone = generate_images(
            model, z[row : row + 1], classes[row : row + 1], truncation[row : row + 1]
        )
        assert np.abs(alone[0].astype(int) - batch[row].astype(int)).max() <= 1
    # Truncation selects different batch-norm statistics: same z, different image.
    same_z = generate_images(
        model, np.repeat(z[:1], 2, 0), classes[:2], np.array([[0.3], [0.9]], np.float32)
    )
    assert not np.array_equal(same_z[0], same_z[1])


def request_arrays(rows: int = 2, classes: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros((rows, 128), np.float32),
        np.zeros((rows, classes), np.float32),
        np.full((rows, 1), 0.5, np.float32),
    )


def test_valid_request_passes_validation() -> None:
    validate_request(*request_arrays(), BigGANConfig())


def test_wrong_class_count_names_the_checkpoint_num_classes() -> None:
    z, classes, truncation = request_arrays(classes=10)
    with pytest.raises(InvalidInputError, match="1000 entries per row"):
        validate_request(z, classes, truncation, BigGANConfig())


@pytest.mark.parametrize("value", [0.0, -0.1, 1.01, float("nan")])
def test_truncation_outside_zero_one_is_rejected(value: float) -> None:
    z, classes, truncation = request_arrays()
    truncation[1, 0] = value
    with pytest.raises(InvalidInputError, match=r"truncation must be in \(0, 1\]"):
        validate_request(z, classes, truncation, BigGANConfig())


def test_mismatched_row_counts_are_rejected() -> None:
    z, classes, truncation = request_arrays()
    with pytest.raises(InvalidInputError, match="rows"):
        validate_request(z, classes[:1], truncation, BigGANConfig())


def test_loading_is_strict(tmp_path: Path, weights_dir: Path) -> None:
    state = torch.load(weights_dir / "biggan" / "pytorch_model.bin", weights_only=True)
    state.pop("embeddings.weight")
    (tmp_path / "config.json").write_bytes((weights_dir / "biggan" / "config.json").read_bytes())
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(RuntimeError, match=r"embeddings\.weight"):
        load_biggan(tmp_path)


def test_missing_checkpoint_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_biggan(tmp_path)
