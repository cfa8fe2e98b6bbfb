"""Small helpers over Triton's python-backend API, shared by the model.py files.

Importable only inside Triton's python backend stub (it provides
`triton_python_backend_utils`); unit tests install a stand-in module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from genmedia_models.fault_injection import (
    DELAY_PARAMETER,
    FAIL_STEP_PARAMETER,
    InjectedDelay,
    InjectedStepFailure,
)
from genmedia_models.runtime import InvalidInputError


def input_array(request: pb_utils.InferenceRequest, name: str) -> np.ndarray:
    """A request's input as numpy; InvalidInputError when the caller left it out."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise InvalidInputError(f'missing input "{name}"')
    return tensor.as_numpy()


def output_tensor(name: str, array: np.ndarray) -> pb_utils.Tensor:
    """An output tensor handed over by DLPack, not by numpy's C structures.

    The python backend stub is compiled against numpy 1's ABI: given a numpy 2 array it
    reads the item size where numpy 1 kept it, finds 0, and sends an empty tensor (seen in
    the GPU run's dry run, bench/gpu). DLPack describes the buffer itself, under both;
    torch exports it (numpy 1.26's own export crashes the stub).
    """
    return pb_utils.Tensor.from_dlpack(name, torch.from_numpy(np.ascontiguousarray(array)))


def scalar_input(request: pb_utils.InferenceRequest, name: str) -> np.generic:
    """The single element of a dims [1] input."""
    values = input_array(request, name).reshape(-1)
    if values.size != 1:
        raise InvalidInputError(f'input "{name}" must hold exactly one value, got {values.size}')
    return values[0]


def error_response(message: str, code: int | None = None) -> pb_utils.InferenceResponse:
    """A response carrying only a TritonError (default code: INVALID_ARG, a caller error)."""
    code = pb_utils.TritonError.INVALID_ARG if code is None else code
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def internal_error_response(model_name: str, error: BaseException) -> pb_utils.InferenceResponse:
    """Log an unexpected failure and answer with a generic INTERNAL error."""
    pb_utils.Logger.log_error(f"{model_name}: {type(error).__name__}: {error}")
    return error_response(f"{model_name} failed to run this request", pb_utils.TritonError.INTERNAL)


CANCELLED_METRIC = "genmedia_model_requests_cancelled_total"


def cancelled_requests_counter(model_name: str) -> tuple[pb_utils.MetricFamily, pb_utils.Metric]:
    """The model's count of requests dropped because their caller cancelled or timed out.

    Every model registers the same family (same name and help), labelled by
    model. Keep the family referenced: its metric stops working once the
    family is garbage-collected.
    """
    family = pb_utils.MetricFamily(
        name=CANCELLED_METRIC,
        description="Requests stopped early because the caller cancelled or its deadline passed",
        kind=pb_utils.MetricFamily.COUNTER,
    )
    return family, family.Metric(labels={"model": model_name})


def answer_cancelled(
    requests: list[pb_utils.InferenceRequest],
    responses: list[pb_utils.InferenceResponse | None],
    counter: pb_utils.Metric,
) -> None:
    """Answers CANCELLED, and counts, every unanswered request whose caller has gone.

    Run before the forward pass: a request whose client cancelled or whose
    deadline passed while it waited costs nothing more.
    """
    for index, request in enumerate(requests):
        if responses[index] is None and request.is_cancelled():
            responses[index] = error_response(
                "the caller cancelled the request", pb_utils.TritonError.CANCELLED
            )
            counter.increment(1)


def _warn_test_only(model_name: str, what: str) -> None:
    pb_utils.Logger.log_warn(f"{model_name}: {what} (for fault tests only)")


def injected_delay(model_name: str, model_config: Mapping[str, Any]) -> InjectedDelay:
    """The model's test-only delay; a delayed model says so in Triton's log."""
    delay = InjectedDelay.from_config(model_config)
    if delay.seconds:
        _warn_test_only(model_name, f"{DELAY_PARAMETER} holds every batch {delay.seconds:.3f} s")
    return delay


def injected_step_failure(model_name: str, model_config: Mapping[str, Any]) -> InjectedStepFailure:
    """The model's test-only failing decode step; a model that has one says so in Triton's log."""
    failure = InjectedStepFailure.from_config(model_config)
    if failure.at_step:
        _warn_test_only(
            model_name, f"{FAIL_STEP_PARAMETER} fails decode step {failure.at_step} once"
        )
    return failure
