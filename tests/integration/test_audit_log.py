"""One audit event per generation, in the file the settings name: who (hashed), what ran,
what came out (SHA-256), how it is marked; never the key name, the prompt only if allowed."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from services.common.registry import IMAGE_GENERATION, IMAGE_TRANSLATION, TEXT_GENERATION
from services.launcher.stack import Stack
from tests.integration.processes import open_channel, spawn

pytestmark = pytest.mark.integration

CALLER = "alice-the-customer"
# What the gateway passes on to backends: the key's name, never the key.
AS_ALICE = (("x-genmedia-caller", CALLER),)
PROMPT = "A secret diary entry begins"


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_generation_is_audited_without_names_or_prompts(stack: Stack, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    spawned = {
        process.name: spawn(stack, process, tmp_path, GENMEDIA_AUDIT_LOG=str(audit))
        for process in (IMAGE_GENERATION, IMAGE_TRANSLATION, TEXT_GENERATION)
    }
    try:
        for process in spawned.values():
            process.wait_health()
        with open_channel(spawned[IMAGE_GENERATION.name].address) as channel:
            images = gen_grpc.ImageGenerationServiceStub(channel).GenerateImages(
                gen_pb.GenerateImagesRequest(
                    classes=[gen_pb.ClassSelector(name="goldfish")], count=2, seed=7
                ),
                metadata=AS_ALICE,
                timeout=60,
            )
        photo = io.BytesIO()
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo, "PNG")
        with open_channel(spawned[IMAGE_TRANSLATION.name].address) as channel:
            translated = trans_grpc.ImageTranslationServiceStub(channel).TranslateImage(
                trans_pb.TranslateImageRequest(image=photo.getvalue(), model="horse2zebra"),
                metadata=AS_ALICE,
                timeout=60,
            )
        with open_channel(spawned[TEXT_GENERATION.name].address) as channel:
            text = text_grpc.TextGenerationServiceStub(channel).GenerateText(
                text_pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=8, seed=2),
                metadata=AS_ALICE,
                timeout=60,
            )
    finally:
        for process in spawned.values():
            process.stop()

    recorded = events(audit)
    assert [e["service"] for e in recorded] == [
        "image-generation", "image-translation", "text-generation",
    ]  # fmt: skip
    assert all(e["event"] == "generation" for e in recorded)
    assert {e["caller_sha256"] for e in recorded} == {sha256(CALLER)[:16]}
    generation, translation, writing = recorded

    assert generation["request_id"] == images.request_id
    assert generation["model"] == "biggan" and generation["model_version"] == "1"
    assert generation["parameters"]["seed"] == 7 and generation["parameters"]["count"] == 2
    assert [o["sha256"] for o in generation["outputs"]] == [
        sha256(i.image.data) for i in images.images
    ]
    assert generation["content_credentials"] is True

    assert translation["parameters"]["input_sha256"] == sha256(photo.getvalue())
    assert translation["outputs"][0]["sha256"] == sha256(translated.image.data)

    assert writing["outputs"][0]["sha256"] == sha256(text.text)
    assert writing["parameters"]["prompt_sha256"] == sha256(PROMPT)
    assert writing["watermark"] == "text-greenlist"
    assert writing["finish_reason"] in ("length", "eos")

    raw = audit.read_text()
    assert CALLER not in raw and PROMPT not in raw


def test_prompts_reach_the_audit_log_only_when_allowed(stack: Stack, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    service = spawn(
        stack,
        TEXT_GENERATION,
        tmp_path,
        GENMEDIA_AUDIT_LOG=str(audit),
        GENMEDIA_AUDIT_PROMPTS="true",
    )
    try:
        service.wait_health()
        with open_channel(service.address) as channel:
            text_grpc.TextGenerationServiceStub(channel).GenerateText(
                text_pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=4, seed=2), timeout=60
            )
    finally:
        service.stop()
    (event,) = events(audit)
    assert event["parameters"]["prompt"] == PROMPT
    assert event["caller_sha256"] == "-"


def test_raw_frames_are_audited_one_event_each_without_credentials(
    stack: Stack, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    service = spawn(stack, IMAGE_TRANSLATION, tmp_path, GENMEDIA_AUDIT_LOG=str(audit))
    frames = [np.full((16, 16, 3), shade, np.uint8) for shade in (40, 200)]
    config = trans_pb.FrameStreamConfig(model="horse2zebra", raw_output=True)
    requests = [trans_pb.TranslateFramesRequest(config=config)] + [
        trans_pb.TranslateFramesRequest(
            raw=trans_pb.RawFrame(rgb=frame.tobytes(), width=16, height=16)
        )
        for frame in frames
    ]
    try:
        service.wait_health()
        with open_channel(service.address) as channel:
            answers = list(
                trans_grpc.ImageTranslationServiceStub(channel).TranslateFrames(
                    iter(requests), metadata=AS_ALICE, timeout=60
                )
            )
    finally:
        service.stop()
    recorded = events(audit)
    assert [e["parameters"]["frame"] for e in recorded] == [0, 1]
    for event, frame, answer in zip(recorded, frames, answers, strict=True):
        assert event["model"] == "cyclegan_horse2zebra"
        assert event["request_id"] == answer.provenance.request_id
        assert event["parameters"]["input_sha256"] == sha256(frame.tobytes())
        assert event["parameters"]["format"] == "RAW_RGB"
        assert event["outputs"][0]["sha256"] == sha256(answer.raw.rgb)
        assert event["content_credentials"] is False
        assert event["caller_sha256"] == sha256(CALLER)[:16]
