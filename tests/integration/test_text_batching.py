"""In-flight batching through the real stack: outputs independent of the batch,
cancelled and expired streams leaving it, and the bounded queue's RESOURCE_EXHAUSTED."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest

from genmedia.v1 import text_generation_pb2 as pb
from genmedia.v1 import text_generation_pb2_grpc as pb_grpc
from services.common.registry import GATEWAY
from services.launcher.stack import Stack
from tests.integration.conftest import channel_to, metric_value, running_stack, scrape, weights_dir

pytestmark = pytest.mark.integration

LONG = 1000


@dataclass
class Streamed:
    text: str
    started: float
    ended: float
    finish_reason: int


def stream(stub: pb_grpc.TextGenerationServiceStub, request: pb.GenerateTextRequest) -> Streamed:
    started = time.monotonic()
    chunks = list(stub.StreamText(request, timeout=120))
    text = "".join(c.text for c in chunks)
    return Streamed(text, started, time.monotonic(), chunks[-1].finish_reason)


def model_metric(stack: Stack, name: str) -> float:
    return metric_value(scrape(stack.triton.metrics_url), name, model="gpt2")


def finished(stack: Stack, reason: str) -> float:
    url = f"http://127.0.0.1:{stack.ports.processes['text-generation'].metrics}/metrics"
    return metric_value(scrape(url), "genmedia_text_finished_total", reason=reason)


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> float:
    """Seconds until `condition` held; fails after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def text(gateway: grpc.Channel) -> pb_grpc.TextGenerationServiceStub:
    return pb_grpc.TextGenerationServiceStub(gateway)


def test_a_request_streams_the_same_text_alone_and_in_a_busy_batch(stack, text) -> None:
    target = pb.GenerateTextRequest(
        prompt="Synthetic media must be labelled",
        max_new_tokens=48,
        seed=11,
        temperature=0.9,
        top_k=40,
        top_p=0.95,
        repetition_penalty=1.2,
    )
    alone = stream(text, target)
    others = [
        pb.GenerateTextRequest(
            prompt=f"Other caller number {n} asks about",
            max_new_tokens=150,
            seed=n,
            temperature=[0.0, 0.7, 1.3][n % 3],
            top_k=[0, 5, 50][n % 3],
            repetition_penalty=[1.0, 1.5][n % 2],
        )
        for n in range(10)
    ]
    with ThreadPoolExecutor(len(others) + 1) as pool:
        busy = [pool.submit(stream, text, other) for other in others]
        wait_for(lambda: model_metric(stack, "genmedia_model_running_sequences") >= 5)
        loaded = pool.submit(stream, text, target).result()
        results = [future.result() for future in busy]

    assert loaded.text == alone.text and loaded.finish_reason == alone.finish_reason
    overlapping = [r for r in results if r.started < loaded.ended and r.ended > loaded.started]
    assert len(overlapping) >= 5, "the target did not share the batch with the others"


@pytest.fixture
def long_streams(text) -> Iterator[Callable[[int], grpc.Future]]:
    """Starts long StreamText calls through the gateway; cancels what is left at the end."""
    calls = []

    def start(seed: int) -> grpc.Future:
        request = pb.GenerateTextRequest(
            prompt="A long story:", max_new_tokens=LONG, seed=seed, temperature=0
        )
        call = text.StreamText(request, timeout=120)
        calls.append(call)
        return call

    yield start
    for call in calls:
        call.cancel()


def test_a_cancelled_stream_leaves_the_batch_while_the_others_go_on(stack, long_streams) -> None:
    wait_for(lambda: model_metric(stack, "genmedia_model_running_sequences") == 0)
    cancelled_before = model_metric(stack, "genmedia_model_requests_cancelled_total")
    finished_before = finished(stack, "cancelled")
    keeps, leaves = long_streams(1), long_streams(2)
    next(keeps), next(leaves), next(leaves)
    wait_for(lambda: model_metric(stack, "genmedia_model_running_sequences") == 2)

    leaves.cancel()
    left_after = wait_for(lambda: model_metric(stack, "genmedia_model_running_sequences") == 1)

    # The other stream still receives tokens after the cancelled one left.
    received = threading.Event()
    reader = threading.Thread(target=lambda: (next(keeps), next(keeps), received.set()))
    reader.start()
    assert received.wait(10), "the remaining stream stopped too"
    assert left_after < 2.0, f"the cancelled sequence stayed {left_after:.2f} s in the batch"
    # The counter is updated apart from the gauge: give it the same time.
    wait_for(
        lambda: (
            model_metric(stack, "genmedia_model_requests_cancelled_total") == cancelled_before + 1
        ),
        2.0,
    )
    assert model_metric(stack, "genmedia_model_requests_cancelled_total") == cancelled_before + 1
    wait_for(lambda: finished(stack, "cancelled") == finished_before + 1)


def test_an_expired_stream_leaves_the_batch(stack, text) -> None:
    wait_for(lambda: model_metric(stack, "genmedia_model_running_sequences") == 0)
    cancelled_before = model_metric(stack, "genmedia_model_requests_cancelled_total")
    request = pb.GenerateTextRequest(prompt="Endless:", max_new_tokens=LONG, seed=4, temperature=0)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        for _ in text.StreamText(request, timeout=0.4):
            pass
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0
    wait_for(lambda: model_metric(stack, "genmedia_model_running_sequences") == 0, 2.0)
    # The counter is updated apart from the gauge: give it the same time.
    wait_for(
        lambda: (
            model_metric(stack, "genmedia_model_requests_cancelled_total") == cancelled_before + 1
        ),
        2.0,
    )
    assert model_metric(stack, "genmedia_model_requests_cancelled_total") == cancelled_before + 1


@pytest.fixture(scope="module")
def one_slot_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose gpt2 runs one sequence at a time with one queue place."""
    parameters = {"gpt2": {"max_sequences": "1", "max_queued_requests": "1"}}
    with running_stack(
        weights_dir(), tmp_path_factory.mktemp("one-slot"), model_parameters=parameters
    ) as running:
        yield running


def test_beyond_the_slots_requests_queue_and_beyond_the_queue_get_resource_exhausted(
    one_slot_stack: Stack,
) -> None:
    with channel_to(one_slot_stack, GATEWAY) as channel:
        stub = pb_grpc.TextGenerationServiceStub(channel)
        running = stub.StreamText(
            pb.GenerateTextRequest(prompt="First:", max_new_tokens=LONG, seed=1, temperature=0),
            timeout=120,
        )
        next(running)
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(
                stub.GenerateText,
                pb.GenerateTextRequest(prompt="Second:", max_new_tokens=8, seed=2),
                timeout=120,
            )
            wait_for(lambda: model_metric(one_slot_stack, "genmedia_model_queued_requests") == 1)

            with pytest.raises(grpc.RpcError) as error:
                stub.GenerateText(pb.GenerateTextRequest(prompt="Third:", seed=3), timeout=30)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_sequences 1" in error.value.details()
            assert "max_queued_requests 1" in error.value.details()
            assert "retry later" in error.value.details()
            rejected = model_metric(one_slot_stack, "genmedia_model_requests_rejected_total")
            assert rejected == 1

            running.cancel()  # frees the slot: the queued request runs and completes
            completed = queued.result(timeout=60)
        assert completed.usage.generated_tokens >= 1
