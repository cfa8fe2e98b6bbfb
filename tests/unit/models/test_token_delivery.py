"""Token delivery off the decode loop: order within each sequence, finish last, failures kept."""

from __future__ import annotations

import threading
import time

import pytest

from genmedia_models.continuous_batching import FinishReason
from genmedia_models.token_delivery import Outbox, TokenDelivery


class SlowSink:
    """Records what it receives; each emit sleeps a little, as a Triton round trip waits."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.events: list[object] = []
        self.fail_at = fail_at
        self.threads: set[str] = set()

    def emit(self, token: int) -> None:
        if token == self.fail_at:
            raise ConnectionError("client gone")
        time.sleep(0.001)
        self.threads.add(threading.current_thread().name)
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
