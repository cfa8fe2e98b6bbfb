"""An asyncio client (grpc.aio) for the gateway's streaming calls: TranslateFrames and
TranslateVideo as async iterators. Options, key checks and errors are those of
:class:`services.client.sdk.GenmediaClient`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from services.client.sdk import (
    CHANNEL_OPTIONS,
    DEFAULT_TARGET,
    IMAGE_FORMATS,
    VIDEO_CHUNK_BYTES,
    GenmediaError,
    call_metadata,
    genmedia_error,
)

Item = TypeVar("Item")
Request = TypeVar("Request")


class AsyncGenmediaClient:
    """One grpc.aio channel to a genmedia endpoint; create it inside the event loop that
    uses it, and use it as ``async with``. Closing it ends every call still open."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        timeout_s: float | None = 60.0,
        metadata: Sequence[tuple[str, str]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        api_key: str | None = None,
        insecure: bool = False,
    ) -> None:
        """As :class:`~services.client.sdk.GenmediaClient`: ``api_key`` goes as
        ``authorization: Bearer <key>``, over TLS with ``credentials``, and without them only
        to a loopback target unless ``insecure`` (raises CleartextKeyError)."""
        self._metadata = call_metadata(target, metadata, credentials, api_key, insecure)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            if credentials
            else grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._timeout_s = timeout_s
        self.translation = trans_grpc.ImageTranslationServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncGenmediaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def translate_frames(
        self,
        frames: Iterable[bytes] | AsyncIterable[bytes],
        model: str,
        image_format: str = "png",
        raw_output: bool = False,
    ) -> AsyncIterator[trans_pb.TranslateFramesResponse]:
        """Translates encoded frames as one stream; yields each translated frame, in order,
        as it comes. ``frames`` is read only as fast as the server takes them.
        ``raw_output``: each answer carries bare RGB (``raw``) and its ``provenance``."""
        config = trans_pb.FrameStreamConfig(
            model=model, format=IMAGE_FORMATS[image_format], raw_output=raw_output
        )
        return self._bidi(
            self.translation.TranslateFrames,
            trans_pb.TranslateFramesRequest(config=config),
            lambda frame: trans_pb.TranslateFramesRequest(image=frame),
            frames,
        )

    def translate_video(
        self,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        model: str,
        hold_still_below: int = 0,
    ) -> AsyncIterator[trans_pb.TranslateVideoResponse]:
        """Translates a video file sent as ``chunks`` (see :func:`file_chunks`); yields
        progress messages, then the translated file's chunks, then its summary.
        ``hold_still_below``: the temporal hold against flicker, in levels (0: off)."""
        config = trans_pb.VideoConfig(model=model, hold_still_below=hold_still_below)
        return self._bidi(
            self.translation.TranslateVideo,
            trans_pb.TranslateVideoRequest(config=config),
            lambda chunk: trans_pb.TranslateVideoRequest(chunk=chunk),
            chunks,
        )

    async def _bidi(
        self,
        method: grpc.aio.StreamStreamMultiCallable,
        first: Request,
        request: Callable[[Item], Request],
        items: Iterable[Item] | AsyncIterable[Item],
    ) -> AsyncIterator[Any]:
        """A bidirectional call's answers as they come: ``first``, then one request per item.
        Closing the iterator (``aclose``, or leaving an ``async for`` over it) cancels the
        call; an exception raised by ``items`` ends the call and is raised here as it is."""
        failed: list[Exception] = []

        async def requests() -> AsyncIterator[Request]:
            yield first
            try:
                async for item in _each(items):
                    yield request(item)
            except Exception as error:  # grpc.aio only logs it and cancels the call
                failed.append(error)
                raise

        call = method(requests(), timeout=self._timeout_s, metadata=self._metadata)
        try:
            while (answer := await call.read()) is not grpc.aio.EOF:
                yield answer
        except grpc.RpcError as error:
            raise genmedia_error(error) from None
        except asyncio.CancelledError:
            # grpc.aio says CancelledError for a call cancelled on this side: by a failed
            # source or a closed channel, which are not this task being cancelled.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            if failed:
                raise failed[0] from None
            raise GenmediaError(grpc.StatusCode.CANCELLED, "cancelled on this side") from None
        finally:
            call.cancel()


async def _each(items: Iterable[Item] | AsyncIterable[Item]) -> AsyncIterator[Item]:
    """The items of a sync or an async iterable (a sync one is read on the event loop)."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def file_chunks(path: Path, size: int = VIDEO_CHUNK_BYTES) -> AsyncIterator[bytes]:
    """A file's bytes in pieces, each read in a worker thread as it is sent."""
    file = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(file.read, size):
            yield chunk
    finally:
        file.close()
