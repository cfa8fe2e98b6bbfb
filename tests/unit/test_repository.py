import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from services.launcher.repository import (
    MANIFEST_FILE,
    InstanceGroup,
    WeightsError,
    build_repository,
    discover,
    parse_parameter,
    verify_manifest,
    write_manifest,
)


def fake_weights(root: Path, directions: tuple[str, ...] = ("apple2orange",)) -> Path:
    (root / "biggan").mkdir(parents=True)
    (root / "biggan" / "config.json").write_text("{}")
    (root / "biggan" / "genmedia.json").write_text(
        json.dumps({"name": "biggan-digits", "resolution": 32, "classes": "digits"})
    )
    for direction in directions:
        (root / "cyclegan" / direction).mkdir(parents=True)
        (root / "cyclegan" / direction / "latest_net_G.pth").write_bytes(b"weights")
    return root


def test_served_repository_has_a_model_per_present_checkpoint(tmp_path: Path) -> None:
    weights = fake_weights(tmp_path / "w", ("apple2orange", "orange2apple"))
    served = build_repository(weights, tmp_path / "repo")
    assert served.triton_models == ["biggan", "cyclegan_apple2orange", "cyclegan_orange2apple"]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == served.triton_models
    config = (tmp_path / "repo" / "cyclegan_orange2apple" / "config.pbtxt").read_text()
    assert 'name: "cyclegan_orange2apple"' in config and "horse2zebra" not in config.split("\n")[1]
    assert (tmp_path / "repo" / "cyclegan_orange2apple" / "1" / "model.py").is_file()


def test_metadata_becomes_config_parameters(tmp_path: Path) -> None:
    build_repository(fake_weights(tmp_path / "w"), tmp_path / "repo")
    config = (tmp_path / "repo" / "biggan" / "config.pbtxt").read_text()
    assert 'key: "genmedia_classes"\n  value: { string_value: "digits" }' in config
    assert 'key: "genmedia_resolution"\n  value: { string_value: "32" }' in config
    assert 'key: "weights_path"' in config


def test_nothing_to_serve_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no model weights"):
        build_repository(tmp_path, tmp_path / "repo")
    assert discover(tmp_path).triton_models == []


def test_manifest_detects_a_changed_or_missing_file(tmp_path: Path) -> None:
    weights = fake_weights(tmp_path / "w")
    write_manifest(weights)
    assert verify_manifest(weights) == 3
    assert MANIFEST_FILE not in (weights / MANIFEST_FILE).read_text()
    (weights / "biggan" / "config.json").write_text('{"tampered": true}')
    with pytest.raises(WeightsError, match=r"biggan/config.json does not match"):
        verify_manifest(weights)
    (weights / "biggan" / "config.json").unlink()
    with pytest.raises(WeightsError, match="missing"):
        verify_manifest(weights)


def test_no_manifest_means_nothing_to_verify(tmp_path: Path) -> None:
    assert verify_manifest(fake_weights(tmp_path / "w")) == 0


def parsed_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_instance_group_override_reaches_every_model(tmp_path: Path) -> None:
    weights = fake_weights(tmp_path / "w")
    (weights / "gpt2").mkdir()
    (weights / "gpt2" / "config.json").write_text("{}")
    served = build_repository(weights, tmp_path / "repo", InstanceGroup("KIND_GPU", 2))
    kind_gpu = model_config_pb2.ModelInstanceGroup.Kind.KIND_GPU
    for name in served.triton_models:
        config = parsed_config(tmp_path / "repo" / name / "config.pbtxt")
        assert [(g.kind, g.count) for g in config.instance_group] == [(kind_gpu, 2)], name
        assert config.name == name


def test_without_override_the_sources_instance_group_stays(tmp_path: Path) -> None:
    build_repository(fake_weights(tmp_path / "w"), tmp_path / "repo")
    config = parsed_config(tmp_path / "repo" / "biggan" / "config.pbtxt")
    kind_auto = model_config_pb2.ModelInstanceGroup.Kind.KIND_AUTO
    assert [(g.kind, g.count) for g in config.instance_group] == [(kind_auto, 1)]


@pytest.mark.parametrize(("kind", "count"), [("KIND_TPU", 1), ("KIND_GPU", 0)])
def test_bad_instance_group_is_refused(kind: str, count: int) -> None:
    with pytest.raises(WeightsError, match="instance"):
        InstanceGroup(kind, count)


def build_with_instance_env(
    weights: Path, out: Path, kind: str, count: str
) -> subprocess.CompletedProcess[str]:
    """`python -m services.launcher.repository` as the Kubernetes init step runs it."""
    env = os.environ | {
        "GENMEDIA_TRITON_INSTANCE_KIND": kind,
        "GENMEDIA_TRITON_INSTANCE_COUNT": count,
    }
    command = [sys.executable, "-m", "services.launcher.repository"]
    return subprocess.run(
        [*command, "--weights", str(weights), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_command_line_reads_the_instance_group_from_the_environment(tmp_path: Path) -> None:
    weights = fake_weights(tmp_path / "w")
    done = build_with_instance_env(weights, tmp_path / "repo", "KIND_CPU", "3")
    assert done.returncode == 0, done.stderr
    config = (tmp_path / "repo" / "biggan" / "config.pbtxt").read_text()
    assert "count: 3\n    kind: KIND_CPU" in config
    refused = build_with_instance_env(weights, tmp_path / "repo2", "KIND_CPU", "0")
    assert refused.returncode != 0
    assert "instance count must be at least 1" in refused.stderr


def test_parameter_overrides_replace_a_models_declared_parameters(tmp_path: Path) -> None:
    weights = fake_weights(tmp_path / "w")
    (weights / "gpt2").mkdir()
    (weights / "gpt2" / "config.json").write_text("{}")
    overrides = {"gpt2": {"max_sequences": "2", "max_queued_requests": "0"}}
    build_repository(weights, tmp_path / "repo", parameters=overrides)
    config = parsed_config(tmp_path / "repo" / "gpt2" / "config.pbtxt")
    values = {key: value.string_value for key, value in config.parameters.items()}
    assert values["max_sequences"] == "2" and values["max_queued_requests"] == "0"
    assert values["max_total_tokens"] == "8192"  # the others stay
    biggan = parsed_config(tmp_path / "repo" / "biggan" / "config.pbtxt")
    assert "max_sequences" not in biggan.parameters


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gpt2": {"no_such_parameter": "1"}}, "no parameter 'no_such_parameter'"),
        ({"gpt3": {"max_sequences": "1"}}, "models not served: gpt3"),
    ],
)
def test_bad_parameter_overrides_are_refused(
    tmp_path: Path, overrides: dict[str, dict[str, str]], message: str
) -> None:
    weights = fake_weights(tmp_path / "w")
    (weights / "gpt2").mkdir()
    (weights / "gpt2" / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match=message):
        build_repository(weights, tmp_path / "repo", parameters=overrides)


def test_parameter_text_is_model_dot_key_equals_value() -> None:
    assert parse_parameter("gpt2.max_sequences=8") == ("gpt2", "max_sequences", "8")
    with pytest.raises(WeightsError, match=r"MODEL\.KEY=VALUE"):
        parse_parameter("max_sequences=8")


def test_the_repository_command_takes_parameters_from_the_environment(tmp_path: Path) -> None:
    weights = fake_weights(tmp_path / "w")
    (weights / "gpt2").mkdir()
    (weights / "gpt2" / "config.json").write_text("{}")
    env = {
        **os.environ,
        "GENMEDIA_TRITON_MODEL_PARAMETERS": "gpt2.max_sequences=3 gpt2.max_queued_requests=5",
    }
    command = [sys.executable, "-m", "services.launcher.repository"]
    command += ["--weights", str(weights), "--out", str(tmp_path / "repo")]
    subprocess.run(command, env=env, check=True, capture_output=True)
    config = parsed_config(tmp_path / "repo" / "gpt2" / "config.pbtxt")
    assert config.parameters["max_sequences"].string_value == "3"
    assert config.parameters["max_queued_requests"].string_value == "5"
