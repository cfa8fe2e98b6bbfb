"""Video files through PyAV (FFmpeg): what a file declares, checked against limits before
any frame is decoded, and its frames read within those limits.

A video file comes from the caller, so nothing it says is trusted: its container, codec,
size, duration and frame count are checked from the headers first, and again as frames
are decoded (a header can lie). Every refusal is an InvalidArgument that names the limit
or what was wrong; FFmpeg's own errors never escape as anything else.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import av.error
import numpy as np

from genmedia_shared.media_types import MP4_MIME
from services.common.errors import InvalidArgument

CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "webm"}
"""FFmpeg's demuxers taken, and the family each file is written back in."""
ENCODERS = {
    "h264": "libx264",
    "hevc": "libx265",
    "mpeg4": "mpeg4",
    "vp8": "libvpx",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
}
"""Video codecs taken (as FFmpeg's decoders name them) and the encoder that writes each
back."""
WEBM_CODECS = {"vp8", "vp9", "av1"}
"""What WebM may hold; the same codecs elsewhere in Matroska are written back as .mkv."""
OUTPUT_PIXEL_FORMAT = "yuv420p"
"""What every player decodes."""


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 64 * 1024 * 1024
    max_seconds: float = 120.0
    max_frame_pixels: int = 1920 * 1088
    max_frames: int = 3600

    def check_size(self, width: int, height: int) -> None:
        if width < 1 or height < 1:
            raise InvalidArgument(f"video frames are {width}x{height}; no picture to translate")
        if width * height > self.max_frame_pixels:
            raise InvalidArgument(
                f"video frames are {width}x{height} ({width * height} pixels); at most "
                f"{self.max_frame_pixels} pixels a frame (1080p)"
            )


DEFAULT_VIDEO_LIMITS = VideoLimits()


@dataclass(frozen=True)
class VideoInfo:
    """What a video file declares, once it passed the limits."""

    container: str
    """The family it is written back in: "mp4", "webm" or "matroska"."""
    codec: str
    width: int
    height: int
    frame_rate: Fraction
    duration_s: float
    frames_declared: int
    """Its frame count, or duration x frame rate; 0 when it says neither."""
    has_audio: bool

    @property
    def mime(self) -> str | None:
        """The MIME type C2PA signs it as; None where C2PA has no binding (WebM, Matroska)."""
        return MP4_MIME if self.container == "mp4" else None


def open_video(source: Path | BinaryIO) -> Any:
    """Opens a caller's file (a path, or bytes in a file object) with PyAV; anything FFmpeg
    cannot read is an InvalidArgument."""
    try:
        return av.open(
            str(source) if isinstance(source, Path) else source, "r", metadata_errors="ignore"
        )
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"the file is not a video FFmpeg can read ({_reason(exc)})") from None


def probe(container: Any, limits: VideoLimits) -> VideoInfo:
    """Checks what an open file declares against ``limits``; raises InvalidArgument naming
    the first thing refused."""
    family = CONTAINERS.get(container.format.name)
    if family is None:
        raise InvalidArgument(
            f"the container is {container.format.long_name or container.format.name}; "
            "send MP4/MOV or WebM/MKV"
        )
    if not container.streams.video:
        raise InvalidArgument("the file has no video track")
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    if codec not in ENCODERS:
        raise InvalidArgument(
            f"the video codec is {codec}; send one of {', '.join(sorted(ENCODERS))}"
        )
    limits.check_size(stream.codec_context.width, stream.codec_context.height)
    rate = stream.average_rate or stream.guessed_rate
    if not rate or rate <= 0:
        raise InvalidArgument("the video declares no frame rate")
    duration_s = _duration_s(container, stream)
    if not math.isfinite(duration_s) or duration_s > limits.max_seconds:
        raise InvalidArgument(
            f"the video lasts {duration_s:.1f} s; at most {limits.max_seconds:g} s"
        )
    declared = stream.frames or round(duration_s * float(rate))
    if declared > limits.max_frames:
        raise InvalidArgument(f"the video declares {declared} frames; at most {limits.max_frames}")
    if family == "webm" and codec not in WEBM_CODECS:
        family = "matroska"
    return VideoInfo(
        container=family,
        codec=codec,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        frame_rate=Fraction(rate),
        duration_s=duration_s,
        frames_declared=int(declared),
        has_audio=bool(container.streams.audio),
    )


def _duration_s(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def decoded_frames(
    container: Any, info: VideoInfo, limits: VideoLimits, audio: Any | None = None
) -> Iterator[Any]:
    """The video track's frames, in order, each checked against what the file declared and
    the limits; the audio track's packets, when ``audio`` (a callable) is given, handed to
    it as they are read."""
    video = container.streams.video[0]
    streams = [video, *container.streams.audio[:1]] if audio is not None else [video]
    count = 0
    try:
        for packet in container.demux(*streams):
            if packet.stream.type == "audio":
                if packet.dts is not None:
                    audio(packet)
                continue
            for frame in packet.decode():
                count += 1
                if count > limits.max_frames:
                    raise InvalidArgument(
                        f"the video holds more than {limits.max_frames} frames (the limit)"
                    )
                if (frame.width, frame.height) != (info.width, info.height):
                    raise InvalidArgument(
                        f"frame {count - 1} is {frame.width}x{frame.height}; the video "
                        f"declares {info.width}x{info.height}"
                    )
                if frame.time is not None and frame.time > limits.max_seconds:
                    raise InvalidArgument(
                        f"frame {count - 1} is at {frame.time:.1f} s; at most "
                        f"{limits.max_seconds:g} s"
                    )
                yield frame
    except av.error.FFmpegError as exc:
        raise InvalidArgument(
            f"the video is truncated or corrupt after {count} frames ({_reason(exc)})"
        ) from None
    if video.frames and count < video.frames:
        raise InvalidArgument(
            f"the video is truncated: {count} of the {video.frames} frames its index lists decode"
        )


def rgb(frame: Any) -> np.ndarray:
    """A decoded frame as [H, W, 3] uint8 RGB."""
    return frame.to_ndarray(format="rgb24")


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__
