"""Cancelling a stream stops the work in Triton, proven with the model's own counters."""

import time

import grpc
import pytest

from genmedia.v1 import text_generation_pb2 as pb
from genmedia.v1 import text_generation_pb2_grpc as pb_grpc
from tests.integration.conftest import metric_value, scrape

pytestmark = pytest.mark.integration

MAX_NEW_TOKENS = 1000


def model_counters(stack) -> tuple[float, float]:
    text = scrape(stack.triton.metrics_url)
    return (
        metric_value(text, "genmedia_model_tokens_generated_total", model="gpt2"),
        metric_value(text, "genmedia_model_requests_cancelled_total", model="gpt2"),
    )


def wait_until_stable(stack, timeout_s: float = 10.0) -> tuple[float, float]:
    previous = model_counters(stack)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = model_counters(stack)
        if current == previous:
            return current
        previous = current
    raise AssertionError("Triton kept generating tokens: the cancelled stream was not stopped")


def test_cancelling_a_stream_through_the_gateway_stops_generation_in_triton(stack, gateway) -> None:
    tokens_before, cancelled_before = wait_until_stable(stack)
    stub = pb_grpc.TextGenerationServiceStub(gateway)
    request = pb.GenerateTextRequest(
        prompt="A long story:", max_new_tokens=MAX_NEW_TOKENS, seed=5, temperature=1.0
    )
    call = stub.StreamText(request, timeout=120)
    for received, _ in enumerate(call, start=1):
        if received == 3:
            break
    call.cancel()
    tokens_after, cancelled_after = wait_until_stable(stack)

    assert cancelled_after == cancelled_before + 1
    generated = tokens_after - tokens_before
    assert 3 <= generated < MAX_NEW_TOKENS / 2, f"{generated} tokens generated after cancel"


def test_deadline_passing_cancels_the_stream_in_triton(stack, gateway) -> None:
    _, cancelled_before = wait_until_stable(stack)
    stub = pb_grpc.TextGenerationServiceStub(gateway)
    # Seed 3 runs the full 1000 tokens with the test weights (about 1.6 s here).
    request = pb.GenerateTextRequest(
        prompt="Another long story:", max_new_tokens=MAX_NEW_TOKENS, seed=3
    )
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        for _ in stub.StreamText(request, timeout=0.5):
            pass
    elapsed = time.monotonic() - started
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.0, f"DEADLINE_EXCEEDED came {elapsed:.2f} s after a 0.5 s deadline"
    _, cancelled_after = wait_until_stable(stack)
    assert cancelled_after == cancelled_before + 1
