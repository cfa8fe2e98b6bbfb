"""gpt2: decoupled, streaming the generated tokens (`token_id` INT64 [n]) as they come.

All requests share one continuously batched decode loop
(genmedia_models.gpt2.batching): execute() validates each request and
queues it, then returns at once; the loop thread admits it at its next step,
streams its tokens through the request's response sender (from a few
sender threads, while it computes the next step) and ends every stream with
an empty TRITONSERVER_RESPONSE_COMPLETE_FINAL response. A response carries
one token when the senders keep up with the loop, and every token waiting
for its stream when they are behind (genmedia_models.gpt2.delivery). With
the optional input `single_response` true, all of a request's tokens come in
one final response instead (a unary call needs no stream). Running requests
are asked whether their client cancelled at most every `cancel_check_ms`
(every step with 0): each question is a round trip to the server.

Errors a stream can end with start with the gRPC status the service should
report ("RESOURCE_EXHAUSTED: ...", "UNAVAILABLE: ..."): Triton's streaming API
passes a model's error on as a bare message, and its own codes have no
RESOURCE_EXHAUSTED.

A decode step that fails (anything escaping the loop's step) ends every
running and queued stream with "<model> failed to run this request"
(INTERNAL) at once, is logged with its traceback and counted, and the loop
serves the next request from an empty batch: the model stays ready. The
test-only parameter `test_fail_step` (in no shipped config) fails the Nth
decode step once, for the fault tests (genmedia_models.fault_injection).

Custom metrics (Triton's metrics endpoint, label model=<model name>):
genmedia_model_tokens_generated_total, genmedia_model_requests_cancelled_total,
genmedia_model_requests_rejected_total, genmedia_model_loop_failures_total,
genmedia_model_running_sequences and genmedia_model_queued_requests.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers.utils import logging as transformers_logging

from genmedia_models.gpt2.batching import ContinuousBatcher
from genmedia_models.gpt2.loading import eos_token_ids, load_gpt2
from genmedia_models.gpt2.sampling import SamplingParams
from genmedia_models.gpt2.types import (
    BatchLimits,
    BatchState,
    FinishReason,
    GenerationRequest,
    QueueFull,
)
from genmedia_models.gpt2.watermark import GreenList
from genmedia_models.runtime import InvalidInputError, configure_torch_threads, select_device
from genmedia_models.triton_utils import (
    cancelled_requests_counter,
    error_response,
    injected_step_failure,
    input_array,
    internal_error_response,
    output_tensor,
    scalar_input,
)
from genmedia_models.weights import model_parameter, weights_path_from_config

# Each metric update is a round trip to Triton: count tokens in chunks, and at the end.
TOKENS_PER_METRIC_UPDATE = 32
DEFAULT_LIMITS = BatchLimits()
DEFAULT_SENDER_THREADS = 4
DEFAULT_CANCEL_CHECK_MS = 20.0


def single_response(request: Any) -> bool:
    """Whether the caller wants every token in one final response (optional input)."""
    tensor = pb_utils.get_input_tensor_by_name(request, "single_response")
    return tensor is not None and bool(tensor.as_numpy().reshape(-1)[0])


def read_request(request: Any) -> tuple[list[int], SamplingParams]:
    """The prompt and sampling parameters of one request; InvalidInputError for bad values."""
    input_ids = input_array(request, "input_ids").reshape(-1).astype(np.int64).tolist()
    penalty = pb_utils.get_input_tensor_by_name(request, "repetition_penalty")
    params = SamplingParams(
        max_new_tokens=int(scalar_input(request, "max_new_tokens")),
        temperature=float(scalar_input(request, "temperature")),
        top_k=int(scalar_input(request, "top_k")),
        top_p=float(scalar_input(request, "top_p")),
        seed=int(scalar_input(request, "seed")),
        repetition_penalty=(
            1.0 if penalty is None else float(scalar_input(request, "repetition_penalty"))
        ),
    )
    params.validate()
    return input_ids, params


def batch_limits(model_config: dict[str, Any]) -> BatchLimits:
    def setting(key: str, default: int) -> int:
        value = model_parameter(model_config, key)
        return default if value is None else int(value)

    return BatchLimits(
        max_sequences=setting("max_sequences", DEFAULT_LIMITS.max_sequences),
        max_total_tokens=setting("max_total_tokens", DEFAULT_LIMITS.max_total_tokens),
        max_queued=setting("max_queued_requests", DEFAULT_LIMITS.max_queued),
    )


class TokenCounter:
    """Tokens sent, added to Triton's counter in chunks (each update is a round trip).

    Sender threads add concurrently; `metrics_lock` serialises the updates.
    """

    def __init__(self, metric: Any, metrics_lock: threading.Lock) -> None:
        self._metric = metric
        self._metrics_lock = metrics_lock
        self._lock = threading.Lock()
        self._pending = 0

    def add(self, amount: int = 1) -> None:
        with self._lock:
            self._pending += amount
            due = self._pending >= TOKENS_PER_METRIC_UPDATE
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            amount, self._pending = self._pending, 0
        if amount:
            with self._metrics_lock:
                self._metric.increment(amount)


class TritonSink:
    """Sends one request's tokens as decoupled responses, then the final flag.

    Streaming, each emit is one response holding the tokens handed over (one,
    or several when delivery was behind); with `single_response`, the tokens
    are kept and sent with the final flag in one response. Whether the client
    cancelled is asked of the server at most every `cancel_check_s`.
    """

    def __init__(
        self, model: TritonPythonModel, request: Any, single: bool, cancel_check_s: float
    ) -> None:
        self._model = model
        self._request = request
        self._sender = request.get_response_sender()
        self._single = single
        self.keeps_tokens = single
        """Tokens are only kept until the end: token delivery hands them over inline."""
        self._kept: list[int] = []
        self._cancel_check_s = cancel_check_s
        self._checked_at = -float("inf")
        self._cancelled = False

    def emit(self, tokens: list[int]) -> None:
        if self._single:
            self._kept.extend(tokens)
            return
        try:
            self._sender.send(self._response(tokens))
        except Exception:
            # Most likely the caller left: the next cancelled() asks the server at once.
            self._checked_at = -float("inf")
            raise
        self._model.tokens.add(len(tokens))

    @staticmethod
    def _response(tokens: list[int]) -> Any:
        output = output_tensor("token_id", np.array(tokens, dtype=np.int64))
        return pb_utils.InferenceResponse(output_tensors=[output])

    def cancelled(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self._cancel_check_s:
            self._checked_at = now
            self._cancelled = bool(self._request.is_cancelled())
        return self._cancelled

    def finish(self, reason: FinishReason, error: BaseException | None = None) -> None:
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        sent_final = False
        try:
            if reason is FinishReason.CANCELLED:
                self._model.count(self._model.requests_cancelled)
            elif reason is FinishReason.UNLOADING:
                message = "UNAVAILABLE: model is unloading"
                self._sender.send(error_response(message, pb_utils.TritonError.UNAVAILABLE))
            elif reason is FinishReason.FAILED:
                assert error is not None
                self._sender.send(internal_error_response(self._model.model_name, error))
            elif self._kept:
                # Every token and the end in one response: one round trip for the request.
                self._model.tokens.add(len(self._kept))
                self._sender.send(self._response(self._kept), flags=final)
                sent_final = True
        finally:
            if not sent_final:
                self._sender.send(flags=final)
            self._model.tokens.flush()


class TritonPythonModel:
    """GPT-2 token streamer over a continuous batch."""

    def initialize(self, args: dict[str, str]) -> None:
        model_config: dict[str, Any] = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        if not pb_utils.using_decoupled_model_transaction_policy(model_config):
            raise pb_utils.TritonModelException(
                f"{self.model_name} streams tokens: set decoupled: true"
            )
        configure_torch_threads()
        # Triton's log is line-oriented: keep transformers' tqdm bars out of it.
        transformers_logging.disable_progress_bar()
        device = select_device(args)
        directory = weights_path_from_config(model_config)
        self.model = load_gpt2(directory, device)
        limits = batch_limits(model_config)

        # Keep the families referenced: a Metric stops working once its
        # MetricFamily object is garbage-collected.
        counter, gauge = pb_utils.MetricFamily.COUNTER, pb_utils.MetricFamily.GAUGE
        self.metric_families = {
            name: pb_utils.MetricFamily(name=name, description=description, kind=kind)
            for name, description, kind in (
                ("genmedia_model_tokens_generated_total", "Tokens generated and sent", counter),
                (
                    "genmedia_model_requests_rejected_total",
                    "Requests refused because every sequence slot and queue place was taken",
                    counter,
                ),
                (
                    "genmedia_model_loop_failures_total",
                    "Decode loop steps that failed, ending every running and queued request",
                    counter,
                ),
                ("genmedia_model_running_sequences", "Sequences in the decode batch", gauge),
                ("genmedia_model_queued_requests", "Requests waiting for a sequence slot", gauge),
            )
        }
        labels = {"model": self.model_name}
        metric = {name: f.Metric(labels=labels) for name, f in self.metric_families.items()}
        self.cancelled_family, self.requests_cancelled = cancelled_requests_counter(self.model_name)
        self.requests_rejected = metric["genmedia_model_requests_rejected_total"]
        # Created with the others, so the series reads 0 until a step fails.
        self.loop_failures = metric["genmedia_model_loop_failures_total"]
        self.running_sequences = metric["genmedia_model_running_sequences"]
        self.queued_requests = metric["genmedia_model_queued_requests"]
        # Concurrent metric updates from several threads crash Triton 2.51
        # (24.10) in the python backend: serialise them.
        self.metrics_lock = threading.Lock()
        tokens_metric = metric["genmedia_model_tokens_generated_total"]
        self.tokens = TokenCounter(tokens_metric, self.metrics_lock)

        senders = model_parameter(model_config, "response_sender_threads")
        cancel_check_ms = model_parameter(model_config, "cancel_check_ms")
        self.cancel_check_s = (
            DEFAULT_CANCEL_CHECK_MS if cancel_check_ms is None else float(cancel_check_ms)
        ) / 1000
        self.batcher = ContinuousBatcher(
            self.model,
            limits,
            eos_token_ids(self.model),
            on_state=self._publish_state,
            sender_threads=DEFAULT_SENDER_THREADS if senders is None else int(senders),
            watermark=GreenList.from_config(model_config, int(self.model.config.vocab_size)),
            on_loop_failure=lambda: self.count(self.loop_failures),
            log=self._log_error,
            fault_hook=self._fault_hook(model_config),
        )
        self.batcher.start(name=f"{self.model_name}-batcher")
        config = self.model.config
        pb_utils.Logger.log_info(
            f"{self.model_name}: loaded {directory} (n_layer={config.n_layer}, "
            f"n_embd={config.n_embd}, vocab={config.vocab_size}, n_positions={config.n_positions}) "
            f"on {device}; up to {limits.max_sequences} sequences and "
            f"{limits.max_total_tokens} tokens at once, {limits.max_queued} more queued"
        )

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            try:
                input_ids, params = read_request(request)
                sink = TritonSink(self, request, single_response(request), self.cancel_check_s)
                self.batcher.submit(GenerationRequest(input_ids, params, sink))
            except InvalidInputError as error:
                self._refuse(request, error_response(str(error)))
            except QueueFull as error:
                self.count(self.requests_rejected)
                message = f"RESOURCE_EXHAUSTED: {error}"
                self._refuse(request, error_response(message, pb_utils.TritonError.UNAVAILABLE))
        # Decoupled: the batcher answers; returning lets Triton hand over more requests.
        return None

    @staticmethod
    def _refuse(request: Any, response: Any) -> None:
        request.get_response_sender().send(
            response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        )

    def _fault_hook(self, model_config: dict[str, Any]) -> Callable[[int], None] | None:
        """The test-only failing decode step's check, or None when there is none."""
        failure = injected_step_failure(self.model_name, model_config)
        return failure.check if failure.at_step else None

    def _log_error(self, message: str, error: BaseException) -> None:
        """An error the decode loop survived, with its traceback, in Triton's log."""
        trace = "".join(traceback.format_exception(error)).rstrip()
        pb_utils.Logger.log_error(f"{self.model_name}: {message}\n{trace}")

    def _publish_state(self, state: BatchState) -> None:
        with self.metrics_lock:
            self.running_sequences.set(state.running)
            self.queued_requests.set(state.queued)

    def count(self, metric: Any, amount: int = 1) -> None:
        with self.metrics_lock:
            metric.increment(amount)

    def finalize(self) -> None:
        # Running and queued generations end now with UNAVAILABLE.
        self.batcher.close()
        pb_utils.Logger.log_info(f"{self.model_name}: unloaded")
