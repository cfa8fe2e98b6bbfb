"""A failed decode step, on a stack of its own: gpt2's test-only ``test_fail_step`` makes its
decode loop's step ``FAIL_AT_STEP`` raise once. Every stream, running or queued, then ends
with a status at once (INTERNAL, not a hang until its deadline), the failure is counted, and
the model serves the next request: the loop started again and gpt2 stayed ready."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest

from genmedia.v1 import text_generation_pb2 as pb
from genmedia.v1 import text_generation_pb2_grpc as pb_grpc
from services.common.registry import TEXT_GENERATION
from services.launcher.stack import Stack
from tests.integration.conftest import (
    TEST_STACK_ENV,
    channel_to,
    metric_samples,
    running_stack,
    scrape,
    weights_dir,
)

pytestmark = pytest.mark.integration

# Late enough for every stream to have arrived (a step takes milliseconds), and far fewer
# than the tokens each asks for: the step fails with two running and the rest queued. (The
# test weights' model may sample end-of-text early: such a stream ends OK before the failure
# and a queued one takes its place.)
FAIL_AT_STEP = 200
MAX_NEW_TOKENS = 900
RUNNING = 2
STREAMS = 6
ENDED_WITHIN_S = 1.0
DEADLINE_S = 60.0
LOOP_FAILURES = "genmedia_model_loop_failures_total"


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        weights_dir(),
        tmp_path_factory.mktemp("loop-faults"),
        extra_env=TEST_STACK_ENV,
        model_parameters={
            "gpt2": {"test_fail_step": str(FAIL_AT_STEP), "max_sequences": str(RUNNING)}
        },
    ) as running:
        yield running


@dataclass
class Outcome:
    code: grpc.StatusCode
    messages: int
    last_message_at: float
    ended_at: float


def stream(stub: pb_grpc.TextGenerationServiceStub, seed: int) -> Outcome:
    request = pb.GenerateTextRequest(
        prompt="A stream that meets a failing step", max_new_tokens=MAX_NEW_TOKENS, seed=seed
    )
    messages, last = 0, time.monotonic()
    code = grpc.StatusCode.OK
    try:
        for _ in stub.StreamText(request, timeout=DEADLINE_S):
            messages, last = messages + 1, time.monotonic()
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
    return Outcome(code, messages, last, time.monotonic())


def loop_failures(stack: Stack) -> list[float]:
    """The model's failure counter: one sample when the series exists."""
    return metric_samples(scrape(stack.triton.metrics_url), LOOP_FAILURES, model="gpt2")


def test_a_failed_decode_step_ends_every_stream_at_once_and_the_model_serves_on(
    own_stack: Stack,
) -> None:
    assert loop_failures(own_stack) == [0.0]  # the series is there before any failure
    with channel_to(own_stack, TEXT_GENERATION) as channel:
        stub = pb_grpc.TextGenerationServiceStub(channel)
        warm_up = pb.GenerateTextRequest(prompt="Warm up", max_new_tokens=2, seed=1)
        stub.GenerateText(warm_up, timeout=30)  # one decode step; caches filled
        with ThreadPoolExecutor(STREAMS) as pool:
            outcomes = list(pool.map(lambda seed: stream(stub, seed), range(STREAMS)))

        failed = [o for o in outcomes if o.code == grpc.StatusCode.INTERNAL]
        finished = [o for o in outcomes if o.code == grpc.StatusCode.OK]
        assert len(failed) + len(finished) == STREAMS, outcomes
        failed_from = min(o.ended_at for o in failed)
        # Only end-of-text ends a stream OK here, and only before the failure.
        assert all(o.ended_at <= failed_from for o in finished), outcomes
        assert any(o.messages for o in failed) and any(not o.messages for o in failed), outcomes
        for outcome in failed:
            # A running stream ended right after its last tokens, not at its deadline.
            if outcome.messages:
                assert outcome.ended_at - outcome.last_message_at < ENDED_WITHIN_S, outcome
        ends = [o.ended_at for o in failed]  # the queued ones with them
        assert max(ends) - failed_from < ENDED_WITHIN_S, outcomes
        assert loop_failures(own_stack) == [1.0]

        later = stub.GenerateText(
            pb.GenerateTextRequest(prompt="And then", max_new_tokens=8, seed=1), timeout=30
        )
        assert later.usage.generated_tokens >= 1
    print(
        f"{len(failed)} streams (running and queued) ended INTERNAL within "
        f"{max(ends) - failed_from:.3f} s of each other, {len(finished)} had ended at "
        f"end-of-text before; messages before the failure: {[o.messages for o in outcomes]}"
    )
