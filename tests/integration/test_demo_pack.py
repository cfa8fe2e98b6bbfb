"""The committed demo pack (models/demo) through the real stack.

It checks what a newcomer sees after `make run`: recognisable digits of the
requested class, translations that keep the digit, English-like text, the
README's CLI lines, and the models reported as they are loaded.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from genmedia_shared.paths import REPO_ROOT
from services.common.registry import GATEWAY
from services.launcher.stack import Stack
from tests.integration.conftest import channel_to, running_stack
from tools.training import cyclegan_digits, digits

pytestmark = pytest.mark.integration

DEMO_PACK = REPO_ROOT / "models" / "demo"
README = REPO_ROOT / "README.md"


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(DEMO_PACK, tmp_path_factory.mktemp("demo-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def demo_gateway(demo_stack: Stack) -> Iterator[grpc.Channel]:
    with channel_to(demo_stack, GATEWAY) as channel:
        yield channel


@pytest.fixture(scope="module")
def digit_classifier() -> digits.ImageClassifier:
    heldout = digits.handwritten_digits("heldout")
    return digits.ImageClassifier().fit(heldout.images, heldout.labels)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_generated_digits_are_of_the_requested_class(demo_gateway, digit_classifier) -> None:
    stub = gen_grpc.ImageGenerationServiceStub(demo_gateway)
    names = [gen_pb.ClassSelector(name=name) for name in digits.DIGIT_NAMES]
    response = stub.GenerateImages(
        gen_pb.GenerateImagesRequest(classes=names, count=1, seed=11), timeout=60
    )
    second = stub.GenerateImages(
        gen_pb.GenerateImagesRequest(classes=names, count=1, seed=12), timeout=60
    )
    generated = [*response.images, *second.images]
    pixels = np.stack([decode(g.image.data) for g in generated])
    assert pixels.shape == (20, 32, 32, 3)
    predicted = digit_classifier.predict(digits.from_rgb_uint8(pixels))
    requested = np.array([g.image_class.id for g in generated])
    assert (predicted == requested).mean() >= 0.8, (predicted, requested)


def test_classes_and_models_are_reported_as_loaded(demo_gateway) -> None:
    classes = gen_grpc.ImageGenerationServiceStub(demo_gateway).ListClasses(
        gen_pb.ListClassesRequest(), timeout=10
    )
    assert [(c.name, list(c.synonyms)) for c in classes.classes][:2] == [
        ("zero", ["0"]),
        ("one", ["1"]),
    ]
    info = classes.model_info
    assert (info.name, info.architecture, info.resolution) == ("biggan-digits", "BigGAN-deep", 32)
    assert "digits" in info.dataset
    models = trans_grpc.ImageTranslationServiceStub(demo_gateway).ListModels(
        trans_pb.ListModelsRequest(), timeout=10
    )
    assert [(m.name, m.ready, m.info.resolution) for m in models.models] == [
        ("handwritten2typeset", True, 32),
        ("typeset2handwritten", True, 32),
    ]


def _translate(stub: trans_grpc.ImageTranslationServiceStub, pixels: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    reply = stub.TranslateImage(
        trans_pb.TranslateImageRequest(image=buffer.getvalue(), model="handwritten2typeset"),
        timeout=30,
    )
    return decode(reply.image.data)


def test_translation_keeps_the_digit(demo_gateway) -> None:
    stub = trans_grpc.ImageTranslationServiceStub(demo_gateway)
    heldout = digits.handwritten_digits("heldout")
    # The model card's class judge: it reads the digit whatever its style.
    handwritten, typeset = cyclegan_digits._training_sets()
    classifier = digits.ImageClassifier().fit(
        np.concatenate([handwritten.images, typeset.images]),
        np.concatenate([handwritten.labels, typeset.labels]),
    )
    inputs = digits.to_rgb_uint8(heldout.images[:100])
    outputs = np.stack([_translate(stub, pixels) for pixels in inputs])
    predicted = classifier.predict(digits.from_rgb_uint8(outputs))
    # The card measures >= 0.80 on all 540 held-out digits; 100 of them vary by a few points.
    assert (predicted == heldout.labels[:100]).mean() >= 0.7


def test_translation_keeps_the_input_size(demo_gateway) -> None:
    stub = trans_grpc.ImageTranslationServiceStub(demo_gateway)
    pixels = digits.to_rgb_uint8(digits.handwritten_digits("heldout").images[:1])[0]
    larger = np.asarray(Image.fromarray(pixels).resize((64, 48)))
    assert _translate(stub, larger).shape == (48, 64, 3)


def test_text_reads_like_english(demo_gateway) -> None:
    stub = text_grpc.TextGenerationServiceStub(demo_gateway)
    texts = [
        stub.GenerateText(
            text_pb.GenerateTextRequest(
                prompt="Return the", max_new_tokens=60, seed=seed, temperature=0.8, top_k=40
            ),
            timeout=60,
        ).text
        for seed in range(6)
    ]
    # A small model that may end a sample early: judge six samples together.
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", " ".join(texts))]
    assert len(words) >= 30, texts
    common = {"the", "a", "of", "to", "is", "and", "in", "if", "for", "be", "or", "an", "this"}
    assert sum(w in common for w in words) >= 0.1 * len(words), texts


def test_readme_cli_lines_work_as_printed(demo_stack, tmp_path: Path) -> None:
    """Every `.venv/bin/genmedia ...` line of the README's quick start, run as printed."""
    quick_start = README.read_text().split("## Quick start", 1)[1].split("## ", 1)[0]
    lines = re.findall(r"^\.venv/bin/genmedia (.+)$", quick_start, flags=re.MULTILINE)
    assert len(lines) == 3
    genmedia = Path(sys.executable).with_name("genmedia")
    target = demo_stack.ports.address(GATEWAY)
    for line in lines:
        arguments = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', line)]
        result = subprocess.run(
            [str(genmedia), "--target", target, *arguments],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (line, result.stderr)
    assert len(list((tmp_path / "out").glob("*.png"))) == 8
    assert Image.open(tmp_path / "typeset.png").size == (32, 32)


def test_readme_http_examples_work_as_printed(demo_stack, tmp_path: Path) -> None:
    """The README's curl lines and its openai SDK example, against the demo pack's stack
    (only the port differs from `make run`'s)."""
    section = README.read_text().split("## Calling over HTTP", 1)[1].split("\n## ", 1)[0]
    shell = section.split("```sh\n", 1)[1].split("```", 1)[0]
    python = section.split("```python\n", 1)[1].split("```", 1)[0]
    address = demo_stack.gateways[0].http_url.removeprefix("http://")
    lines = [line for line in shell.splitlines() if line.startswith("curl ")]
    assert len(lines) == 6
    for line in lines:
        result = subprocess.run(
            ["bash", "-c", line.replace("127.0.0.1:8080", address) + " --fail-with-body"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, (line, result.stdout, result.stderr)
    images = json.loads((tmp_path / "seven.json").read_text())
    assert images["data"][0]["revised_prompt"] == "seven" and images["size"] == "64x64"
    result = subprocess.run(
        [sys.executable, "-c", python.replace("127.0.0.1:8080", address)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "2 images, 64x64 cyclegan_handwritten2typeset"
