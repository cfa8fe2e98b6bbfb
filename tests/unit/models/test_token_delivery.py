"""Token delivery off the decode loop: order within each sequence, finish last, failures kept."""

from __future__ import annotations

import threading
import time

import pytest

from genmedia_models.gpt2.delivery import Outbox, TokenDelivery
from genmedia_models.gpt2.types import FinishReason


class SlowSink:
    """Records what it receives; each emit sleeps a little, as a Triton round trip waits."""

    def __init__(self, fail_at: int | None = None, pause_s: float = 0.001) -> None:
        self.events: list[object] = []
        self.emits: list[list[int]] = []
        self.fail_at = fail_at
        self.pause_s = pause_s
        self.threads: set[str] = set()

    def emit(self, tokens: list[int]) -> None:
        time.sleep(self.pause_s)
        self.threads.add(threading.current_thread().name)
        self.emits.append(list(tokens))
        for token in tokens:
            if token == self.fail_at:
                raise ConnectionError("client gone")
            self.events.append(token)

    def finish(self, reason: FinishReason, error: BaseException | None = None) -> None:
        self.events.append(reason)

    def cancelled(self) -> bool:
        return False


@pytest.mark.parametrize("threads", [0, 4])
def test_every_sink_gets_its_tokens_in_order_and_its_finish_last(threads: int) -> None:
    delivery = TokenDelivery(threads)
    sinks = [SlowSink() for _ in range(8)]
    for step in range(20):
        outbox = Outbox()
        for sink in sinks:
            outbox.token(sink, step)
            if step % 7 == 0:
                outbox.token(sink, step + 1000)  # two tokens for one sink in one step
        if step == 19:
            for sink in sinks:
                outbox.finish(sink, FinishReason.LENGTH)
        delivery.deliver(outbox)
    delivery.close()

    expected = []
    for step in range(20):
        expected += [step, step + 1000] if step % 7 == 0 else [step]
    for sink in sinks:
        assert sink.events == [*expected, FinishReason.LENGTH]
    senders = set().union(*(sink.threads for sink in sinks))
    if threads:
        assert len(senders) > 1 and all(name.startswith("token-send") for name in senders)
    else:
        assert senders == {threading.current_thread().name}


def test_a_failed_emit_is_reported_once_and_forgotten_when_the_sink_ends() -> None:
    delivery = TokenDelivery(2)
    broken, ended = SlowSink(fail_at=3), SlowSink(fail_at=1)
    outbox = Outbox()
    for token in range(5):
        outbox.token(broken, token)
        outbox.token(ended, token)
    outbox.finish(ended, FinishReason.LENGTH)
    delivery.deliver(outbox)
    delivery.drain()

    assert broken.events == [0, 1, 2]  # stops at the failure
    error = delivery.take_failure(broken)
    assert isinstance(error, ConnectionError)
    assert delivery.take_failure(broken) is None
    assert delivery.take_failure(ended) is None  # it ended in that step
    delivery.close()


def test_steps_that_wait_for_a_slow_sender_go_out_together_and_in_order() -> None:
    delivery = TokenDelivery(threads=2)
    slow = SlowSink(pause_s=0.02)
    for step in range(30):  # the loop is far faster than one send
        outbox = Outbox()
        outbox.token(slow, step)
        delivery.deliver(outbox)
    finish = Outbox()
    finish.finish(slow, FinishReason.LENGTH)
    delivery.deliver(finish)
    delivery.close()
    assert slow.events == [*range(30), FinishReason.LENGTH]
    assert len(slow.emits) < 10  # coalesced: one emit carried many steps
    assert max(len(tokens) for tokens in slow.emits) > 1


def test_a_sender_that_keeps_up_sends_every_step_at_once() -> None:
    delivery = TokenDelivery(threads=2)
    sink = SlowSink(pause_s=0.0)
    for step in range(10):
        outbox = Outbox()
        outbox.token(sink, step)
        delivery.deliver(outbox)
        delivery.drain()  # the next step comes after this one went out
    delivery.close()
    assert sink.emits == [[step] for step in range(10)]


def test_a_sink_that_keeps_its_tokens_takes_them_inline_and_ends_after_them() -> None:
    class Keeper(SlowSink):
        keeps_tokens = True

    delivery = TokenDelivery(threads=2)
    keeper, streamer = Keeper(pause_s=0.0), SlowSink(pause_s=0.0)
    for step in range(5):
        outbox = Outbox()
        outbox.token(keeper, step)
        outbox.token(streamer, step)
        if step == 4:
            outbox.finish(keeper, FinishReason.LENGTH)
        delivery.deliver(outbox)
    delivery.close()
    assert keeper.threads == {threading.current_thread().name}  # no hand-off for its tokens
    assert keeper.events == [0, 1, 2, 3, 4, FinishReason.LENGTH]
    assert streamer.events == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("threads", [0, 2])
def test_a_sink_that_fails_to_finish_is_logged_and_the_others_still_finish(threads: int) -> None:
    class BrokenFinish(SlowSink):
        def finish(self, reason: FinishReason, error: BaseException | None = None) -> None:
            raise ConnectionError("stub gone")

    logged: list[tuple[str, BaseException]] = []
    delivery = TokenDelivery(threads, log=lambda message, error: logged.append((message, error)))
    broken, fine = BrokenFinish(pause_s=0.0), SlowSink(pause_s=0.0)
    outbox = Outbox()
    outbox.finish(broken, FinishReason.LENGTH)
    outbox.finish(fine, FinishReason.LENGTH)
    delivery.deliver(outbox)
    delivery.close()

    assert fine.events == [FinishReason.LENGTH]
    ((message, error),) = logged
    assert "ending a stream (length) failed" in message and isinstance(error, ConnectionError)


def test_the_default_log_of_a_failed_finish_has_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenFinish(SlowSink):
        def finish(self, reason: FinishReason, error: BaseException | None = None) -> None:
            raise ConnectionError("stub gone")

    delivery = TokenDelivery(0)
    outbox = Outbox()
    outbox.finish(BrokenFinish(pause_s=0.0), FinishReason.CANCELLED)
    delivery.deliver(outbox)
    (record,) = caplog.records
    assert record.levelname == "ERROR" and record.exc_info is not None
    assert "ConnectionError: stub gone" in record.getMessage()
