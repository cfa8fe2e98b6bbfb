"""Text generation, independent of gRPC.

Validates the request, tokenizes the prompt (truncating it from the start if
asked), streams token ids from Triton's decoupled ``gpt2`` model and turns
them into whole-character text deltas, ending at max_new_tokens, the
end-of-text token or a stop sequence (matched on decoded text, across token
boundaries). Closing the stream early (stop sequence, caller cancelled,
deadline) cancels the Triton request, and the model drops it from its batch
before its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import Counter, Histogram
from tokenizers import Tokenizer

from genmedia.v1 import text_generation_pb2 as pb
from genmedia_shared.limits import MAX_SEED
from services.common.audit import AuditLog, deferred_sha256
from services.common.coalesce import coalesced
from services.common.errors import DeadlineExceeded, GenmediaError, InvalidArgument
from services.common.metrics import LATENCY_BUCKETS_S
from services.common.provenance import make_provenance
from services.common.triton import TritonClient
from services.text_generation.detokenizer import IncrementalDetokenizer
from services.text_generation.settings import TextGenerationSettings
from services.text_generation.stops import StopSequenceFilter

logger = logging.getLogger(__name__)

MAX_TEMPERATURE = 2.0
MAX_TOP_K = 1000
MAX_REPETITION_PENALTY = 10.0
MAX_STOPS = 4
MAX_STOP_CHARS = 64
END_OF_TEXT = "<|endoftext|>"

tokens_generated = Counter(
    "genmedia_tokens_generated_total", "Tokens received from the text model.", ("model",)
)
inter_token = Histogram(
    "genmedia_inter_token_seconds",
    "Time between two tokens of one streamed text request (tokens that arrive together "
    "share the time since the previous arrival).",
    ("model",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
finished = Counter(
    "genmedia_text_finished_total",
    "Text requests by how they ended: length, stop, eos, cancelled (caller or deadline), error.",
    ("model", "reason"),
)
FINISH_REASONS = ("length", "stop", "eos", "cancelled", "error")
time_to_first_token = Histogram(
    "genmedia_time_to_first_token_seconds",
    "From the start of a streamed text request to its first token (GenerateText without "
    "stop sequences gets its text whole and is not counted).",
    ("model",),
    buckets=LATENCY_BUCKETS_S,
)


@dataclass(frozen=True)
class TextModelInfo:
    """What the service must know of the model: its context and end-of-text token."""

    context_length: int
    eos_token_ids: frozenset[int]

    @classmethod
    def load(cls, tokenizer_dir: Path, tokenizer: Tokenizer) -> TextModelInfo:
        config_path = tokenizer_dir / "config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        eos = config.get("eos_token_id", tokenizer.token_to_id(END_OF_TEXT))
        eos_ids = frozenset(eos if isinstance(eos, list) else [] if eos is None else [eos])
        return cls(context_length=int(config.get("n_positions", 1024)), eos_token_ids=eos_ids)


@dataclass(frozen=True)
class TextPlan:
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    stops: list[str]
    repetition_penalty: float = 1.0
    truncated_prompt_tokens: int = 0


class TextGenerator:
    def __init__(
        self,
        settings: TextGenerationSettings,
        tokenizer: Tokenizer,
        model_info: TextModelInfo,
        triton: TritonClient,
        audit: AuditLog | None = None,
    ) -> None:
        self._settings = settings
        self._tokenizer = tokenizer
        self._info = model_info
        self._triton = triton
        self._audit = audit or AuditLog(settings.audit_log, "text-generation")
        # Every series at 0 from the start: a dashboard shows 0, not "no data".
        tokens_generated.labels(self.model)
        for reason in FINISH_REASONS:
            finished.labels(self.model, reason)

    @property
    def model(self) -> str:
        return self._settings.text_model

    async def plan(self, request: pb.GenerateTextRequest) -> TextPlan:
        """Checks every field; raises InvalidArgument saying what to fix."""
        if self._settings.log_prompts:
            logger.debug("prompt: %r", request.prompt)
        if not request.prompt.strip():
            raise InvalidArgument("prompt is empty; send some text to continue")
        if len(request.prompt) > self._settings.max_prompt_chars:
            raise InvalidArgument(
                f"prompt is {len(request.prompt)} characters; "
                f"the limit is {self._settings.max_prompt_chars}"
            )
        max_new_tokens = request.max_new_tokens or self._settings.default_max_new_tokens
        if max_new_tokens > self._settings.max_new_tokens_limit:
            raise InvalidArgument(
                f"max_new_tokens is {max_new_tokens}; it must be "
                f"1..{self._settings.max_new_tokens_limit}"
            )
        temperature = request.temperature if request.HasField("temperature") else 1.0
        if not (math.isfinite(temperature) and 0 <= temperature <= MAX_TEMPERATURE):
            raise InvalidArgument(
                f"temperature is {temperature}; it must be 0..{MAX_TEMPERATURE} (0 is greedy)"
            )
        if request.top_k > MAX_TOP_K:
            raise InvalidArgument(f"top_k is {request.top_k}; it must be 0..{MAX_TOP_K} (0 is off)")
        top_p = request.top_p if request.HasField("top_p") else 1.0
        if not (math.isfinite(top_p) and 0 < top_p <= 1):
            raise InvalidArgument(f"top_p is {top_p}; it must be in (0, 1]")
        if request.HasField("seed") and not 0 <= request.seed <= MAX_SEED:
            raise InvalidArgument(f"seed is {request.seed}; it must be 0..2^63-1")
        penalty = request.repetition_penalty if request.HasField("repetition_penalty") else 1.0
        if not (math.isfinite(penalty) and 0 < penalty <= MAX_REPETITION_PENALTY):
            raise InvalidArgument(
                f"repetition_penalty is {penalty}; it must be in (0, {MAX_REPETITION_PENALTY}] "
                "(1 is off)"
            )
        if len(request.stop) > MAX_STOPS:
            raise InvalidArgument(f"{len(request.stop)} stop sequences; at most {MAX_STOPS}")
        for stop in request.stop:
            if not 0 < len(stop) <= MAX_STOP_CHARS:
                raise InvalidArgument(f"stop sequences must be 1..{MAX_STOP_CHARS} characters")
        prompt_ids = await self._tokenize(request.prompt)
        room = self._info.context_length - max_new_tokens
        truncated = 0
        if room < 1:
            raise InvalidArgument(
                f"max_new_tokens is {max_new_tokens}; with a prompt of at least one token it "
                f"must be below the model's context of {self._info.context_length} tokens"
            )
        if len(prompt_ids) > room and request.truncate_prompt:
            truncated = len(prompt_ids) - room
            prompt_ids = prompt_ids[truncated:]  # keep the end, which the continuation follows
        if len(prompt_ids) > room:
            raise InvalidArgument(
                f"prompt is {len(prompt_ids)} tokens and max_new_tokens is {max_new_tokens}; "
                f"together they must fit the model's context of {self._info.context_length} "
                f"tokens: shorten the prompt to {room} tokens, lower max_new_tokens, or set "
                "truncate_prompt"
            )
        seed = (
            request.seed
            if request.HasField("seed")
            else int(np.random.default_rng().integers(0, MAX_SEED))
        )
        return TextPlan(
            prompt_ids=prompt_ids,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=request.top_k,
            top_p=top_p,
            seed=seed,
            stops=list(request.stop),
            repetition_penalty=penalty,
            truncated_prompt_tokens=truncated,
        )

    async def _tokenize(self, prompt: str) -> list[int]:
        """The prompt's token ids, from a worker thread: a prompt of thousands of characters
        takes milliseconds, which the event loop must not wait for. ``encode_batch`` (unlike
        ``encode``) lets go of the GIL while it works, so the loop runs meanwhile."""
        (encoding,) = await asyncio.to_thread(self._tokenizer.encode_batch, [prompt])
        return list(encoding.ids)

    async def stream(
        self,
        request: pb.GenerateTextRequest,
        request_id: str,
        timeout_s: float | None,
        whole: bool = False,
    ) -> AsyncIterator[pb.StreamTextResponse]:
        """Text deltas as they are produced; the last message carries the finish reason.

        ``whole``: the caller wants the text whole (GenerateText), so, unless stop sequences
        must be watched as the text grows, the model sends every token in one response.
        """
        plan = await self.plan(request)
        watermark = await self._watermark()
        reason = "error"
        sent: list[str] = []
        last = pb.StreamTextResponse()
        single = whole and not plan.stops
        try:
            # Closed at once when the caller goes away, so Triton hears of it now, not at GC.
            async with contextlib.aclosing(
                self._stream(plan, request_id, timeout_s, single)
            ) as messages:
                async for message in messages:
                    if message.finish_reason:
                        reason = pb.FinishReason.Name(message.finish_reason)
                    sent.append(message.text)
                    last = message
                    yield message
        except (asyncio.CancelledError, GeneratorExit, DeadlineExceeded):
            reason = pb.FinishReason.Name(pb.FINISH_REASON_CANCELLED)
            raise
        finally:
            finished.labels(self.model, reason.removeprefix("FINISH_REASON_").lower()).inc()
            if sent:
                text = "".join(sent)
                self._record(request, plan, request_id, text, reason, last, watermark)

    async def _watermark(self) -> str:
        """How the model marks its text, from its config (cached): for the audit trail."""
        try:
            config = await self._triton.model_parameters(self.model)
        except GenmediaError:
            return "unknown"  # the generation itself will say what is wrong with Triton
        return "text-greenlist" if float(config.get("watermark_delta") or 0) > 0 else "none"

    def _record(
        self,
        request: pb.GenerateTextRequest,
        plan: TextPlan,
        request_id: str,
        text: str,
        reason: str,
        last: pb.StreamTextResponse,
        watermark: str,
    ) -> None:
        """The generation's audit event: what was sent, even if the caller left early."""
        parameters = {
            "max_new_tokens": plan.max_new_tokens,
            "temperature": plan.temperature,
            "top_k": plan.top_k,
            "top_p": plan.top_p,
            "repetition_penalty": plan.repetition_penalty,
            "seed": plan.seed,
            "stop_sequences": len(plan.stops),
            "prompt_tokens": len(plan.prompt_ids),
            "prompt_sha256": deferred_sha256(request.prompt),
        }
        if self._settings.audit_prompts:
            parameters["prompt"] = request.prompt
        self._audit.record(
            request_id,
            self.model,
            last.provenance.model_version,
            parameters=parameters,
            outputs=[{"sha256": deferred_sha256(text), "characters": len(text)}],
            finish_reason=reason.removeprefix("FINISH_REASON_").lower(),
            watermark=watermark,
        )

    async def _stream(
        self, plan: TextPlan, request_id: str, timeout_s: float | None, single: bool
    ) -> AsyncIterator[pb.StreamTextResponse]:
        started = time.perf_counter()
        version = await self._triton.model_version(self.model)
        inputs = {
            "input_ids": np.asarray(plan.prompt_ids, dtype=np.int64),
            "max_new_tokens": np.asarray([plan.max_new_tokens], dtype=np.int32),
            "temperature": np.asarray([plan.temperature], dtype=np.float32),
            "top_k": np.asarray([plan.top_k], dtype=np.int32),
            "top_p": np.asarray([plan.top_p], dtype=np.float32),
            "seed": np.asarray([plan.seed], dtype=np.int64),
            "repetition_penalty": np.asarray([plan.repetition_penalty], dtype=np.float32),
            "single_response": np.asarray([single], dtype=np.bool_),
        }
        detokenizer = IncrementalDetokenizer(self._tokenizer)
        stops = StopSequenceFilter(plan.stops)
        finish = pb.FINISH_REASON_LENGTH
        generated = 0
        arrays = self._triton.stream(self.model, inputs, "token_id", request_id, timeout_s)
        # A stream read while the caller's side is busy comes coalesced: one message for
        # every token that waited, not one message per token (services/common/coalesce.py).
        token_stream = arrays if single else coalesced(arrays, np.concatenate)
        async with contextlib.aclosing(token_stream):
            previous = started
            async for token_ids in token_stream:
                ids = token_ids.reshape(-1).tolist()
                if not single:
                    previous = self._observe_arrival(len(ids), started, previous, generated == 0)
                tokens_generated.labels(self.model).inc(len(ids))
                text, used = self._text_of(ids, detokenizer, stops)
                generated += used
                if used and ids[used - 1] in self._info.eos_token_ids:
                    # The model ends the stream right after end-of-text; reading
                    # to its end (rather than cancelling) leaves Triton no race
                    # between our cancel and its final response.
                    finish = pb.FINISH_REASON_EOS
                if stops.stopped:
                    finish = pb.FINISH_REASON_STOP
                if text:
                    yield pb.StreamTextResponse(text=text, generated_tokens=generated)
                if stops.stopped:
                    break
        tail = "" if stops.stopped else stops.feed(detokenizer.flush())
        if stops.stopped:
            finish = pb.FINISH_REASON_STOP
        else:
            tail += stops.flush()
        yield pb.StreamTextResponse(
            text=tail,
            generated_tokens=generated,
            finish_reason=finish,
            usage=pb.TextUsage(
                prompt_tokens=len(plan.prompt_ids),
                generated_tokens=generated,
                truncated_prompt_tokens=plan.truncated_prompt_tokens,
            ),
            provenance=make_provenance(self.model, version, plan.seed, request_id),
        )

    def _observe_arrival(self, count: int, started: float, previous: float, first: bool) -> float:
        """Time to first token, and the gap since the last arrival shared by its tokens."""
        now = time.perf_counter()
        if first:
            time_to_first_token.labels(self.model).observe(now - started)
            return now
        for _ in range(count):
            inter_token.labels(self.model).observe((now - previous) / count)
        return now

    def _text_of(
        self, ids: list[int], detokenizer: IncrementalDetokenizer, stops: StopSequenceFilter
    ) -> tuple[str, int]:
        """The text ``ids`` complete and how many of them count as generated: all of them,
        or those up to the one that completed a stop sequence (the rest were never asked
        for). End-of-text counts as generated and adds no text."""
        text = [id_ for id_ in ids if id_ not in self._info.eos_token_ids]
        if not stops.stops:
            return stops.feed(detokenizer.push_many(text)), len(ids)
        parts: list[str] = []
        for used, token_id in enumerate(ids, start=1):
            if token_id in self._info.eos_token_ids:
                continue
            parts.append(stops.feed(detokenizer.push(token_id)))
            if stops.stopped:
                return "".join(parts), used
        return "".join(parts), len(ids)

    async def generate(
        self, request: pb.GenerateTextRequest, request_id: str, timeout_s: float | None
    ) -> pb.GenerateTextResponse:
        """The whole completion: exactly the concatenation of :meth:`stream`."""
        parts: list[str] = []
        last = pb.StreamTextResponse()
        async for last in self.stream(request, request_id, timeout_s, whole=True):
            parts.append(last.text)
        return pb.GenerateTextResponse(
            text="".join(parts),
            finish_reason=last.finish_reason,
            usage=last.usage,
            provenance=last.provenance,
        )

    async def ready(self) -> bool:
        return await self._triton.is_model_ready(self.model)

    async def describe(self) -> pb.TextModel:
        """The model and this service's limits on it (the gateway's estimates use them)."""
        return pb.TextModel(
            name=self.model,
            context_length=self._info.context_length,
            default_max_new_tokens=self._settings.default_max_new_tokens,
            max_new_tokens_limit=self._settings.max_new_tokens_limit,
            ready=await self.ready(),
        )
