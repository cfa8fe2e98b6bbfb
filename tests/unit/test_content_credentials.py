"""Content Credentials: signing, reading back, the gateway's verdicts, the settings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genmedia.v1 import provenance_pb2
from services.common.content_credentials import (
    ContentCredentials,
    SourceImage,
    read_credentials,
    sniff_mime,
)
from services.common.images import EncodeOptions, encode_image
from services.common.provenance import TRAINED_ALGORITHMIC_MEDIA, make_provenance
from services.common.settings import ImageServiceSettings, SettingsError
from services.common.signing_keys import development_credentials
from services.gateway.provenance import verdict

CREDENTIALS = development_credentials()
ROOT = (CREDENTIALS.root_pem or b"").decode()
SIGNER = ContentCredentials(CREDENTIALS)
PROVENANCE = make_provenance("biggan", "3", seed=11, request_id="req-1")
PIXELS = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)


def signed(image_format: int, source: SourceImage | None = None) -> bytes:
    return encode_image(
        PIXELS, PROVENANCE, EncodeOptions(image_format, credentials=SIGNER), source
    ).data


@pytest.mark.parametrize("image_format", [1, 2, 3])
def test_every_format_is_signed_and_reads_back_trusted(image_format: int) -> None:
    data = signed(image_format)
    assert Image.open(io.BytesIO(data)).size == (48, 40)  # still an ordinary image
    report = read_credentials(data, ROOT)
    assert (report.present, report.state, report.failures) == (True, "Trusted", ())
    assert report.synthetic and report.digital_source_type == TRAINED_ALGORITHMIC_MEDIA
    assert report.software_agent == "genmedia biggan 3"
    assert report.signer == "genmedia development signer"
    assert report.provenance is not None and report.provenance["seed"] == 11


def test_a_translation_is_opened_then_edited() -> None:
    source = io.BytesIO()
    Image.fromarray(PIXELS).save(source, "WEBP")
    data = signed(1, SourceImage(source.getvalue(), "image/webp"))
    assert read_credentials(data, ROOT).actions == ("c2pa.opened", "c2pa.edited")


def test_untrusted_tampered_stripped_and_foreign_files() -> None:
    data = signed(1)
    untrusted = read_credentials(data)  # no anchors: c2pa's built-in list only
    assert (untrusted.state, untrusted.failures) == ("Valid", ("signingCredential.untrusted",))

    tampered = bytearray(data)
    tampered[-40] ^= 1
    assert read_credentials(bytes(tampered), ROOT).failures == ("assertion.dataHash.mismatch",)

    plain = encode_image(PIXELS, PROVENANCE, EncodeOptions(1)).data  # no credentials
    assert not read_credentials(plain, ROOT).present
    assert not read_credentials(b"\x89PNG not really", ROOT).present
    assert not read_credentials(b"plain text", ROOT).present


def test_verdicts_follow_the_report() -> None:
    cases = {
        provenance_pb2.VERDICT_SYNTHETIC: read_credentials(signed(2), ROOT),
        provenance_pb2.VERDICT_SYNTHETIC_UNTRUSTED_SIGNER: read_credentials(signed(2)),
        provenance_pb2.VERDICT_NO_EVIDENCE: read_credentials(b"\xff\xd8 nothing"),
    }
    broken = bytearray(signed(1))
    broken[-40] ^= 1
    cases[provenance_pb2.VERDICT_TAMPERED] = read_credentials(bytes(broken), ROOT)
    for expected, report in cases.items():
        code, explanation = verdict(report)
        assert code == expected, explanation
        assert explanation


def test_sniffed_mime_types() -> None:
    assert [sniff_mime(signed(f)) for f in (1, 2, 3)] == ["image/png", "image/jpeg", "image/webp"]
    with pytest.raises(ValueError):
        sniff_mime(b"GIF89a")


def test_settings_take_key_and_chain_together_and_refuse_a_bad_key(tmp_path: Path) -> None:
    files = CREDENTIALS.write(tmp_path)
    base = {"triton_url": "localhost:1"}
    with pytest.raises(ValueError, match="together"):
        ImageServiceSettings(**base, c2pa_key_file=files["key"])
    good = ImageServiceSettings(**base, c2pa_key_file=files["key"], c2pa_cert_file=files["chain"])
    data = ContentCredentials.from_settings(good).sign(
        encode_image(PIXELS, PROVENANCE, EncodeOptions(1)).data, "image/png", PROVENANCE
    )
    assert read_credentials(data, ROOT).state == "Trusted"
    assert oct(files["key"].stat().st_mode & 0o777) == "0o600"

    wrong_key = tmp_path / "other.key"
    wrong_key.write_bytes(development_credentials().key_pem)  # not the chain's key
    bad = ImageServiceSettings(**base, c2pa_key_file=wrong_key, c2pa_cert_file=files["chain"])
    with pytest.raises(SettingsError, match="cannot sign Content Credentials"):
        ContentCredentials.from_settings(bad)


def test_without_settings_a_development_key_signs_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signer = ContentCredentials.from_settings(ImageServiceSettings(triton_url="localhost:1"))
    data = signer.sign(
        encode_image(PIXELS, PROVENANCE, EncodeOptions(3)).data, "image/webp", PROVENANCE
    )
    assert read_credentials(data).state == "Valid"
    assert "throwaway development key" in caplog.text


def test_provenance_record_is_the_proto_in_the_manifest() -> None:
    report = read_credentials(signed(1), ROOT)
    assert report.provenance == {
        "synthetic": True,
        "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
        "generator": "genmedia/0.1.0",
        "model": "biggan",
        "model_version": "3",
        "seed": 11,
        "request_id": "req-1",
        "created_at": PROVENANCE.created_at.ToJsonString(),
    }
