"""Content Credentials on every served image, checked by c2pa-python's own Reader, by the
parser the gateway uses (services.common.content_credentials) and by the gateway's
ProvenanceService (``genmedia verify``)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from c2pa import Context, Reader
from PIL import Image

from genmedia.v1 import common_pb2, provenance_pb2, provenance_pb2_grpc
from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia_shared.paths import REPO_ROOT
from services.common.content_credentials import read_credentials
from services.common.provenance import TRAINED_ALGORITHMIC_MEDIA
from services.common.registry import ALL_PROCESSES, GATEWAY
from services.common.signing_keys import development_credentials
from services.launcher.stack import Stack
from tests.integration.conftest import scrape
from tests.integration.processes import open_channel, spawn

pytestmark = pytest.mark.integration

FORMATS = [common_pb2.IMAGE_FORMAT_PNG, common_pb2.IMAGE_FORMAT_JPEG, common_pb2.IMAGE_FORMAT_WEBP]
MIME_TYPES = {
    common_pb2.IMAGE_FORMAT_PNG: "image/png",
    common_pb2.IMAGE_FORMAT_JPEG: "image/jpeg",
    common_pb2.IMAGE_FORMAT_WEBP: "image/webp",
}
# The IPTC term C2PA uses for generative AI output (written out, not imported from the code).
IPTC_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
)


@pytest.fixture(scope="module")
def root_pem(stack: Stack) -> str:
    return stack.signing_files()["root"].read_text()


def verify(channel: grpc.Channel, data: bytes) -> provenance_pb2.VerifyImageResponse:
    stub = provenance_pb2_grpc.ProvenanceServiceStub(channel)
    return stub.VerifyImage(provenance_pb2.VerifyImageRequest(data=data), timeout=30)


def trusted_manifest(data: bytes, mime: str, root_pem: str) -> dict[str, Any]:
    """The active manifest, read and validated by c2pa-python's Reader directly (not by
    the gateway's parser), which must trust it: signed by a certificate under
    ``root_pem`` and nothing failing."""
    context = Context.from_dict(
        {"verify": {"remote_manifest_fetch": False}, "trust": {"user_anchors": root_pem}}
    )
    with Reader(mime, io.BytesIO(data), context=context) as reader:
        state, manifest = reader.get_validation_state(), reader.get_active_manifest()
        results = reader.get_validation_results()["activeManifest"]
    assert state == "Trusted", results
    assert results["failure"] == []
    assert "signingCredential.trusted" in {result["code"] for result in results["success"]}
    assert "assertion.dataHash.match" in {result["code"] for result in results["success"]}
    return manifest


def manifest_actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        action
        for assertion in manifest["assertions"]
        if assertion["label"].startswith("c2pa.actions")
        for action in assertion["data"]["actions"]
    ]


def manifest_provenance(manifest: dict[str, Any]) -> dict[str, Any]:
    (record,) = [
        a["data"] for a in manifest["assertions"] if a["label"] == "org.genmedia.provenance"
    ]
    return record


def photo() -> bytes:
    pixels = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", FORMATS, ids=lambda f: common_pb2.ImageFormat.Name(f))
def test_generated_images_carry_trusted_credentials_that_say_synthetic(
    gateway: grpc.Channel, root_pem: str, image_format: int
) -> None:
    response = gen_grpc.ImageGenerationServiceStub(gateway).GenerateImages(
        gen_pb.GenerateImagesRequest(
            classes=[gen_pb.ClassSelector(name="goldfish")], count=2, seed=4, format=image_format
        ),
        timeout=60,
    )
    for generated in response.images:
        data = generated.image.data
        manifest = trusted_manifest(data, MIME_TYPES[image_format], root_pem)
        (created,) = manifest_actions(manifest)
        assert created["action"] == "c2pa.created"
        assert created["digitalSourceType"] == IPTC_TRAINED_ALGORITHMIC_MEDIA
        assert created["softwareAgent"] == {"name": "genmedia biggan", "version": "1"}
        recorded = manifest_provenance(manifest)
        assert (recorded["request_id"], recorded["seed"]) == (response.request_id, 4)
        assert recorded["synthetic"] is True and recorded["model"] == "biggan"

        report = read_credentials(data, root_pem)
        assert (report.present, report.state, report.failures) == (True, "Trusted", ())
        assert report.digital_source_type == TRAINED_ALGORITHMIC_MEDIA
        assert report.actions == ("c2pa.created",)
        assert report.software_agent == "genmedia biggan 1"
        assert report.provenance is not None
        assert report.provenance["request_id"] == response.request_id
        assert report.provenance["seed"] == 4 and report.provenance["synthetic"] is True

        verified = verify(gateway, data)
        assert verified.verdict == provenance_pb2.VERDICT_SYNTHETIC, verified.explanation
        assert verified.content_credentials.provenance.model == "biggan"
        assert verified.content_credentials.provenance.request_id == response.request_id
        assert "genmedia biggan 1" in verified.explanation


def test_translated_image_records_its_input_as_the_edited_parent(
    gateway: grpc.Channel, root_pem: str
) -> None:
    source = photo()
    response = trans_grpc.ImageTranslationServiceStub(gateway).TranslateImage(
        trans_pb.TranslateImageRequest(image=source, model="horse2zebra"), timeout=60
    )
    data = response.image.data
    manifest = trusted_manifest(data, "image/png", root_pem)
    opened, edited = manifest_actions(manifest)
    assert (opened["action"], edited["action"]) == ("c2pa.opened", "c2pa.edited")
    assert edited["digitalSourceType"] == IPTC_TRAINED_ALGORITHMIC_MEDIA
    assert manifest_provenance(manifest)["request_id"] == response.request_id
    report = read_credentials(data, root_pem)
    assert report.state == "Trusted"
    assert report.actions == ("c2pa.opened", "c2pa.edited")
    assert report.digital_source_type == TRAINED_ALGORITHMIC_MEDIA
    ingredients = manifest["ingredients"]
    assert [(i["relationship"], i["format"]) for i in ingredients] == [("parentOf", "image/jpeg")]
    verified = verify(gateway, data)
    assert verified.verdict == provenance_pb2.VERDICT_SYNTHETIC
    assert list(verified.content_credentials.actions) == ["c2pa.opened", "c2pa.edited"]


def test_edited_re_encoded_and_foreign_files_get_the_verdict_they_deserve(
    gateway: grpc.Channel,
) -> None:
    generated = gen_grpc.ImageGenerationServiceStub(gateway).GenerateImages(
        gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="goldfish")], seed=5),
        timeout=60,
    )
    data = generated.images[0].image.data

    edited = bytearray(data)
    edited[-40] ^= 0x01  # one bit of pixel data, after the manifest
    tampered = verify(gateway, bytes(edited))
    assert tampered.verdict == provenance_pb2.VERDICT_TAMPERED
    assert "assertion.dataHash.mismatch" in tampered.content_credentials.failures

    # Re-encoding drops the manifest; the invisible watermark stays.
    picture = Image.open(io.BytesIO(data))
    w, h = picture.size
    edits = {
        "JPEG at quality 75": (picture, {"format": "JPEG", "quality": 75}),
        "halved": (picture.resize((picture.width // 2, picture.height // 2)), {"format": "PNG"}),
        "10% cropped off each side": (
            picture.crop((w // 10, h // 10, w * 9 // 10, h * 9 // 10)),
            {"format": "PNG"},
        ),
        "as WebP": (picture, {"format": "WEBP"}),
    }
    for edit, (edited_picture, options) in edits.items():
        buffer = io.BytesIO()
        edited_picture.convert("RGB").save(buffer, **options)
        stripped = verify(gateway, buffer.getvalue())
        assert not stripped.content_credentials.present, edit
        assert stripped.watermark.detected, f"{edit}: {stripped.watermark}"
        assert stripped.verdict == provenance_pb2.VERDICT_SYNTHETIC, edit
        assert "no Content Credentials" in stripped.explanation

    foreign = verify(gateway, photo())
    assert foreign.verdict == provenance_pb2.VERDICT_NO_EVIDENCE
    assert not foreign.watermark.detected and foreign.watermark.threshold > 0
    for bad, field in ((b"", "data is empty"), (b"GIF89a....", "not a PNG, JPEG or WebP")):
        with pytest.raises(grpc.RpcError) as error:
            verify(gateway, bad)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in error.value.details()


def test_a_gateway_that_does_not_trust_the_signer_says_so(
    gateway: grpc.Channel, stack: Stack, tmp_path: Path
) -> None:
    other_root = tmp_path / "other-root.pem"
    other_root.write_bytes(development_credentials().root_pem or b"")
    # Another deployment: its own trusted root and its own watermark key.
    sceptic = spawn(
        stack,
        GATEWAY,
        tmp_path,
        GENMEDIA_C2PA_TRUST_ANCHORS_FILE=str(other_root),
        GENMEDIA_IMAGE_WATERMARK_KEY="another deployment's key",
    )
    try:
        sceptic.wait_health()
        data = (
            gen_grpc.ImageGenerationServiceStub(gateway)
            .GenerateImages(
                gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="goldfish")]),
                timeout=60,
            )
            .images[0]
            .image.data
        )
        with open_channel(sceptic.address) as channel:
            verified = verify(channel, data)
    finally:
        sceptic.stop()
    assert verified.verdict == provenance_pb2.VERDICT_SYNTHETIC_UNTRUSTED_SIGNER
    assert list(verified.content_credentials.failures) == ["signingCredential.untrusted"]
    assert not verified.watermark.detected  # not the key it marks with


def test_cli_verify_prints_the_verdict_and_the_claims(
    gateway: grpc.Channel, stack: Stack, tmp_path: Path
) -> None:
    image = (
        gen_grpc.ImageGenerationServiceStub(gateway)
        .GenerateImages(
            gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="goldfish")], seed=8),
            timeout=60,
        )
        .images[0]
    )
    path = tmp_path / "goldfish.png"
    path.write_bytes(image.image.data)
    done = subprocess.run(
        [sys.executable, "-m", "services.client", "--target", stack.ports.address(GATEWAY),
         "verify", str(path)],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{path}: SYNTHETIC: signed by trusted signer" in done.stdout
    assert "actions c2pa.created" in done.stdout
    assert f"request {image.image.provenance.request_id}" in done.stdout


def test_the_signing_key_never_reaches_logs_or_metrics(gateway: grpc.Channel, stack: Stack) -> None:
    gen_grpc.ImageGenerationServiceStub(gateway).GenerateImages(
        gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="goldfish")]), timeout=60
    )
    key_pem = stack.signing_files()["key"].read_text()
    secret_lines = [line for line in key_pem.splitlines() if line and "-----" not in line]
    assert secret_lines
    logs = stack.log_path("gateway").parent.glob("*.log")
    places = {path.name: path.read_text(errors="replace") for path in logs}
    for process in ALL_PROCESSES:
        port = stack.ports.processes[process.name].metrics
        places[f"{process.name} metrics"] = scrape(f"http://127.0.0.1:{port}/metrics")
    for place, text in places.items():
        assert not any(line in text for line in secret_lines), f"signing key in {place}"
