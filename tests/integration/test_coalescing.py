"""A stream's text is the same whichever way it was cut (issue #18).

GenerateText gets its tokens from the model in one response; StreamText gets
one message per token while every hop keeps up, and several tokens a message
when one falls behind (16 streams at once on two cores). The text must not
depend on it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc

pytestmark = pytest.mark.integration

SEEDS = range(16)


def request(seed: int) -> text_pb.GenerateTextRequest:
    return text_pb.GenerateTextRequest(prompt="Returns the", max_new_tokens=48, seed=seed)


def streamed(stub: text_grpc.TextGenerationServiceStub, seed: int) -> tuple[str, int, int]:
    """The stream's text, its message count and its generated tokens."""
    messages = list(stub.StreamText(request(seed), timeout=120))
    counts = [message.generated_tokens for message in messages]
    assert counts == sorted(counts), "generated_tokens is cumulative"
    return "".join(m.text for m in messages), len(messages), messages[-1].usage.generated_tokens


def test_a_streams_text_is_the_same_whichever_way_it_was_cut(gateway: grpc.Channel) -> None:
    stub = text_grpc.TextGenerationServiceStub(gateway)
    whole = {seed: stub.GenerateText(request(seed), timeout=120) for seed in SEEDS}
    alone = {seed: streamed(stub, seed) for seed in SEEDS[:2]}
    with ThreadPoolExecutor(len(SEEDS)) as pool:  # all at once: the hops fall behind
        together = dict(zip(SEEDS, pool.map(lambda seed: streamed(stub, seed), SEEDS), strict=True))
    for seed in SEEDS:
        text, messages, tokens = together[seed]
        assert text == whole[seed].text, seed
        assert tokens == whole[seed].usage.generated_tokens
        assert messages <= tokens + 1  # never more messages than tokens (+ the final one)
    for seed, (text, _, _) in alone.items():
        assert text == whole[seed].text
    cut = sum(tokens + 1 - messages for _, messages, tokens in together.values())
    print(f"\n16 streams at once: {cut} fewer messages than one per token")
