"""The continuous batcher in process: joining and leaving at step boundaries, limits,
cancellation within one step, and outputs independent of what shares the batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from transformers import GPT2LMHeadModel

from genmedia_models.fault_injection import InjectedFault, InjectedStepFailure
from genmedia_models.gpt2 import batching as continuous_batching
from genmedia_models.gpt2.batching import ContinuousBatcher, generate_one
from genmedia_models.gpt2.loading import load_gpt2
from genmedia_models.gpt2.sampling import SamplingParams
from genmedia_models.gpt2.types import (
    BatchLimits,
    BatchState,
    FinishReason,
    GenerationRequest,
    QueueFull,
)
from genmedia_models.runtime import InvalidInputError


class ListSink:
    """Collects tokens; `cancel_after` tokens in, it reports itself cancelled."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.tokens: list[int] = []
        self.reason: FinishReason | None = None
        self.error: BaseException | None = None
        self.cancel_after = cancel_after
        self.done = threading.Event()

    def emit(self, tokens: list[int]) -> None:
        assert self.reason is None, "token after finish"
        self.tokens.extend(tokens)

    def finish(self, reason: FinishReason, error: BaseException | None = None) -> None:
        assert self.reason is None, "finished twice"
        self.reason, self.error = reason, error
        self.done.set()

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.tokens) >= self.cancel_after


@pytest.fixture(scope="module")
def model(weights_dir: Path) -> GPT2LMHeadModel:
    return load_gpt2(weights_dir / "gpt2")


def batcher(model: GPT2LMHeadModel, **limits: int) -> ContinuousBatcher:
    return ContinuousBatcher(model, BatchLimits(**limits), stop_token_ids=frozenset())


def request(prompt: list[int], sink: ListSink, **params: float) -> GenerationRequest:
    values: dict = {"max_new_tokens": 20, "seed": 1, **params}
    return GenerationRequest(prompt, SamplingParams(**values), sink)


def run_until_idle(engine: ContinuousBatcher, limit: int = 10_000) -> None:
    for _ in range(limit):
        if not (engine.state.running or engine.state.queued):
            return
        engine.step()
    raise AssertionError("the batcher never went idle")


VARIED = [
    {"temperature": 0.0},
    {"temperature": 0.7, "top_k": 5},
    {"temperature": 1.3, "top_p": 0.8},
    {"temperature": 1.0, "repetition_penalty": 1.5},
    {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.1},
]


@pytest.mark.parametrize("params", VARIED)
def test_a_request_gets_the_same_tokens_alone_and_in_a_busy_batch(
    model: GPT2LMHeadModel, params: dict
) -> None:
    target_prompt = [5, 17, 42, 99, 300]
    alone = list(generate_one(model, target_prompt, SamplingParams(60, seed=9, **params)))

    engine = batcher(model, max_sequences=16)
    others = [ListSink() for _ in range(15)]
    for index, sink in enumerate(others[:8]):
        other = VARIED[index % len(VARIED)]
        # One long prompt makes the batch attend over longer spans than the target alone.
        prompt = [index + 1] * (150 if index == 0 else index + 2)
        engine.submit(request(prompt, sink, max_new_tokens=30 + index, **other))
    engine.step()
    engine.step()  # the target joins a batch already decoding
    target = ListSink()
    engine.submit(request(target_prompt, target, max_new_tokens=60, seed=9, **params))
    engine.step()
    for index, sink in enumerate(others[8:]):  # more join and leave while it runs
        engine.submit(request([7, index], sink, max_new_tokens=5 + index, seed=index))
    run_until_idle(engine)

    assert target.reason is FinishReason.LENGTH
    assert target.tokens == alone
    assert [sink.reason for sink in others] == [FinishReason.LENGTH] * 15, [s.error for s in others]


def test_a_new_request_joins_at_the_next_step(model: GPT2LMHeadModel) -> None:
    engine = batcher(model)
    first, second = ListSink(), ListSink()
    engine.submit(request([1, 2, 3], first, max_new_tokens=50))
    for _ in range(5):
        engine.step()
    engine.submit(request([4, 5], second, max_new_tokens=50))
    engine.step()

    # One step admitted the second request (its first token comes from its
    # prompt pass) and decoded both together.
    assert len(second.tokens) == 2
    assert len(first.tokens) == 7
    assert engine.state.running == 2


def test_a_finished_sequence_frees_its_slot_for_the_next_request_at_once(
    model: GPT2LMHeadModel,
) -> None:
    engine = batcher(model, max_sequences=2, max_queued=4)
    short, long, waiting = ListSink(), ListSink(), ListSink()
    engine.submit(request([1], short, max_new_tokens=3))
    engine.submit(request([2], long, max_new_tokens=40))
    engine.submit(request([3], waiting, max_new_tokens=5))
    engine.step()  # prompt passes (first tokens) and one decode step
    assert len(short.tokens) == 2 and waiting.tokens == [] and engine.state.queued == 1

    engine.step()  # `short` gets its third token and leaves
    assert short.reason is FinishReason.LENGTH and len(short.tokens) == 3
    assert engine.state.running == 1
    engine.step()  # the next step admits the waiting request
    assert len(waiting.tokens) == 2 and engine.state.queued == 0


def test_a_cancelled_sequence_leaves_the_batch_within_one_step(model: GPT2LMHeadModel) -> None:
    engine = batcher(model, max_sequences=2, max_queued=4)
    cancelled, other, waiting = ListSink(cancel_after=4), ListSink(), ListSink()
    engine.submit(request([1], cancelled, max_new_tokens=500))
    engine.submit(request([2], other, max_new_tokens=500))
    engine.submit(request([3], waiting, max_new_tokens=500))
    for _ in range(3):
        engine.step()
    assert len(cancelled.tokens) == 4 and cancelled.reason is None  # cancelled now

    engine.step()
    assert cancelled.reason is FinishReason.CANCELLED
    assert len(cancelled.tokens) == 4  # no token computed after the cancellation
    assert len(waiting.tokens) == 2  # its slot went to the waiting request in that same step
    assert len(other.tokens) == 5


def test_a_queued_request_that_is_cancelled_leaves_the_queue(
    model: GPT2LMHeadModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(continuous_batching, "QUEUED_CANCEL_CHECK_S", 0.0)
    engine = batcher(model, max_sequences=1, max_queued=1)
    running, queued = ListSink(), ListSink(cancel_after=0)
    engine.submit(request([1], running, max_new_tokens=100))
    engine.submit(request([2], queued))
    engine.step()
    assert queued.reason is FinishReason.CANCELLED and queued.tokens == []
    assert engine.state.queued == 0


def test_requests_beyond_the_slots_and_the_queue_are_refused(model: GPT2LMHeadModel) -> None:
    engine = batcher(model, max_sequences=2, max_queued=1)
    for index in range(2):
        engine.submit(request([1], ListSink(), max_new_tokens=100, seed=index))
    engine.step()  # both generate
    engine.submit(request([2], ListSink()))  # waits
    with pytest.raises(QueueFull, match=r"2 sequences are generating \(max_sequences 2\)"):
        engine.submit(request([3], ListSink()))


def test_requests_wait_for_token_budget_in_arrival_order(model: GPT2LMHeadModel) -> None:
    # One full context (1024 tokens) is the whole budget.
    engine = batcher(model, max_sequences=4, max_total_tokens=1024)
    first, second, third = ListSink(), ListSink(), ListSink()
    engine.submit(request([1] * 500, first, max_new_tokens=100))  # reserves 600
    engine.submit(request([2] * 500, second, max_new_tokens=100))  # 600 more: does not fit
    engine.submit(request([3], third, max_new_tokens=10))  # would fit, but waits its turn
    engine.step()
    assert engine.state == continuous_batching.BatchState(running=1, queued=2)
    run_until_idle(engine)
    assert [len(s.tokens) for s in (first, second, third)] == [100, 100, 10]


def test_end_of_text_ends_a_sequence_with_eos(model: GPT2LMHeadModel) -> None:
    greedy = list(generate_one(model, [5, 6, 7], SamplingParams(24, temperature=0.0)))
    engine = ContinuousBatcher(model, BatchLimits(), stop_token_ids={greedy[3]})
    sink = ListSink()
    engine.submit(request([5, 6, 7], sink, max_new_tokens=24, temperature=0.0))
    run_until_idle(engine)
    assert sink.reason is FinishReason.EOS
    assert sink.tokens == greedy[: greedy.index(greedy[3]) + 1]


def test_bad_requests_are_refused_on_submit(model: GPT2LMHeadModel) -> None:
    engine = batcher(model)
    with pytest.raises(InvalidInputError, match="the limit is 1023"):
        engine.submit(request([1] * 1024, ListSink()))
    with pytest.raises(InvalidInputError, match="top_p"):
        engine.submit(request([1], ListSink(), top_p=0.0))
    assert engine.state.queued == 0


def test_limits_smaller_than_one_context_are_a_configuration_error(
    model: GPT2LMHeadModel,
) -> None:
    with pytest.raises(ValueError, match="at least one full context of 1024"):
        batcher(model, max_total_tokens=1000)


def test_the_loop_thread_serves_requests_and_close_ends_the_rest(model: GPT2LMHeadModel) -> None:
    engine = batcher(model, max_sequences=1, max_queued=2)
    engine.start()
    quick = ListSink()
    engine.submit(request([1, 2], quick, max_new_tokens=8))
    assert quick.done.wait(30) and quick.reason is FinishReason.LENGTH
    endless, queued = ListSink(), ListSink()
    engine.submit(request([1], endless, max_new_tokens=1000))
    engine.submit(request([2], queued, max_new_tokens=1000))
    engine.close()
    assert endless.reason is FinishReason.UNLOADING and len(endless.tokens) < 1000
    assert queued.reason is FinishReason.UNLOADING
    with pytest.raises(QueueFull, match="unloading"):
        engine.submit(request([3], ListSink()))


def test_a_sink_that_fails_ends_only_its_own_sequence(model: GPT2LMHeadModel) -> None:
    class BrokenSink(ListSink):
        def emit(self, tokens: list[int]) -> None:
            raise ConnectionError("client gone")

    engine = batcher(model)
    broken, healthy = BrokenSink(), ListSink()
    engine.submit(request([1], broken))
    engine.submit(request([2], healthy))
    run_until_idle(engine)
    assert broken.reason is FinishReason.FAILED and isinstance(broken.error, ConnectionError)
    assert healthy.reason is FinishReason.LENGTH and len(healthy.tokens) == 20


def test_a_send_that_fails_because_the_caller_left_counts_as_cancelled(
    model: GPT2LMHeadModel,
) -> None:
    class GoneSink(ListSink):
        """Its caller leaves as the first token is sent: the send fails, and only then does
        asking say so (as a sink that asks the server now and then)."""

        gone = False

        def emit(self, tokens: list[int]) -> None:
            self.gone = True
            raise ConnectionError("stream closed")

        def cancelled(self) -> bool:
            return self.gone

    engine = batcher(model)
    gone = GoneSink()
    engine.submit(request([1], gone))
    run_until_idle(engine)
    assert gone.reason is FinishReason.CANCELLED and gone.error is None


# -- a failing step ------------------------------------------------------------------------

# What the fault tests promise: every stream hears of a failed step within this.
FAILED_WITHIN_S = 1.0


class FailingStateCallback:
    """Raises once, at its ``fail_at``-th call: a state callback that breaks."""

    def __init__(self, fail_at: int) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.failed_at: float | None = None

    def __call__(self, state: BatchState) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            self.failed_at = time.monotonic()
            raise RuntimeError("state callback broke")


@pytest.mark.parametrize("source", ["decoder", "state callback"])
def test_a_failed_step_ends_every_stream_failed_at_once_and_the_loop_serves_on(
    model: GPT2LMHeadModel, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    fault = InjectedStepFailure(at_step=3)
    failed_at: list[float] = []

    def fail_step(step: int) -> None:
        if step >= fault.at_step and not failed_at:
            failed_at.append(time.monotonic())
        fault.check(step)

    broken_state = FailingStateCallback(fail_at=1)  # after the first step: 2 running, 2 queued
    failures: list[int] = []
    engine = ContinuousBatcher(
        model,
        BatchLimits(max_sequences=2),
        on_state=broken_state if source == "state callback" else None,
        on_loop_failure=lambda: failures.append(1),
        fault_hook=fail_step if source == "decoder" else None,
    )
    sinks = [ListSink() for _ in range(4)]  # two run, two wait in the queue
    for sink in sinks:
        engine.submit(request([1, 2, 3], sink, max_new_tokens=500))
    engine.start()
    try:
        for sink in sinks:
            assert sink.done.wait(5), "a stream never ended"
        ended_at = time.monotonic()
        started = failed_at[0] if failed_at else broken_state.failed_at
        assert started is not None and ended_at - started < FAILED_WITHIN_S
        assert [sink.reason for sink in sinks] == [FinishReason.FAILED] * 4
        expected = InjectedFault if source == "decoder" else RuntimeError
        assert all(isinstance(sink.error, expected) for sink in sinks)
        assert failures == [1] and engine.loop_failures == 1
        (logged,) = [r for r in caplog.records if "decode loop step failed" in r.getMessage()]
        assert logged.exc_info is not None and "2 running and 2 queued" in logged.getMessage()

        later = ListSink()  # the loop is still there, and starts from an empty batch
        engine.submit(request([4, 5, 6], later, max_new_tokens=5))
        assert later.done.wait(5), "the loop did not serve after the failure"
        assert later.reason is FinishReason.LENGTH and len(later.tokens) == 5
        assert engine.state == BatchState(0, 0)
    finally:
        engine.close()
