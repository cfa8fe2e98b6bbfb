"""The asyncio SDK (AsyncGenmediaClient) through the real gateway: frames and videos as async
iterators, from lists or async sources, with the sync client's errors, and a caller that
leaves early ends its call at the service."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from genmedia.v1 import common_pb2
from services.client.async_sdk import AsyncGenmediaClient
from services.client.async_sdk import file_chunks as async_file_chunks
from services.client.sdk import GenmediaClient, GenmediaError, file_chunks
from services.common.registry import GATEWAY, IMAGE_TRANSLATION
from services.launcher.stack import Stack
from tests.integration.conftest import metric_value, scrape
from tools.video_files import describe, moving_gradient, write_video

pytestmark = pytest.mark.integration

MODEL = "horse2zebra"
FRAMES = 12
VIDEO_SIDE, VIDEO_FRAMES, RATE = 128, 15, 15
CHUNK = 4 * 1024


def png(index: int, side: int = 32) -> bytes:
    out = io.BytesIO()
    Image.fromarray(moving_gradient(index, side, side)).save(out, format="PNG")
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture
def target(stack: Stack) -> str:
    return stack.ports.address(GATEWAY)


@pytest.mark.parametrize("source", ["list", "async generator"])
async def test_frames_come_back_in_order_as_the_sync_client_translates_them(
    target: str, source: str
) -> None:
    frames = [png(index) for index in range(FRAMES)]

    async def produced() -> AsyncIterator[bytes]:
        for frame in frames:
            await asyncio.sleep(0.01)  # frames that arrive over time, as a camera's do
            yield frame

    async with AsyncGenmediaClient(target) as client:
        sent = frames if source == "list" else produced()
        answers = [answer async for answer in client.translate_frames(sent, MODEL)]
    with GenmediaClient(target) as sync_client:
        expected = list(sync_client.translate_frames(frames, MODEL))

    assert [answer.index for answer in answers] == list(range(FRAMES))
    assert len(expected) == FRAMES
    for answer, alike in zip(answers, expected, strict=True):
        assert np.array_equal(decoded(answer.image.data), decoded(alike.image.data))
        assert (answer.image.width, answer.image.height) == (32, 32)
        assert answer.image.format == common_pb2.IMAGE_FORMAT_PNG
        assert answer.image.provenance.synthetic
    # The frames differ, so the order above is the frames' own.
    assert not np.array_equal(decoded(answers[0].image.data), decoded(answers[1].image.data))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = [moving_gradient(index, VIDEO_SIDE, VIDEO_SIDE) for index in range(VIDEO_FRAMES)]
    path = write_video(tmp_path_factory.mktemp("sdk-video") / "in.mp4", frames, RATE)
    assert path.stat().st_size > 3 * CHUNK, "the file should go in several chunks"
    return path


@pytest.mark.parametrize("reader", [async_file_chunks, file_chunks], ids=["async", "sync"])
async def test_a_video_comes_back_as_progress_then_its_chunks_then_its_summary(
    target: str,
    video: Path,
    tmp_path: Path,
    reader: Callable[[Path, int], Iterable[bytes] | AsyncIterable[bytes]],
) -> None:
    chunks = reader(video, CHUNK)
    kinds, data, progress, summaries = [], bytearray(), [], []
    async with AsyncGenmediaClient(target, timeout_s=120) as client:
        async for answer in client.translate_video(chunks, MODEL):
            kind = answer.WhichOneof("item")
            kinds.append(kind)
            if kind == "progress":
                progress.append(answer.progress)
            elif kind == "chunk":
                data += answer.chunk
            else:
                summaries.append(answer.summary)

    order = ["progress", "chunk", "summary"]
    assert kinds == sorted(kinds, key=order.index), kinds
    assert kinds[0] == "progress" and "chunk" in kinds and kinds[-1] == "summary"
    (summary,) = summaries
    assert progress[-1].frames_done == VIDEO_FRAMES
    assert summary.bytes == len(data) and summary.provenance.synthetic
    out = tmp_path / "out.mp4"
    out.write_bytes(data)
    assert describe(out)["frames"] == describe(video)["frames"] == summary.frames == VIDEO_FRAMES
    assert (summary.width, summary.height) == (VIDEO_SIDE, VIDEO_SIDE)


async def test_errors_raise_genmedia_error_with_the_status_and_message(target: str) -> None:
    async with AsyncGenmediaClient(target) as client:
        with pytest.raises(GenmediaError) as error:
            async for _ in client.translate_frames([png(0)], "nowhere"):
                pass
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown model 'nowhere'" in error.value.details

        with pytest.raises(GenmediaError) as error:
            async for _ in client.translate_video([b"x"], "nowhere"):
                pass
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown model" in error.value.details

        with pytest.raises(GenmediaError) as error:
            async for _ in client.translate_frames([png(0), b"not an image"], MODEL):
                pass
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "frame 1: " in error.value.details


async def test_an_exception_from_the_frames_source_is_raised_as_it_is(target: str) -> None:
    class Unplugged(Exception):
        pass

    async def camera() -> AsyncIterator[bytes]:
        yield png(0)
        raise Unplugged("the camera went away")

    async with AsyncGenmediaClient(target) as client:
        with pytest.raises(Unplugged, match="the camera went away"):
            async for _ in client.translate_frames(camera(), MODEL):
                pass


async def frame_streams_open(stack: Stack) -> float:
    """TranslateFrames streams the image-translation service has open now."""
    port = stack.ports.processes[IMAGE_TRANSLATION.name].metrics
    text = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    return metric_value(text, "genmedia_frame_streams_open", rpc="TranslateFrames")


async def frame_streams_open_once_settled(stack: Stack) -> float:
    """As :func:`frame_streams_open`, after waiting up to 10 s for it to reach 0."""
    for _ in range(100):
        if (count := await frame_streams_open(stack)) == 0:
            break
        await asyncio.sleep(0.1)
    return count


async def endless_camera(closed: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    """Three frames, then waits for more that never come: only a cancel ends it."""
    try:
        for index in range(3):
            yield png(index)
        await asyncio.Event().wait()
    finally:
        if closed is not None:
            closed.set()


@pytest.mark.parametrize("leave", ["aclosing", "break"])
async def test_leaving_early_cancels_the_call_at_the_service(
    stack: Stack, target: str, leave: str
) -> None:
    assert await frame_streams_open_once_settled(stack) == 0, "an earlier stream is still open"
    source_closed = asyncio.Event()
    async with AsyncGenmediaClient(target) as client:
        if leave == "aclosing":
            answers = client.translate_frames(endless_camera(source_closed), MODEL)
            async with contextlib.aclosing(answers):
                async for answer in answers:
                    assert answer.index == 0
                    assert await frame_streams_open(stack) == 1
                    break
        else:
            async for answer in client.translate_frames(endless_camera(source_closed), MODEL):
                assert answer.index == 0
                assert await frame_streams_open(stack) == 1
                break
        # The client is still open: only leaving the loop can have ended the call.
        await asyncio.wait_for(source_closed.wait(), timeout=10)
        assert await frame_streams_open_once_settled(stack) == 0, "the stream is still open"


async def test_a_cancelled_task_stays_cancelled_and_a_closed_client_ends_its_calls(
    stack: Stack, target: str
) -> None:
    first = asyncio.Event()

    async def consume(client: AsyncGenmediaClient) -> None:
        async for _ in client.translate_frames(endless_camera(), MODEL):
            first.set()

    async with AsyncGenmediaClient(target) as client:
        task = asyncio.create_task(consume(client))
        await asyncio.wait_for(first.wait(), timeout=30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await frame_streams_open_once_settled(stack) == 0

        with pytest.raises(GenmediaError) as error:
            async for _ in client.translate_frames(endless_camera(), MODEL):
                await client.close()
        assert error.value.code == grpc.StatusCode.CANCELLED
    assert await frame_streams_open_once_settled(stack) == 0
