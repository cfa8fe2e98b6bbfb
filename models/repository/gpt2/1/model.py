"""gpt2: decoupled, streaming one response (`token_id` INT64 [1]) per generated token.

execute() hands each request to a worker thread and returns at once; the
worker streams tokens through the request's response sender and ends every
stream with an empty TRITONSERVER_RESPONSE_COMPLETE_FINAL response. Before
each step it checks whether the client cancelled, and stops if so: a client
that goes away stops the work, not just the transfer.

Custom metrics (Triton's metrics endpoint, label model=<model name>):
genmedia_model_tokens_generated_total and genmedia_model_requests_cancelled_total.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers.utils import logging as transformers_logging

# Triton's python-backend stub runs an isolated interpreter that ignores
# PYTHONPATH; unless genmedia_models is installed, use the copy beside this
# repository (models/genmedia_models).
if importlib.util.find_spec("genmedia_models") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from genmedia_models.gpt2 import SamplingParams, eos_token_ids, generate_tokens, load_gpt2
from genmedia_models.runtime import InvalidInputError, configure_torch_threads, select_device
from genmedia_models.triton_utils import (
    error_response,
    input_array,
    internal_error_response,
    scalar_input,
)
from genmedia_models.weights import model_parameter, weights_path_from_config

DEFAULT_MAX_CONCURRENT_GENERATIONS = 4
# Each metric update is a round trip to Triton: count tokens in chunks, and at the end.
TOKENS_PER_METRIC_UPDATE = 32


def read_request(request: Any) -> tuple[list[int], SamplingParams]:
    """The prompt and sampling parameters of one request; InvalidInputError for bad values."""
    input_ids = input_array(request, "input_ids").reshape(-1).astype(np.int64).tolist()
    params = SamplingParams(
        max_new_tokens=int(scalar_input(request, "max_new_tokens")),
        temperature=float(scalar_input(request, "temperature")),
        top_k=int(scalar_input(request, "top_k")),
        top_p=float(scalar_input(request, "top_p")),
        seed=int(scalar_input(request, "seed")),
    )
    params.validate()
    return input_ids, params


class TritonPythonModel:
    """GPT-2 token streamer."""

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
        self.stop_token_ids = eos_token_ids(self.model)
        workers = int(
            model_parameter(model_config, "max_concurrent_generations")
            or DEFAULT_MAX_CONCURRENT_GENERATIONS
        )
        self.executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"{self.model_name}-generate"
        )
        self.unloading = threading.Event()

        # Keep the families referenced: a Metric stops working once its
        # MetricFamily object is garbage-collected.
        self.metric_families = {
            "tokens": pb_utils.MetricFamily(
                name="genmedia_model_tokens_generated_total",
                description="Tokens generated and sent to clients",
                kind=pb_utils.MetricFamily.COUNTER,
            ),
            "cancelled": pb_utils.MetricFamily(
                name="genmedia_model_requests_cancelled_total",
                description="Generations stopped early because the client cancelled",
                kind=pb_utils.MetricFamily.COUNTER,
            ),
        }
        labels = {"model": self.model_name}
        self.tokens_generated = self.metric_families["tokens"].Metric(labels=labels)
        self.requests_cancelled = self.metric_families["cancelled"].Metric(labels=labels)
        # Concurrent metric updates from several worker threads crash Triton
        # 2.51 (24.10) in the python backend: serialise them.
        self.metrics_lock = threading.Lock()
        config = self.model.config
        pb_utils.Logger.log_info(
            f"{self.model_name}: loaded {directory} (n_layer={config.n_layer}, "
            f"n_embd={config.n_embd}, vocab={config.vocab_size}, n_positions={config.n_positions}) "
            f"on {device}, {workers} workers"
        )

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                input_ids, params = read_request(request)
            except InvalidInputError as error:
                sender.send(
                    error_response(str(error)), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                )
                continue
            worker = self.executor.submit(self._stream, request, sender, input_ids, params)
            worker.add_done_callback(self._log_worker_failure)
        # Decoupled: the workers answer; returning lets Triton hand over more requests.
        return None

    def _stream(
        self, request: Any, sender: Any, input_ids: list[int], params: SamplingParams
    ) -> None:
        """Send one response per token, then the final flag, whatever happens."""
        tokens = generate_tokens(self.model, input_ids, params, self.stop_token_ids)
        sent = counted = 0
        try:
            while True:
                if request.is_cancelled():
                    self._count(self.requests_cancelled, 1)
                    break
                if self.unloading.is_set():
                    sender.send(
                        error_response("model is unloading", pb_utils.TritonError.UNAVAILABLE)
                    )
                    break
                token = next(tokens, None)
                if token is None:
                    break
                output = pb_utils.Tensor("token_id", np.array([token], dtype=np.int64))
                sender.send(pb_utils.InferenceResponse(output_tensors=[output]))
                sent += 1
                if sent - counted == TOKENS_PER_METRIC_UPDATE:
                    self._count(self.tokens_generated, sent - counted)
                    counted = sent
        except InvalidInputError as error:
            sender.send(error_response(str(error)))
        except Exception as error:  # noqa: BLE001 - the stream must still end with the final flag
            sender.send(internal_error_response(self.model_name, error))
        finally:
            tokens.close()
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            self._count(self.tokens_generated, sent - counted)

    def _log_worker_failure(self, worker: Future[None]) -> None:
        # _stream answers its own errors; this catches failures to send at all.
        error = None if worker.cancelled() else worker.exception()
        if error is not None:
            pb_utils.Logger.log_error(f"{self.model_name}: generation worker failed: {error!r}")

    def _count(self, metric: Any, amount: int) -> None:
        if amount:
            with self.metrics_lock:
                metric.increment(amount)

    def finalize(self) -> None:
        # Running and queued generations end at their next step with UNAVAILABLE.
        self.unloading.set()
        self.executor.shutdown(wait=True)
        pb_utils.Logger.log_info(f"{self.model_name}: unloaded")
