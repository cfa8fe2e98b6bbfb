"""The genmedia CLI against the real gateway (ImageNet class names, random test weights)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from services.common.registry import GATEWAY

pytestmark = pytest.mark.integration

GENMEDIA = Path(sys.executable).with_name("genmedia")


def genmedia(
    stack, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(GENMEDIA), "--target", stack.ports.address(GATEWAY), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_cli_generates_translates_and_streams(stack, tmp_path: Path) -> None:
    assert GENMEDIA.exists(), "the genmedia console script is installed by `make venv`"
    generated = genmedia(
        stack, tmp_path, "image", "generate", "--class", "coffee", "--class", "mushroom",
        "--seed", "1", "--out", "out/",
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["coffee_mug-0.png", "mushroom-0.png"]

    Image.open(tmp_path / "out" / "mushroom-0.png").save(tmp_path / "in.png")
    translated = genmedia(
        stack, tmp_path, "image", "translate", "in.png", "--model", "horse2zebra",
        "--out", "out.png",
    )  # fmt: skip
    assert translated.returncode == 0, translated.stderr
    assert Image.open(io.BytesIO((tmp_path / "out.png").read_bytes())).size == (128, 128)

    streamed = genmedia(
        stack, tmp_path, "text", "generate", "The meeting about deep fakes", "--stream",
        "--seed", "2", "--max-new-tokens", "12",
    )  # fmt: skip
    unary = genmedia(
        stack, tmp_path, "text", "generate", "The meeting about deep fakes",
        "--seed", "2", "--max-new-tokens", "12",
    )  # fmt: skip
    assert streamed.returncode == 0 and unary.returncode == 0, streamed.stderr + unary.stderr
    assert streamed.stdout == unary.stdout and streamed.stdout.strip()
    assert "synthetic" in streamed.stderr


def test_cli_passes_repetition_penalty_and_truncation_on(stack, tmp_path: Path) -> None:
    long_prompt = "deep fakes are cheap now. " * 200
    truncated = genmedia(
        stack, tmp_path, "text", "generate", long_prompt, "--max-new-tokens", "8",
        "--truncate-prompt", "--repetition-penalty", "1.3", "--seed", "4",
    )  # fmt: skip
    assert truncated.returncode == 0, truncated.stderr
    assert "prompt truncated: its first" in truncated.stderr
    refused = genmedia(stack, tmp_path, "text", "generate", "x", "--repetition-penalty", "0")
    assert refused.returncode == 1 and "repetition_penalty is 0.0" in refused.stderr


def test_cli_reports_caller_errors_with_status_and_exit_code(stack, tmp_path: Path) -> None:
    result = genmedia(stack, tmp_path, "image", "generate", "--class", "cofee mugg")
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "coffee mug" in result.stderr


def test_cli_lists_classes_and_models(stack, tmp_path: Path) -> None:
    classes = genmedia(stack, tmp_path, "image", "classes", "goldfish")
    assert classes.returncode == 0 and "   1  goldfish" in classes.stdout
    models = genmedia(stack, tmp_path, "image", "models")
    assert models.returncode == 0 and "horse2zebra" in models.stdout and "ready" in models.stdout


def test_cli_sends_an_api_key_without_tls_only_to_this_machine(stack, tmp_path: Path) -> None:
    with_key = {**os.environ, "GENMEDIA_API_KEY": "gm_open_mode_ignores_it"}
    here = genmedia(stack, tmp_path, "image", "models", env=with_key)
    assert here.returncode == 0, here.stderr
    # A later --target wins: the same call to another host stops before connecting.
    away = genmedia(stack, tmp_path, "--target", "gateway.invalid:50051", "image", "models",
                    env=with_key)  # fmt: skip
    assert away.returncode == 2
    assert "in cleartext: use --tls" in away.stderr and "--insecure" in away.stderr
