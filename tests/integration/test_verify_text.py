"""Text from the served gpt2 carries the watermark; ProvenanceService.VerifyText finds it
through the gateway, and does not find it in text the model did not write."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from genmedia.v1 import provenance_pb2, provenance_pb2_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from genmedia_shared.paths import REPO_ROOT
from services.common.registry import GATEWAY
from services.launcher.stack import Stack

pytestmark = pytest.mark.integration

HUMAN_TEXT = (
    "The gateway is the only public entry. It checks API keys, applies quotas and sheds "
    "load, then forwards each call to a healthy replica of the service that owns it. When "
    "a replica fails before answering, the call is retried on another one, within a budget "
    "so that retries cannot multiply an outage. Every process reports its own metrics, and "
    "Prometheus scrapes them all, Triton's too."
)


def verify_text(gateway: grpc.Channel, text: str) -> provenance_pb2.VerifyTextResponse:
    stub = provenance_pb2_grpc.ProvenanceServiceStub(gateway)
    return stub.VerifyText(provenance_pb2.VerifyTextRequest(text=text), timeout=30)


def generated(gateway: grpc.Channel, tokens: int, seed: int) -> str:
    """At least ``tokens`` generated tokens: the test checkpoint often ends a text early
    (end-of-text), so several generations are joined, as a copied text might be."""
    stub = text_grpc.TextGenerationServiceStub(gateway)
    parts, total = [], 0
    while total < tokens:
        request = text_pb.GenerateTextRequest(
            prompt="Once upon a time", max_new_tokens=tokens, seed=seed, temperature=1.0
        )
        reply = stub.GenerateText(request, timeout=60)
        parts.append(reply.text)
        total += reply.usage.generated_tokens
        seed += 1000
    return "".join(parts)


def test_generated_text_is_found_and_human_text_is_not(gateway: grpc.Channel) -> None:
    for seed in (1, 2, 3):
        found = verify_text(gateway, generated(gateway, 200, seed))
        assert found.verdict == provenance_pb2.VERDICT_SYNTHETIC, found.explanation
        assert found.watermark.detected and found.watermark.z_score >= 4
        assert found.watermark.tokens_scored >= 100
        assert found.watermark.expected_green_fraction == 0.25

    human = verify_text(gateway, HUMAN_TEXT)
    assert human.verdict == provenance_pb2.VERDICT_NO_EVIDENCE
    assert not human.watermark.detected and human.watermark.z_score < 4
    assert "not proof" in human.explanation

    short = verify_text(gateway, "Hello there")
    assert short.verdict == provenance_pb2.VERDICT_NO_EVIDENCE
    assert "too short" in short.explanation


def test_bad_text_requests_are_invalid_argument(gateway: grpc.Channel) -> None:
    for text, message in (("   ", "text is empty"), ("x" * 100_001, "at most 100000")):
        with pytest.raises(grpc.RpcError) as error:
            verify_text(gateway, text)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.value.details()


def test_cli_verify_text(gateway: grpc.Channel, stack: Stack) -> None:
    text = generated(gateway, 120, seed=9)
    done = subprocess.run(
        [sys.executable, "-m", "services.client", "--target", stack.ports.address(GATEWAY),
         "verify", "--text", text],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("text: SYNTHETIC: genmedia's text watermark is there")
    assert "tokens green (expected 25%)" in done.stdout
