"""TranslateVideo: a video file in, the same file translated frame by frame out.

The file arrives in chunks and is spooled to a scratch directory (bounded by the size
limit as it arrives); what it declares is checked before any frame is decoded
(services/common/video.py). Frames then go through the translator ``IN_FLIGHT`` at a
time, so Triton batches them with each other and with other callers' images, and are
encoded in the input's container and codec with their own timestamps, while the audio
packets are copied across untouched. An MP4 is signed with Content Credentials naming
the input as its parent; every frame carries the image watermark. The result streams
back in chunks after the progress messages.

PyAV's objects are only ever touched by one thread at a time: each step is awaited
before the next starts, to its end even when the call is cancelled meanwhile
(:func:`_pyav`).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np
from prometheus_client import Counter

from genmedia.v1 import common_pb2
from genmedia.v1 import image_translation_pb2 as pb
from services.common import video
from services.common.audit import deferred_sha256
from services.common.content_credentials import ContentCredentials, SourceImage
from services.common.errors import GenmediaError, InvalidArgument, ResourceExhausted
from services.image_translation.frames import DRAIN_S, drain_requests
from services.image_translation.stream_metrics import StreamMeter
from services.image_translation.temporal_hold import TemporalHold
from services.image_translation.translator import ImageTranslator

T = TypeVar("T")

IN_FLIGHT = 4
"""Frames in the translator at once (as TranslateFrames)."""
CHUNK_BYTES = 1024 * 1024
"""Size of each chunk of the translated file sent back."""
PROGRESS_EVERY_S = 0.5
"""Progress messages are sent at most this often (and after the last frame)."""
ENCODER_OPTIONS = {
    "libx264": {"crf": "18", "preset": "veryfast"},
    "libx265": {"crf": "20", "preset": "veryfast"},
    "libvpx": {"crf": "10", "b": "2M", "deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"crf": "24", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    "libsvtav1": {"crf": "28", "preset": "12"},
    "mpeg4": {"qscale": "3"},
}
"""Quality close to visually lossless at real-time speed: the watermark is a few grey
levels deep and must survive the encoder."""

video_files_translated = Counter(
    "genmedia_video_files_translated_total",
    "Video files TranslateVideo finished, by container.",
    ("model", "container"),
)


@dataclass
class VideoCall:
    """One TranslateVideo call."""

    translator: ImageTranslator
    request_id: str
    time_remaining: Callable[[], float | None]
    limits: video.VideoLimits
    megapixels: float = 0.0
    """What the frames translated so far came to (charged to the key)."""

    async def translate(
        self, requests: AsyncIterator[pb.TranslateVideoRequest]
    ) -> AsyncIterator[pb.TranslateVideoResponse]:
        try:
            async for response in self._translate(requests):
                yield response
        except GenmediaError:
            # As TranslateFrames: a caller still sending gets this status, not INTERNAL.
            await drain_requests(None, requests, DRAIN_S)
            raise

    async def _translate(
        self, requests: AsyncIterator[pb.TranslateVideoRequest]
    ) -> AsyncIterator[pb.TranslateVideoResponse]:
        config = await self._config(requests)
        with tempfile.TemporaryDirectory(prefix="genmedia-video-") as scratch:
            source = Path(scratch) / "input"
            target = Path(scratch) / "output"
            await self._receive(requests, source)
            container = await _pyav(video.open_video, source)
            try:
                info = await _pyav(video.probe, container, self.limits)
                yield self._first(pb.TranslateVideoResponse(
                    progress=pb.VideoProgress(frames_total=info.frames_declared)
                ))  # fmt: skip
                frames = 0
                hold = TemporalHold(config.hold_still_below)
                async for frames in self._frames(config.model, container, info, target, hold):
                    yield pb.TranslateVideoResponse(
                        progress=pb.VideoProgress(
                            frames_done=frames,
                            frames_total=max(frames, info.frames_declared),
                            megapixels=self.megapixels,
                        )
                    )
            finally:
                await _pyav(container.close)
            if frames == 0:
                raise InvalidArgument("the video holds no frames that decode")
            provenance = await self.translator.provenance(config.model, self.request_id)
            data = await asyncio.to_thread(self._signed, source, target, info, provenance)
        for start in range(0, len(data), CHUNK_BYTES):
            yield pb.TranslateVideoResponse(chunk=data[start : start + CHUNK_BYTES])
        yield pb.TranslateVideoResponse(summary=self._summary(data, info, frames, provenance))
        video_files_translated.labels(
            self.translator.triton_model(config.model), info.container
        ).inc()

    def _first(self, response: pb.TranslateVideoResponse) -> pb.TranslateVideoResponse:
        response.request_id = self.request_id
        return response

    async def _config(self, requests: AsyncIterator[pb.TranslateVideoRequest]) -> pb.VideoConfig:
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("item") != "config":
            raise InvalidArgument(
                "the first message of TranslateVideo must be config (model); the file's "
                "chunks come after it"
            )
        await self.translator.check(first.config.model, common_pb2.IMAGE_FORMAT_PNG, 0)
        if first.config.hold_still_below > 255:
            raise InvalidArgument(
                f"hold_still_below is {first.config.hold_still_below}; it counts pixel "
                "levels, 0-255 (0: no hold)"
            )
        return first.config

    async def _receive(self, requests: AsyncIterator[pb.TranslateVideoRequest], path: Path) -> None:
        """Spools the chunks to ``path``, refusing the file once it passes the size limit."""
        received = 0
        with path.open("wb") as spool:
            async for request in requests:
                if request.WhichOneof("item") != "chunk":
                    raise InvalidArgument(
                        "each message after the first must carry the next chunk of the file"
                    )
                received += len(request.chunk)
                if received > self.limits.max_bytes:
                    raise ResourceExhausted(
                        f"the video is over {self.limits.max_bytes} bytes (the server's "
                        "limit, GENMEDIA_VIDEO_MAX_BYTES)"
                    )
                spool.write(request.chunk)
        if received == 0:
            raise InvalidArgument("no video was sent: stream the file's bytes as chunks")

    async def _frames(
        self,
        direction: str,
        container: Any,
        info: video.VideoInfo,
        target: Path,
        hold: TemporalHold,
    ) -> AsyncIterator[int]:
        """Translates every frame into ``target``; yields the frames done, now and then."""
        writer = await _pyav(VideoWriter, target, info, container)
        meter = StreamMeter("TranslateVideo", self.translator.triton_model(direction))
        try:
            decoded = video.decoded_frames(
                container, info, self.limits, writer.copy_audio if info.has_audio else None
            )
            done, told = 0, time.monotonic()
            while batch := await _pyav(_take, decoded, IN_FLIGHT):
                translated = await asyncio.gather(
                    *(self._frame(direction, pixels, meter) for _, pixels in batch)
                )
                await _pyav(writer.write, batch, translated, hold)
                done += len(batch)
                self.megapixels += len(batch) * info.width * info.height / 1e6
                if time.monotonic() - told >= PROGRESS_EVERY_S:
                    told = time.monotonic()
                    yield done
            await _pyav(writer.close)
            yield done
        finally:
            meter.close()
            writer.abandon()

    async def _frame(self, direction: str, pixels: np.ndarray, meter: StreamMeter) -> np.ndarray:
        started = time.perf_counter()
        translated = await self.translator.translate_pixels(
            direction, pixels, self.request_id, self.time_remaining()
        )
        meter.frame_done(time.perf_counter() - started)
        return translated

    def _signed(
        self, source: Path, target: Path, info: video.VideoInfo, provenance: common_pb2.Provenance
    ) -> bytes:
        data = target.read_bytes()
        credentials: ContentCredentials | None = self.translator.credentials
        if info.mime is None or credentials is None:
            return data
        parent = SourceImage(source.read_bytes(), info.mime)
        return credentials.sign(data, info.mime, provenance, parent, what="video")

    def _summary(
        self, data: bytes, info: video.VideoInfo, frames: int, provenance: common_pb2.Provenance
    ) -> pb.VideoSummary:
        self.translator.audit.record(
            self.request_id,
            provenance.model,
            provenance.model_version,
            parameters={
                "direction": provenance.model,
                "container": info.container,
                "codec": info.codec,
                "width": info.width,
                "height": info.height,
                "frames": frames,
            },
            outputs=[{"sha256": deferred_sha256(data), "bytes": len(data)}],
            content_credentials=info.mime is not None,
            watermark="every frame",
        )
        return pb.VideoSummary(
            frames=frames,
            width=info.width,
            height=info.height,
            frame_rate=float(info.frame_rate),
            duration_seconds=info.duration_s,
            container=info.container,
            codec=info.codec,
            audio_copied=info.has_audio,
            content_credentials=info.mime is not None,
            provenance=provenance,
            bytes=len(data),
        )


async def _pyav(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a thread, awaited to its end even if the call is cancelled
    meanwhile: the cancellation goes on once the thread has let go of PyAV's objects. (A
    container closed by the cleanup while a thread still decodes from it, or an output
    closed while a thread encodes into it, crashes the whole process.)"""
    step = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(step)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await step
        raise


def _take(frames: Iterator[Any], count: int) -> list[tuple[Any, np.ndarray]]:
    """The next ``count`` frames (fewer at the end) with their RGB pixels."""
    batch = []
    for frame in frames:
        batch.append((frame, video.rgb(frame)))
        if len(batch) == count:
            break
    return batch


class VideoWriter:
    """The output file: the input's container family and codec, its frame times, its audio."""

    def __init__(self, path: Path, info: video.VideoInfo, source: Any) -> None:
        self._out = av.open(str(path), "w", format=info.container)
        try:
            encoder = video.ENCODERS[info.codec]
            self._video = self._out.add_stream(
                encoder, rate=info.frame_rate, options=ENCODER_OPTIONS.get(encoder, {})
            )
            self._video.width, self._video.height = info.width, info.height
            self._video.pix_fmt = video.OUTPUT_PIXEL_FORMAT
            # The input's time base: every frame keeps its own timestamp (variable rates too).
            self._video.codec_context.time_base = source.streams.video[0].time_base
            self._audio = (
                self._out.add_stream_from_template(source.streams.audio[0])
                if info.has_audio
                else None
            )
        except BaseException:
            self._out.close()
            raise
        self._closed = False
        self._last_pts = -1

    def copy_audio(self, packet: Any) -> None:
        packet.stream = self._audio
        self._out.mux(packet)

    def write(
        self,
        sources: list[tuple[Any, np.ndarray]],
        translated: list[np.ndarray],
        hold: TemporalHold,
    ) -> None:
        """Encodes each source frame's translation, in order, through the temporal hold."""
        for (source, pixels), output in zip(sources, translated, strict=True):
            frame = av.VideoFrame.from_ndarray(hold(pixels, output), format="rgb24")
            # Encoders need rising timestamps; a file may have none, or repeat one.
            pts = source.pts if source.pts is not None else self._last_pts + 1
            self._last_pts = pts = max(pts, self._last_pts + 1)
            frame.pts, frame.time_base = pts, self._video.codec_context.time_base
            self._out.mux(self._video.encode(frame))

    def close(self) -> None:
        self._out.mux(self._video.encode(None))
        self._closed = True
        self._out.close()

    def abandon(self) -> None:
        """Closes the file if the call ended before :meth:`close` (its bytes are dropped)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._out.close()
