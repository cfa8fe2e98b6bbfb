"""In-flight (continuous) batching of GPT-2 generations, independent of Triton.

One loop thread owns the model. Each iteration it

1. drops sequences whose caller cancelled (running ones every step, so a
   cancelled sequence leaves the batch before the next forward pass),
2. admits waiting requests in arrival order while a sequence slot is free
   and their prompt + max_new_tokens fit the token budget, runs their
   prompts and sends their first tokens,
3. runs one decode step for every running sequence together and sends each
   its next token; a sequence that reaches end-of-text or max_new_tokens
   leaves at once and frees its slot and its share of the budget.

Requests beyond the free slots wait in a bounded queue; beyond that,
`submit` raises QueueFull. Callers see tokens through a TokenSink; a step's
tokens and endings are handed to token_delivery, which can send them while
the loop computes the next step.

The loop outlives a failed step. An exception that escapes `step()` (from
the decoder, a sink, the state callback, delivery) ends every running and
queued request with FinishReason.FAILED at once, is logged and counted
(`on_loop_failure`), and the loop starts again from an empty batch: the
model keeps serving instead of every stream hanging until its deadline.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import GPT2LMHeadModel

from genmedia_models.gpt2.decoder import DecodeRow, PooledGPT2
from genmedia_models.gpt2.delivery import Outbox, TokenDelivery, log_error
from genmedia_models.gpt2.sampling import SamplerState, SamplingParams, pick_tokens
from genmedia_models.gpt2.types import (
    BatchLimits,
    BatchState,
    ErrorLog,
    FinishReason,
    GenerationRequest,
    QueueFull,
)
from genmedia_models.gpt2.watermark import GreenList
from genmedia_models.runtime import InvalidInputError

# Asking Triton whether a queued request was cancelled is a round trip; queued
# requests are asked at this interval, running ones every step.
QUEUED_CANCEL_CHECK_S = 0.05


@dataclass
class _Running:
    request: GenerationRequest
    reserved: int
    sampler: SamplerState
    length: int
    last_token: int
    generated: int = 0


class ContinuousBatcher:
    """Runs every submitted generation in one shared batch (see the module docstring)."""

    def __init__(
        self,
        model: GPT2LMHeadModel,
        limits: BatchLimits,
        stop_token_ids: Collection[int] = frozenset(),
        on_state: Callable[[BatchState], None] | None = None,
        sender_threads: int = 0,
        watermark: GreenList | None = None,
        on_loop_failure: Callable[[], None] | None = None,
        log: ErrorLog = log_error,
        fault_hook: Callable[[int], None] | None = None,
    ) -> None:
        """``on_loop_failure`` counts failed steps; ``log`` reports errors the loop survives;
        ``fault_hook`` (tests only) is called with each decode step's number, from 1, and
        may raise to fail that step."""
        limits.validate(int(model.config.n_positions))
        self.limits = limits
        self.watermark = watermark
        self.decoder = PooledGPT2(model, slots=limits.max_sequences)
        self._reserved = 0
        self.stop_token_ids = frozenset(stop_token_ids)
        self._on_state = on_state
        self._on_loop_failure = on_loop_failure
        self._log = log
        self._fault_hook = fault_hook
        self._delivery = TokenDelivery(sender_threads, log)
        self._outbox = Outbox()
        # Whether this step's outbox went to delivery: after that, a failure must not send it again.
        self._handed_over = False
        self._waiting: collections.deque[GenerationRequest] = collections.deque()
        # Index i is the sequence in the decoder's slot i.
        self._running: list[_Running] = []
        # Taken off the queue, prompt pass under way: neither waiting nor running yet.
        self._starting = 0
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._last_queue_check = 0.0
        self._last_state = BatchState(0, 0)
        self.steps = 0
        self.loop_failures = 0

    # -- callers' side -------------------------------------------------------

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request; InvalidInputError for bad values, QueueFull at capacity."""
        request.params.validate()
        validate_prompt(
            request.prompt,
            request.params.max_new_tokens,
            self.decoder.n_positions,
            self.decoder.vocab_size,
        )
        with self._wake:
            if self._closing:
                raise QueueFull("the model is unloading")
            busy = len(self._running) + self._starting
            free_slots = max(0, self.limits.max_sequences - busy)
            if len(self._waiting) >= self.limits.max_queued + free_slots:
                raise QueueFull(
                    f"{busy} sequences are generating (max_sequences "
                    f"{self.limits.max_sequences}) and {len(self._waiting)} requests are waiting "
                    f"(max_queued_requests {self.limits.max_queued}); retry later"
                )
            self._waiting.append(request)
            self._wake.notify()

    def start(self, name: str = "gpt2-batcher") -> None:
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the loop; running and queued requests finish as UNLOADING."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._outbox = Outbox()
        self._finish_all(FinishReason.UNLOADING)
        self._delivery.deliver(self._outbox)
        self._delivery.close()

    @property
    def state(self) -> BatchState:
        return BatchState(len(self._running), len(self._waiting))

    # -- the loop --------------------------------------------------------------

    def _loop(self) -> None:
        while self._wait_for_work():
            try:
                self.step()
            except Exception as error:  # noqa: BLE001 - the loop must outlive any one step
                self._recover(error)

    def _wait_for_work(self) -> bool:
        """Blocks until there is something to do; False once the batcher is closing."""
        with self._wake:
            while not (self._closing or self._waiting or self._running):
                self._wake.wait()
            return not self._closing

    def step(self) -> None:
        """One iteration: cancellations, admissions (with first tokens), one decode step."""
        self._outbox = Outbox()
        self._handed_over = False
        self._drop_failed()
        self._drop_cancelled()
        self._admit()
        if self._running:
            self._decode()
        self._handed_over = True
        self._delivery.deliver(self._outbox)
        self._report_state()

    def _recover(self, error: Exception) -> None:
        """After a step failed: every running and queued request ends FAILED, the batch
        starts empty. Logged and counted; nothing here may raise, or the loop would die.

        The decoder's cache needs no clearing: a slot's positions are written (by its
        prompt pass, then each decode step) before any step reads them.
        """
        self.loop_failures += 1
        running, queued = len(self._running), len(self._waiting)
        self._safely(
            self._log,
            f"decode loop step failed: ending {running} running and {queued} queued requests "
            "and starting again with an empty batch",
            error,
        )
        # Endings the failed step had decided on still go out, before the failures.
        outbox = Outbox() if self._handed_over else self._outbox
        self._outbox = outbox
        self._fail_everything(error)
        try:
            self._delivery.deliver(outbox)
        except Exception as failure:  # noqa: BLE001 - the callers must still hear of it
            self._safely(self._log, "delivering the failed requests' endings failed", failure)
            self._finish_inline(outbox)
        if self._on_loop_failure is not None:
            self._safely(self._on_loop_failure)
        self._safely(self._report_state)

    def _fail_everything(self, error: Exception) -> None:
        """Empties the batch and the queue, each request ending FAILED (no decoder work:
        the decoder may be what failed)."""
        running, self._running, self._reserved = self._running, [], 0
        with self._wake:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for sink in [r.request.sink for r in running] + [r.sink for r in waiting]:
            self._outbox.finish(sink, FinishReason.FAILED, error)

    def _finish_inline(self, outbox: Outbox) -> None:
        """The endings of ``outbox``, sent from this thread (delivery itself failed)."""
        for sink, reason, error in outbox.endings:
            try:
                sink.finish(reason, error)
            except Exception as failure:  # noqa: BLE001 - the next sink must still finish
                self._safely(self._log, f"ending a stream ({reason.value}) failed", failure)

    def _safely(self, call: Callable[..., None], *args: object) -> None:
        """Runs a callback of the recovery; its own failure goes to Python's logging."""
        try:
            call(*args)
        except Exception as failure:  # noqa: BLE001 - recovery must finish whatever fails
            log_error("a decode loop recovery callback failed", failure)

    def _drop_failed(self) -> None:
        for running in list(self._running):
            error = self._delivery.take_failure(running.request.sink)
            if error is None:
                continue
            # A send fails once the caller has gone: that is a cancellation, not a fault
            # (the sink asks afresh after a failed send, whatever its check interval).
            if running.request.sink.cancelled():
                self._leave(running, FinishReason.CANCELLED)
            else:
                self._leave(running, FinishReason.FAILED, error)

    def _drop_cancelled(self) -> None:
        for running in [r for r in self._running if r.request.sink.cancelled()]:
            self._leave(running, FinishReason.CANCELLED)
        now = time.monotonic()
        if now - self._last_queue_check < QUEUED_CANCEL_CHECK_S:
            return
        self._last_queue_check = now
        with self._wake:
            waiting = list(self._waiting)
        cancelled = [r for r in waiting if r.sink.cancelled()]
        with self._wake:
            for request in cancelled:
                self._waiting.remove(request)
        for request in cancelled:
            self._outbox.finish(request.sink, FinishReason.CANCELLED)

    def _admit(self) -> None:
        while len(self._running) < self.limits.max_sequences:
            with self._wake:
                if not self._waiting:
                    return
                request = self._waiting[0]
                reserved = len(request.prompt) + request.params.max_new_tokens
                if self._reserved + reserved > self.limits.max_total_tokens:
                    return  # in order: the head waits for room, the rest behind it
                self._waiting.popleft()
                self._starting += 1
            try:
                self._start(request, reserved)
            finally:
                with self._wake:
                    self._starting -= 1

    def _start(self, request: GenerationRequest, reserved: int) -> None:
        try:
            sampler = SamplerState.start(
                request.params,
                request.prompt,
                self.decoder.vocab_size,
                self.decoder.device,
                self.watermark,
            )
            logits = self.decoder.prefill(len(self._running), request.prompt)
            (token,) = pick_tokens(logits.unsqueeze(0), [sampler])
        except Exception as error:  # noqa: BLE001 - one request failing must not stop the loop
            self._outbox.finish(request.sink, FinishReason.FAILED, error)
            return
        running = _Running(request, reserved, sampler, length=len(request.prompt), last_token=token)
        self._running.append(running)
        self._reserved += reserved
        self._deliver(running, token, first=True)

    def _decode(self) -> None:
        if self._fault_hook is not None:
            self._fault_hook(self.steps + 1)  # outside the try below: fails the whole step
        batch = list(self._running)
        rows = [DecodeRow(r.length, r.last_token) for r in batch]
        try:
            logits = self.decoder.decode(rows)
            tokens = pick_tokens(logits, [r.sampler for r in batch])
        except Exception as error:  # noqa: BLE001 - fail this batch, keep serving
            for running in batch:
                self._leave(running, FinishReason.FAILED, error)
            return
        self.steps += 1
        for running, token in zip(batch, tokens, strict=True):
            running.length += 1
            running.last_token = token
            self._deliver(running, token)

    def _deliver(self, running: _Running, token: int, first: bool = False) -> None:
        """Send one token; the sequence leaves on end-of-text or its last token."""
        running.generated += 1
        if first:
            self._delivery.emit_now(running.request.sink, token)
        else:
            self._outbox.token(running.request.sink, token)
        if token in self.stop_token_ids:
            self._leave(running, FinishReason.EOS)
        elif running.generated == running.request.params.max_new_tokens:
            self._leave(running, FinishReason.LENGTH)

    def _leave(
        self, running: _Running, reason: FinishReason, error: BaseException | None = None
    ) -> None:
        # Keep the slots dense: the last sequence takes the freed slot.
        slot, last = self._running.index(running), len(self._running) - 1
        if slot != last:
            self.decoder.move(last, slot)
            self._running[slot] = self._running[last]
        self._running.pop()
        self._reserved -= running.reserved
        self._outbox.finish(running.request.sink, reason, error)

    def _finish_all(self, reason: FinishReason) -> None:
        for running in list(self._running):
            self._leave(running, reason)
        with self._wake:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for request in waiting:
            self._outbox.finish(request.sink, reason)

    def _report_state(self) -> None:
        state = self.state
        if state != self._last_state and self._on_state is not None:
            self._on_state(state)
        self._last_state = state


def validate_prompt(
    input_ids: Sequence[int], max_new_tokens: int, n_positions: int, vocab_size: int
) -> None:
    """Raise InvalidInputError unless the prompt and its continuation fit the context window."""
    if len(input_ids) == 0:
        raise InvalidInputError("input_ids must hold at least one token")
    if len(input_ids) > n_positions - 1:
        raise InvalidInputError(
            f"prompt has {len(input_ids)} tokens; the limit is {n_positions - 1} "
            f"(context window {n_positions} tokens)"
        )
    if len(input_ids) + max_new_tokens > n_positions:
        raise InvalidInputError(
            f"prompt ({len(input_ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"context window of {n_positions} tokens"
        )
    if min(input_ids) < 0 or max(input_ids) >= vocab_size:
        raise InvalidInputError(
            f"input_ids must be in [0, {vocab_size}), got {min(input_ids)}..{max(input_ids)}"
        )


@torch.inference_mode()
def generate_one(
    model: GPT2LMHeadModel,
    input_ids: Sequence[int],
    params: SamplingParams,
    stop_token_ids: Collection[int] = frozenset(),
    watermark: GreenList | None = None,
) -> Iterator[int]:
    """One sequence with the batcher's own prefill, decode and sampling, yielded token by token.

    What a single request gets from the batcher, without a thread: the
    in-process reference for the benches and the training tools.
    """
    params.validate()
    n_positions, vocab_size = int(model.config.n_positions), int(model.config.vocab_size)
    validate_prompt(input_ids, params.max_new_tokens, n_positions, vocab_size)
    decoder = PooledGPT2(model, slots=1, capacity=len(input_ids) + params.max_new_tokens)
    sampler = SamplerState.start(params, input_ids, vocab_size, decoder.device, watermark)
    logits = decoder.prefill(0, input_ids).unsqueeze(0)
    length = len(input_ids)
    for generated in range(1, params.max_new_tokens + 1):
        (token,) = pick_tokens(logits, [sampler])
        yield token
        if token in stop_token_ids or generated == params.max_new_tokens:
            return
        logits = decoder.decode([DecodeRow(length, token)])
        length += 1
