"""The services' only way to reach Triton: ``tritonclient.grpc.aio`` with
deadlines, metrics and Triton's errors turned into domain errors."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from services.common import metrics, tracing
from services.common.errors import (
    DeadlineExceeded,
    GenmediaError,
    ResourceExhausted,
    Unavailable,
    UpstreamError,
)
from services.common.settings import TritonBackedSettings

Tensors = Mapping[str, np.ndarray]
# Versions change only when a model is reloaded; no need to ask on every call.
VERSION_CACHE_S = 30.0
# Readiness and metadata questions: a hung Triton must not stall health checks.
READINESS_TIMEOUT_S = 2.0
# First and largest wait between reconnection attempts to Triton.
RECONNECT_BACKOFF_MS = (250, 1000)


# Triton streams a model's error as a bare message, without its code: our
# models start such messages with the gRPC status meant (models/repository/gpt2).
_STATUS_PREFIX = re.compile(r"^(RESOURCE_EXHAUSTED|UNAVAILABLE): ")


def _to_domain_error(model: str, exc: InferenceServerException) -> GenmediaError:
    """The caller's error for Triton's: Triton's own text (addresses, internals) goes to the
    log as the error's detail, never to the caller."""
    status = (exc.status() or "").removeprefix("StatusCode.")
    message = exc.message() or str(exc)
    prefixed = _STATUS_PREFIX.match(message)
    if not status and prefixed:
        # Our own model's words (models/repository/gpt2): its limits, meant for the caller.
        detail = message[prefixed.end() :]
        if prefixed.group(1) == "RESOURCE_EXHAUSTED":
            return ResourceExhausted(f"model {model} is at capacity: {detail}")
        return Unavailable(f"model {model} is unavailable ({detail}); retry later")
    if status == "UNAVAILABLE":
        return Unavailable("the model server is unavailable; retry later", detail=message)
    if status == "DEADLINE_EXCEEDED":
        return DeadlineExceeded(f"model {model} did not answer before the deadline")
    if status == "INVALID_ARGUMENT":
        # The service validated the request already: a rejection means the
        # service and the model disagree (configuration), not a caller error.
        return UpstreamError(
            grpc.StatusCode.INTERNAL, f"model {model} rejected a validated request", message
        )
    if status == "CANCELLED":
        # A caller who cancels never reads this (its handler is cancelled
        # first), so Triton cancelled on its own: it is stopping. Retryable.
        return Unavailable(
            f"the model server cancelled the call to model {model} (it is stopping); retry later",
            detail=message,
        )
    if status == "NOT_FOUND" or "unknown model" in message or "is not ready" in message:
        return Unavailable(f"model {model} is not loaded; retry later", detail=message)
    return UpstreamError(grpc.StatusCode.INTERNAL, f"model {model} failed", message)


def _code_of(exc: BaseException | None) -> str:
    # GeneratorExit: the service closed the stream itself (a stop sequence).
    if exc is None or isinstance(exc, GeneratorExit):
        return "OK"
    if isinstance(exc, GenmediaError):
        return exc.code.name
    return "CANCELLED"


def _infer_inputs(tensors: Tensors) -> list[InferInput]:
    inputs = []
    for name, array in tensors.items():
        infer_input = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        infer_input.set_data_from_numpy(np.ascontiguousarray(array))
        inputs.append(infer_input)
    return inputs


class TritonClient:
    """A long-lived connection to one Triton server."""

    def __init__(self, url: str, max_message_bytes: int, default_timeout_s: float) -> None:
        self._client = triton_aio.InferenceServerClient(
            url,
            # No client keepalive pings: Triton's defaults (pings at most every
            # 5 min, none without calls) answer more frequent ones with GOAWAY.
            channel_args=[
                # Spread calls over every address the name resolves to: a
                # headless Service gives one per Triton pod (k8s/base/triton.yaml).
                ("grpc.lb_policy_name", "round_robin"),
                # Reconnect within about a second of Triton coming back, not
                # after gRPC's default backoff, which grows to two minutes.
                ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        self._default_timeout_s = default_timeout_s
        self._versions: dict[str, tuple[str, float]] = {}
        self._parameters: dict[str, tuple[dict[str, str], float]] = {}

    @classmethod
    def from_settings(cls, settings: TritonBackedSettings) -> TritonClient:
        return cls(settings.triton_url, settings.max_message_bytes, settings.triton_timeout_s)

    def _timeout(self, remaining_s: float | None) -> float:
        return self._default_timeout_s if remaining_s is None else max(remaining_s, 0.001)

    async def infer(
        self,
        model: str,
        inputs: Tensors,
        outputs: list[str],
        request_id: str,
        timeout_s: float | None,
    ) -> dict[str, np.ndarray]:
        """One request, one response; ``timeout_s`` is the caller's time left."""
        start = _started(model)
        error: BaseException | None = None
        span, carrier = tracing.start_client_span(f"triton {model}", {"triton.model": model})
        headers = dict(carrier) or None
        try:
            result = await self._client.infer(
                model,
                _infer_inputs(inputs),
                outputs=[InferRequestedOutput(name) for name in outputs],
                request_id=request_id,
                client_timeout=self._timeout(timeout_s),
                headers=headers,
            )
            return {name: result.as_numpy(name) for name in outputs}
        except InferenceServerException as exc:
            error = _to_domain_error(model, exc)
            raise error from exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            tracing.end_span(span, _code_of(error))
            _record(model, start, error)

    async def stream(
        self,
        model: str,
        inputs: Tensors,
        output: str,
        request_id: str,
        timeout_s: float | None,
    ) -> AsyncIterator[np.ndarray]:
        """Sends one request to a decoupled model and yields each response's ``output``.

        Closing the iterator early (or cancelling the task that reads it)
        cancels the gRPC stream, which Triton passes to the model as
        ``request.is_cancelled()``.
        """
        start = _started(model)
        error: BaseException | None = None

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": _infer_inputs(inputs), "request_id": request_id}

        span, carrier = tracing.start_client_span(f"triton {model}", {"triton.model": model})
        headers = dict(carrier) or None
        responses = self._client.stream_infer(
            one_request(), stream_timeout=self._timeout(timeout_s), headers=headers
        )
        try:
            async for result, failure in responses:
                if failure is not None:
                    raise _to_domain_error(model, failure)
                array = result.as_numpy(output)
                if array is not None:
                    yield array
        except InferenceServerException as exc:
            error = _to_domain_error(model, exc)
            raise error from exc
        except grpc.aio.AioRpcError as exc:
            error = _rpc_error(model, exc)
            raise error from exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            responses.cancel()
            tracing.end_span(span, _code_of(error))
            _record(model, start, error)

    async def is_model_ready(self, model: str, timeout_s: float = READINESS_TIMEOUT_S) -> bool:
        try:
            return bool(await self._client.is_model_ready(model, client_timeout=timeout_s))
        except InferenceServerException:
            return False

    async def model_version(self, model: str) -> str:
        """The newest version Triton serves, e.g. ``"1"``; asked at most every 30 s."""
        cached = self._versions.get(model)
        if cached is not None and time.monotonic() - cached[1] < VERSION_CACHE_S:
            return cached[0]
        try:
            metadata = await self._client.get_model_metadata(
                model, client_timeout=READINESS_TIMEOUT_S
            )
        except InferenceServerException as exc:
            raise _to_domain_error(model, exc) from exc
        versions = sorted(metadata.versions, key=lambda v: int(v) if v.isdigit() else -1)
        version = versions[-1] if versions else ""
        self._versions[model] = (version, time.monotonic())
        return version

    async def model_parameters(self, model: str) -> dict[str, str]:
        """The string parameters of the model's effective config (cached like versions)."""
        cached = self._parameters.get(model)
        if cached is not None and time.monotonic() - cached[1] < VERSION_CACHE_S:
            return cached[0]
        try:
            reply = await self._client.get_model_config(
                model, as_json=True, client_timeout=READINESS_TIMEOUT_S
            )
        except InferenceServerException as exc:
            raise _to_domain_error(model, exc) from exc
        raw = reply.get("config", {}).get("parameters", {})
        parameters = {key: str(value.get("string_value", "")) for key, value in raw.items()}
        self._parameters[model] = (parameters, time.monotonic())
        return parameters

    async def ready_models(self, prefix: str) -> list[str]:
        """Names of the models Triton has loaded and ready that start with ``prefix``."""
        try:
            index = await self._client.get_model_repository_index(
                as_json=True, client_timeout=READINESS_TIMEOUT_S
            )
        except InferenceServerException as exc:
            raise _to_domain_error(prefix + "*", exc) from exc
        return sorted(
            entry["name"]
            for entry in index.get("models", [])
            if entry.get("name", "").startswith(prefix) and entry.get("state") == "READY"
        )

    async def close(self) -> None:
        await self._client.close()


def _rpc_error(model: str, exc: grpc.aio.AioRpcError) -> GenmediaError:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"model {model} did not finish before the deadline")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        # CANCELLED here is Triton's doing (see _to_domain_error).
        return Unavailable("the model server is unavailable; retry later", detail=exc.details())
    return UpstreamError(code, f"stream from model {model} failed", exc.details() or "")


def _started(model: str) -> float:
    metrics.triton_in_flight.labels(model).inc()
    return time.perf_counter()


def _record(model: str, start: float, error: BaseException | None) -> None:
    metrics.triton_in_flight.labels(model).dec()
    metrics.triton_requests.labels(model, _code_of(error)).inc()
    metrics.triton_request_seconds.labels(model).observe(time.perf_counter() - start)
