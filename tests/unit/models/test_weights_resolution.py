"""Where a model finds its weights: GENMEDIA_WEIGHTS_DIR + the config's weights_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from genmedia_models.weights import (
    WeightsNotFoundError,
    model_parameter,
    resolve_weights_path,
    weights_path_from_config,
)


def config(weights_path: str | None) -> dict[str, object]:
    parameters = {} if weights_path is None else {"weights_path": {"string_value": weights_path}}
    return {"name": "biggan", "parameters": parameters}


def test_relative_path_resolves_under_the_weights_root(tmp_path: Path) -> None:
    (tmp_path / "biggan").mkdir()
    env = {"GENMEDIA_WEIGHTS_DIR": str(tmp_path)}
    assert weights_path_from_config(config("biggan"), env) == tmp_path / "biggan"


def test_absolute_path_needs_no_root(tmp_path: Path) -> None:
    assert resolve_weights_path(str(tmp_path), env={}) == tmp_path


def test_unset_root_is_a_clear_error() -> None:
    with pytest.raises(WeightsNotFoundError, match="GENMEDIA_WEIGHTS_DIR is not set"):
        resolve_weights_path("biggan", env={})


def test_root_that_is_not_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="is not a directory"):
        resolve_weights_path("biggan", env={"GENMEDIA_WEIGHTS_DIR": str(tmp_path / "nope")})


def test_missing_weights_name_the_full_path(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "gpt2")):
        resolve_weights_path("gpt2", env={"GENMEDIA_WEIGHTS_DIR": str(tmp_path)})


def test_config_without_weights_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match='"weights_path" parameter'):
        weights_path_from_config(config(None), {"GENMEDIA_WEIGHTS_DIR": str(tmp_path)})


def test_model_parameter_reads_string_values() -> None:
    assert model_parameter(config("biggan"), "weights_path") == "biggan"
    assert model_parameter(config("biggan"), "other") is None
