"""ProvenanceService in process: who gets the figures, the open limits, hostile files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from genmedia.v1 import provenance_pb2
from genmedia_shared.paths import REPO_ROOT
from genmedia_shared.text_watermark import DEVELOPMENT_KEY
from services.common import image_watermark
from services.common.errors import ResourceExhausted, Unauthenticated
from services.gateway.auth import ApiKeys, OpenAccess
from services.gateway.keys import hash_key
from services.gateway.open_service import OpenLimits, OpenServiceLimiter
from services.gateway.provenance import (
    FIXED_COST_BYTES,
    MIN_TOKENS_SCORED,
    ProvenanceServicer,
    TextVerifier,
    verification_cost,
)
from services.gateway.quotas import Quotas
from tests.fuzz.bad_inputs import encoded, hostile_manifest

KEY = "gm_test-key"
TOKENIZER_DIR = REPO_ROOT / "models" / "demo" / "gpt2"
TEXT = (
    "Deep fakes are cheap to make at scale, so provenance matters more every year. "
    "A photograph used to be evidence; now a caption has to say where it came from, who "
    "signed it and whether anything was changed since."
)


class Context:
    """The parts of grpc.aio.ServicerContext the servicer reads."""

    def __init__(self, key: str | None = None, peer: str = "ipv4:10.1.2.3:4567") -> None:
        self._metadata = () if key is None else (("authorization", f"Bearer {key}"),)
        self._peer = peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None  # the caller set no deadline


def servicer(tmp_path: Path, open_auth: bool = False, rate: float = 100) -> ProvenanceServicer:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"name": "alice", "sha256": hash_key(KEY)}]}))
    return ProvenanceServicer(
        None,
        OpenAccess() if open_auth else ApiKeys(keys),
        Quotas(max_in_flight=10, overload_retry_after_s=1),
        OpenServiceLimiter(OpenLimits(rate_per_s=rate, burst=2, max_concurrent=4)),
        TextVerifier(TOKENIZER_DIR, DEVELOPMENT_KEY, gamma=0.25, z_threshold=4.0),
        image_watermark.DEVELOPMENT_KEY,
    )


def marked_png(side: int = 256) -> bytes:
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encoded(
        Image.fromarray(image_watermark.embed(pixels, image_watermark.DEVELOPMENT_KEY)), "PNG"
    )


async def test_an_anonymous_caller_gets_the_verdict_without_the_detectors_figures(
    tmp_path: Path,
) -> None:
    checker = servicer(tmp_path)
    request = provenance_pb2.VerifyImageRequest(data=marked_png())
    anonymous = await checker.VerifyImage(request, Context())
    assert anonymous.verdict == provenance_pb2.VERDICT_SYNTHETIC
    assert anonymous.detail_withheld and not anonymous.HasField("watermark")
    assert "score" not in anonymous.explanation and "watermark is there" in anonymous.explanation
    keyed = await checker.VerifyImage(request, Context(KEY))
    assert not keyed.detail_withheld
    assert keyed.watermark.detected and keyed.watermark.score >= image_watermark.THRESHOLD
    assert f"{keyed.watermark.score:.2f}" in keyed.explanation
    with pytest.raises(Unauthenticated):
        await checker.VerifyImage(request, Context("gm_wrong"))


async def test_an_anonymous_text_check_gives_no_counts_and_skips_short_texts(
    tmp_path: Path,
) -> None:
    checker = servicer(tmp_path)
    short = await checker.VerifyText(
        provenance_pb2.VerifyTextRequest(text="Hello there"), Context()
    )
    assert short.verdict == provenance_pb2.VERDICT_NO_EVIDENCE and short.detail_withheld
    assert (
        "too short" in short.explanation and f"{MIN_TOKENS_SCORED + 1} tokens" in short.explanation
    )
    assert not short.HasField("watermark")
    long = await checker.VerifyText(provenance_pb2.VerifyTextRequest(text=TEXT), Context())
    assert long.detail_withheld and not long.HasField("watermark")
    assert "z =" not in long.explanation
    keyed = await checker.VerifyText(provenance_pb2.VerifyTextRequest(text=TEXT), Context(KEY))
    assert not keyed.detail_withheld and keyed.watermark.tokens_scored > MIN_TOKENS_SCORED
    assert "z =" in keyed.explanation


async def test_open_mode_callers_get_the_figures(tmp_path: Path) -> None:
    answer = await servicer(tmp_path, open_auth=True).VerifyText(
        provenance_pb2.VerifyTextRequest(text=TEXT), Context()
    )
    assert not answer.detail_withheld and answer.HasField("watermark")


async def test_anonymous_callers_are_rate_limited_by_address_and_keyed_ones_are_not(
    tmp_path: Path,
) -> None:
    checker = servicer(tmp_path, rate=0.001)  # a burst of 2, then nothing for a long time
    request = provenance_pb2.VerifyTextRequest(text=TEXT)
    for _ in range(2):
        await checker.VerifyText(request, Context(peer="ipv4:10.9.9.9:1"))
    with pytest.raises(ResourceExhausted) as refused:
        await checker.VerifyText(request, Context(peer="ipv4:10.9.9.9:2"))
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry-after-ms" in dict(refused.value.metadata)
    await checker.VerifyText(request, Context(peer="ipv4:10.9.9.10:1"))  # another address
    for _ in range(3):
        await checker.VerifyText(request, Context(KEY, peer="ipv4:10.9.9.9:3"))


async def test_a_forged_genmedia_record_is_tampered_in_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = await servicer(tmp_path).VerifyImage(
        provenance_pb2.VerifyImageRequest(data=hostile_manifest()), Context(KEY)
    )
    assert answer.verdict == provenance_pb2.VERDICT_TAMPERED
    assert list(answer.content_credentials.failures) == ["genmedia.provenance.malformed"]
    lines = [r for r in caplog.records if "provenance" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None


def test_a_check_reserves_what_its_decode_takes() -> None:
    png = encoded(Image.new("RGB", (1000, 500)), "PNG")
    webp = encoded(Image.new("RGB", (1000, 500)), "WEBP")
    assert verification_cost(png) == FIXED_COST_BYTES + 500_000 * 4
    assert verification_cost(webp) == FIXED_COST_BYTES + 500_000 * 16
    assert verification_cost(b"\x89PNG not really") == FIXED_COST_BYTES
