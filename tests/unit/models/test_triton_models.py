"""The repository's TritonPythonModels against a stand-in pb_utils (no Triton needed).

Checks the request/response plumbing: one response per request, caller errors
as TritonErrors, batching and splitting, streaming, cancellation, metrics.
The real server runs them in tests/integration.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

BuildModel = Callable[[str, dict[str, Any]], Any]


def parameters(**values: str) -> dict[str, Any]:
    return {"parameters": {key: {"string_value": value} for key, value in values.items()}}


def biggan_request(
    pb_utils: types.ModuleType, truncations: list[float], classes: int = 1000
) -> Any:
    rows = len(truncations)
    class_vector = np.zeros((rows, classes), np.float32)
    class_vector[:, 0] = 1
    return pb_utils.InferenceRequest(
        z=np.random.default_rng(rows).standard_normal((rows, 128)).astype(np.float32) * 0.5,
        class_vector=class_vector,
        truncation=np.array(truncations, np.float32).reshape(-1, 1),
    )


def test_biggan_answers_every_request_of_a_batch_in_order(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    model = triton_model("biggan", parameters(weights_path="biggan"))
    requests = [
        biggan_request(pb_utils, [0.4, 1.0]),
        biggan_request(pb_utils, [0.5], classes=10),
        biggan_request(pb_utils, [1.5]),
        biggan_request(pb_utils, [0.4, 0.7, 0.4]),
    ]
    responses = model.execute(requests)

    assert len(responses) == 4
    assert [r.error is None for r in responses] == [True, False, False, True]
    assert "1000" in responses[1].error.message()
    assert responses[1].error.code() == pb_utils.TritonError.INVALID_ARG
    assert "truncation" in responses[2].error.message()
    assert responses[0].output("image").shape == (2, 128, 128, 3)
    assert responses[3].output("image").shape == (3, 128, 128, 3)
    assert responses[3].output("image").dtype == np.uint8
    # The batched result for a request equals that request run on its own.
    alone = model.execute([requests[3]])[0].output("image")
    assert np.abs(alone.astype(int) - responses[3].output("image").astype(int)).max() <= 1


@pytest.mark.parametrize("name", ["cyclegan_horse2zebra", "cyclegan_zebra2horse"])
def test_cyclegan_keeps_each_request_shape(
    pb_utils: types.ModuleType, triton_model: BuildModel, name: str
) -> None:
    model = triton_model(name, parameters(weights_path="cyclegan"))
    rng = np.random.default_rng(0)
    shapes = [(1, 32, 48, 3), (2, 64, 64, 3), (1, 30, 48, 3), (1, 32, 48, 3)]
    requests = [
        pb_utils.InferenceRequest(image=rng.integers(0, 256, shape, dtype=np.uint8))
        for shape in shapes
    ]
    responses = model.execute(requests)

    assert [r.error is None for r in responses] == [True, True, False, True]
    assert "multiples of 4" in responses[2].error.message()
    for shape, response in zip(shapes, responses, strict=True):
        if response.error is None:
            assert response.output("image").shape == shape
            assert response.output("image").dtype == np.uint8


def test_cyclegan_takes_its_direction_from_the_model_name(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    image = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    outputs = []
    for name in ("cyclegan_horse2zebra", "cyclegan_zebra2horse"):
        model = triton_model(name, parameters(weights_path="cyclegan"))
        assert model.direction == name.removeprefix("cyclegan_")
        outputs.append(model.execute([pb_utils.InferenceRequest(image=image)])[0].output("image"))
    assert not np.array_equal(*outputs)  # different checkpoints were loaded


@pytest.mark.parametrize(
    ("name", "weights"), [("biggan", "biggan"), ("cyclegan_zebra2horse", "cyclegan")]
)
def test_requests_whose_caller_left_are_answered_cancelled_and_counted(
    pb_utils: types.ModuleType, triton_model: BuildModel, name: str, weights: str
) -> None:
    model = triton_model(name, parameters(weights_path=weights))
    if name == "biggan":
        requests = [biggan_request(pb_utils, [0.5]) for _ in range(3)]
    else:
        image = np.zeros((1, 32, 32, 3), np.uint8)
        requests = [pb_utils.InferenceRequest(image=image) for _ in range(3)]
    requests[1].cancel_after_tokens = 0  # cancelled before the batch ran

    responses = model.execute(requests)

    assert [r.error is None for r in responses] == [True, False, True]
    assert responses[1].error.code() == pb_utils.TritonError.CANCELLED
    family = pb_utils.MetricFamily.created["genmedia_model_requests_cancelled_total"]
    assert {labels: m.value() for labels, m in family.metrics.items()} == {(("model", name),): 1.0}


@pytest.mark.parametrize(
    ("name", "weights"), [("biggan", "biggan"), ("cyclegan_horse2zebra", "cyclegan")]
)
def test_test_delay_holds_a_batch_until_its_callers_leave(
    pb_utils: types.ModuleType, triton_model: BuildModel, name: str, weights: str
) -> None:
    model = triton_model(name, parameters(weights_path=weights, test_delay_ms="300"))
    if name == "biggan":
        request = biggan_request(pb_utils, [0.5])
    else:
        request = pb_utils.InferenceRequest(image=np.zeros((1, 32, 32, 3), np.uint8))

    started = time.monotonic()
    assert model.execute([request])[0].error is None
    assert time.monotonic() - started >= 0.3

    request.cancel_after_tokens = 0
    started = time.monotonic()
    response = model.execute([request])[0]
    assert time.monotonic() - started < 0.2, "a cancelled batch waited out the delay"
    assert response.error.code() == pb_utils.TritonError.CANCELLED


def test_test_delay_must_be_a_sane_number_of_milliseconds(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    for value in ("-1", "soon", "1e9"):
        with pytest.raises(ValueError, match="test_delay_ms"):
            triton_model("biggan", parameters(weights_path="biggan", test_delay_ms=value))


GPT2_PARAMETERS = {
    "weights_path": "gpt2",
    "max_sequences": "2",
    "max_queued_requests": "1",
    "cancel_check_ms": "0",
}
GPT2_CONFIG = {"model_transaction_policy": {"decoupled": True}, **parameters(**GPT2_PARAMETERS)}


def gpt2_request(pb_utils: types.ModuleType, prompt: list[int], **overrides: float) -> Any:
    values = {"max_new_tokens": 12, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 3}
    values.update(overrides)
    optional = {}
    if "repetition_penalty" in values:  # an optional input
        optional["repetition_penalty"] = np.array([values["repetition_penalty"]], np.float32)
    if "single_response" in values:  # an optional input
        optional["single_response"] = np.array([values["single_response"]], np.bool_)
    return pb_utils.InferenceRequest(
        input_ids=np.array(prompt, np.int64),
        max_new_tokens=np.array([values["max_new_tokens"]], np.int32),
        temperature=np.array([values["temperature"]], np.float32),
        top_k=np.array([values["top_k"]], np.int32),
        top_p=np.array([values["top_p"]], np.float32),
        seed=np.array([values["seed"]], np.int64),
        **optional,
    )


def wait_closed(*requests: Any) -> None:
    for request in requests:
        assert request.sender.closed.wait(timeout=30), "no final response"


def counter(pb_utils: types.ModuleType, name: str) -> float:
    family = pb_utils.MetricFamily.created[name]
    return sum(metric.value() for metric in family.metrics.values())


def test_gpt2_streams_tokens_then_an_empty_final_response(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    model = triton_model("gpt2", GPT2_CONFIG)
    first, second = gpt2_request(pb_utils, [5, 6, 7]), gpt2_request(pb_utils, [5, 6, 7])
    assert model.execute([first, second]) is None
    wait_closed(first, second)

    tokens = first.sender.tokens()
    assert 1 <= len(tokens) <= 12
    assert tokens == second.sender.tokens()  # same seed, same tokens
    last_response, last_flags = first.sender.sent[-1]
    assert last_response is None and last_flags == pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    assert all(flags == 0 for _, flags in first.sender.sent[:-1])
    if len(tokens) < 12:  # stopped early: only on the eos token, sent last
        assert tokens[-1] == model.model.config.eos_token_id
    assert counter(pb_utils, "genmedia_model_tokens_generated_total") == 2 * len(tokens)


def test_gpt2_sends_every_token_in_the_final_response_when_asked(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    model = triton_model("gpt2", GPT2_CONFIG)
    streamed = gpt2_request(pb_utils, [5, 6, 7])
    whole = gpt2_request(pb_utils, [5, 6, 7], single_response=True)
    model.execute([streamed, whole])
    wait_closed(streamed, whole)
    assert whole.sender.tokens() == streamed.sender.tokens()  # the same tokens, one response
    ((response, flags),) = whole.sender.sent
    assert response is not None and flags == pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def test_gpt2_asks_whether_its_caller_cancelled_at_most_every_cancel_check_ms(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    every_step = triton_model("gpt2", GPT2_CONFIG)
    request = gpt2_request(pb_utils, [5, 6, 7], max_new_tokens=200)
    every_step.batcher.stop_token_ids = frozenset()
    every_step.execute([request])
    wait_closed(request)
    assert request.cancel_checks >= 199  # once a step
    spaced = triton_model(
        "gpt2", {**GPT2_CONFIG, **parameters(weights_path="gpt2", cancel_check_ms="1000")}
    )
    spaced.batcher.stop_token_ids = frozenset()
    request = gpt2_request(pb_utils, [5, 6, 7], max_new_tokens=200)
    started = time.monotonic()
    spaced.execute([request])
    wait_closed(request)
    assert request.cancel_checks <= 1 + (time.monotonic() - started)  # one a second at most


def test_gpt2_stops_when_the_client_cancels(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    model = triton_model("gpt2", GPT2_CONFIG)
    model.batcher.stop_token_ids = frozenset()  # make sure only cancellation can end it early
    request = gpt2_request(pb_utils, [5, 6, 7], max_new_tokens=1000)
    request.cancel_after_tokens = 4
    model.execute([request])
    wait_closed(request)

    # Tokens are sent while the next step runs: at most that one step's token
    # follows the fourth, after which the request left the batch.
    assert len(request.sender.tokens()) in (4, 5)
    assert request.sender.sent[-1] == (None, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    assert counter(pb_utils, "genmedia_model_requests_cancelled_total") == 1
    family = pb_utils.MetricFamily.created["genmedia_model_requests_cancelled_total"]
    assert list(family.metrics) == [(("model", "gpt2"),)]


@pytest.mark.parametrize(
    ("prompt", "overrides", "message"),
    [
        ([1] * 1024, {}, "the limit is 1023"),
        ([1] * 1000, {"max_new_tokens": 100}, "context window of 1024"),
        ([1, 2], {"top_p": 0.0}, "top_p"),
        ([1, 2], {"temperature": -1.0}, "temperature"),
        ([1, 2], {"repetition_penalty": 0.0}, "repetition_penalty"),
    ],
)
def test_gpt2_caller_errors_end_the_stream_with_a_triton_error(
    pb_utils: types.ModuleType,
    triton_model: BuildModel,
    prompt: list[int],
    overrides: dict[str, float],
    message: str,
) -> None:
    model = triton_model("gpt2", GPT2_CONFIG)
    request = gpt2_request(pb_utils, prompt, **overrides)
    model.execute([request])
    wait_closed(request)

    assert request.sender.tokens() == []
    assert len(request.sender.errors()) == 1 and message in request.sender.errors()[0]
    assert request.sender.sent[-1][1] == pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def test_gpt2_unload_ends_running_generations(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    model = triton_model("gpt2", GPT2_CONFIG)
    model.batcher.stop_token_ids = frozenset()
    request = gpt2_request(pb_utils, [5, 6, 7], max_new_tokens=1000)
    model.execute([request])
    deadline = time.monotonic() + 30
    while not request.sender.tokens() and time.monotonic() < deadline:
        time.sleep(0.01)
    model.finalize()

    assert request.sender.closed.is_set()
    assert len(request.sender.tokens()) < 1000
    assert request.sender.errors() == ["UNAVAILABLE: model is unloading"]


def test_gpt2_refuses_requests_beyond_its_slots_and_queue_as_resource_exhausted(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    model = triton_model("gpt2", GPT2_CONFIG)  # 2 sequences, 1 queued
    model.batcher.stop_token_ids = frozenset()
    long = [gpt2_request(pb_utils, [5, 6, 7], max_new_tokens=1000) for _ in range(3)]
    model.execute(long)  # the batcher has not stepped yet: two will run, one waits
    refused = gpt2_request(pb_utils, [5, 6, 7])
    model.execute([refused])
    wait_closed(refused)

    (message,) = refused.sender.errors()
    assert message.startswith("RESOURCE_EXHAUSTED: ")
    assert "max_queued_requests 1" in message
    assert counter(pb_utils, "genmedia_model_requests_rejected_total") == 1
    for request in long:
        request.cancel_after_tokens = 0
    wait_closed(*long)
    assert counter(pb_utils, "genmedia_model_running_sequences") == 0


def test_gpt2_repetition_penalty_input_is_optional_and_applied(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    model = triton_model("gpt2", GPT2_CONFIG)
    model.batcher.stop_token_ids = frozenset()
    greedy = {"temperature": 0.0, "max_new_tokens": 30}
    requests = [
        gpt2_request(pb_utils, [5, 6, 7], **greedy),
        gpt2_request(pb_utils, [5, 6, 7], **greedy, repetition_penalty=1.0),
        gpt2_request(pb_utils, [5, 6, 7], **greedy, repetition_penalty=5.0),
    ]
    model.execute(requests)
    wait_closed(*requests)
    plain, explicit, penalised = (r.sender.tokens() for r in requests)
    assert plain == explicit != penalised


def test_gpt2_answers_every_stream_internal_when_its_loop_fails_and_serves_on(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    config = {**GPT2_CONFIG, **parameters(**GPT2_PARAMETERS, test_fail_step="3")}
    model = triton_model("gpt2", config)  # 2 sequences, 1 queued
    assert counter(pb_utils, "genmedia_model_loop_failures_total") == 0  # there from the start
    model.batcher.stop_token_ids = frozenset()
    streams = [gpt2_request(pb_utils, [5, 6, 7], max_new_tokens=500) for _ in range(3)]
    model.execute(streams)
    wait_closed(*streams)

    for stream in streams:
        assert stream.sender.errors() == ["gpt2 failed to run this request"]
    assert counter(pb_utils, "genmedia_model_loop_failures_total") == 1
    later = gpt2_request(pb_utils, [5, 6, 7], max_new_tokens=4)
    model.execute([later])
    wait_closed(later)
    assert later.sender.errors() == [] and len(later.sender.tokens()) == 4


def test_test_fail_step_must_be_a_step_number(
    pb_utils: types.ModuleType, triton_model: BuildModel
) -> None:
    with pytest.raises(ValueError, match="test_fail_step"):
        triton_model("gpt2", {**GPT2_CONFIG, **parameters(weights_path="gpt2", test_fail_step="x")})
