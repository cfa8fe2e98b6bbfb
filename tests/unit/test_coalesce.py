"""Streams that coalesce when their consumer falls behind."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from genmedia.v1 import text_generation_pb2 as text_pb
from services.common import api
from services.common.coalesce import coalesced
from services.common.registry import TEXT_GENERATION
from services.gateway.coalescing import merges

# The merge the registry gives StreamText.
merge_text_messages = merges()[api.path(api.method_of(TEXT_GENERATION, "StreamText"))]


async def numbers(
    count: int, pause_s: float, closed: list[str] | None = None
) -> AsyncIterator[list[int]]:
    try:
        for number in range(count):
            await asyncio.sleep(pause_s)
            yield [number]
    finally:
        if closed is not None:
            closed.append("closed")


def concatenate(items: list[list[int]]) -> list[int]:
    return [number for item in items for number in item]


async def test_a_consumer_that_keeps_up_gets_every_item_alone() -> None:
    received = [item async for item in coalesced(numbers(10, 0.005), concatenate)]
    assert received == [[number] for number in range(10)]


async def test_a_slow_consumer_gets_what_waited_merged_and_in_order() -> None:
    received = []
    async for item in coalesced(numbers(40, 0.001), concatenate):
        received.append(item)
        await asyncio.sleep(0.02)  # a slow caller
    assert concatenate(received) == list(range(40))
    assert len(received) < 20 and max(len(item) for item in received) > 1


async def test_the_sources_error_comes_after_the_items_before_it() -> None:
    async def failing() -> AsyncIterator[list[int]]:
        yield [1]
        yield [2]
        raise ConnectionError("upstream gone")

    received = []
    with pytest.raises(ConnectionError, match="upstream gone"):
        async for item in coalesced(failing(), concatenate):
            received.append(item)
    assert concatenate(received) == [1, 2]


async def test_closing_early_closes_the_source() -> None:
    closed: list[str] = []
    stream = coalesced(numbers(1000, 0.001, closed), concatenate)
    async with contextlib.aclosing(stream):
        async for _ in stream:
            break
    assert closed == ["closed"]


async def test_a_cancelled_consumer_stops_the_reader() -> None:
    closed: list[str] = []

    async def consume() -> None:
        async for _ in coalesced(numbers(1000, 0.01, closed), concatenate):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.01)
    assert closed == ["closed"]


def test_stream_text_messages_merge_into_one_with_the_last_ones_ending() -> None:
    messages = [
        text_pb.StreamTextResponse(text="Deep ", generated_tokens=2),
        text_pb.StreamTextResponse(text="fakes", generated_tokens=3),
        text_pb.StreamTextResponse(
            text=".", generated_tokens=4, finish_reason=text_pb.FINISH_REASON_LENGTH,
            usage=text_pb.TextUsage(generated_tokens=4),
        ),
    ]  # fmt: skip
    merged = text_pb.StreamTextResponse.FromString(
        merge_text_messages([m.SerializeToString() for m in messages])
    )
    assert merged.text == "Deep fakes." and merged.generated_tokens == 4
    assert merged.finish_reason == text_pb.FINISH_REASON_LENGTH
    assert merged.usage.generated_tokens == 4


async def test_a_consumer_that_keeps_up_costs_no_reading_task() -> None:
    tasks_before = len(asyncio.all_tasks())
    counts = []
    async for _ in coalesced(numbers(20, 0.001), concatenate):
        counts.append(len(asyncio.all_tasks()))
    assert max(counts) == tasks_before  # read in place: no task, no queue
