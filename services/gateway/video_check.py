"""VerifyVideo's work: a video file's Content Credentials, and genmedia's image watermark
read over its frames together.

Every frame carries the same keyed pattern at the same place, while the picture moves:
the mean of many frames keeps the pattern and averages the picture (and the encoder's
noise) away, so the mark is found after re-encoding at a lower bitrate, where one frame
alone may lose it. Trimming only removes frames. Frames are taken at an even stride over
the file's first FRAMES_DECODED frames, at most ``FRAMES_CHECKED`` of them, each cut to
the detector's window.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from genmedia.v1 import provenance_pb2
from genmedia_shared.media_types import sniff_video_mime
from services.common import image_watermark, video
from services.common.content_credentials import CredentialsReport, read_credentials
from services.common.errors import InvalidArgument

FRAMES_CHECKED = 48
FRAMES_DECODED = 600
"""At most this many frames are decoded (20 s at 30 fps), wherever the file ends: the
mark is in every frame, and an open service must not decode ten minutes of video."""
VERIFY_VIDEO_LIMITS = video.VideoLimits(
    max_bytes=32 * 1024 * 1024, max_seconds=600.0, max_frame_pixels=1920 * 1088,
    max_frames=36_000,
)  # fmt: skip
"""What VerifyVideo decodes: up to 10 minutes of 1080p (the bytes are bounded by the
message limit first)."""
DECODE_BYTES_PER_PIXEL = 16
"""Peak bytes per frame pixel: the decoder's reference frames, one RGB copy, the float sum."""


@dataclass(frozen=True)
class VideoCheck:
    credentials: CredentialsReport
    watermark: provenance_pb2.ImageWatermark | None
    frames_checked: int


def check_mime(data: bytes) -> str:
    if not data:
        raise InvalidArgument("data is empty: send the video file's bytes to verify")
    mime = sniff_video_mime(data)
    if mime is None:
        raise InvalidArgument("data is not an MP4/MOV or WebM/MKV file")
    return mime


def verification_cost(data: bytes, fixed_bytes: int) -> int:
    """Bytes a check takes at its peak: the fixed part, the file, and decoding frames of the
    largest size the limits let through (a larger header is refused before decoding)."""
    return fixed_bytes + len(data) + VERIFY_VIDEO_LIMITS.max_frame_pixels * DECODE_BYTES_PER_PIXEL


def verify_video(data: bytes, mime: str, anchors: str | None, key: str) -> VideoCheck:
    """The whole check of one file (``mime`` from :func:`check_mime`), in one executor thread."""
    credentials = (
        read_credentials(data, anchors, mime)
        if mime == video.MP4_MIME
        else CredentialsReport(present=False)
    )
    try:
        watermark, frames = watermark_over_frames(data, key)
    except InvalidArgument:
        if credentials.present:  # a damaged file still has its credentials reported
            return VideoCheck(credentials, None, 0)
        raise
    return VideoCheck(credentials, watermark, frames)


def watermark_over_frames(
    data: bytes, key: str, limits: video.VideoLimits = VERIFY_VIDEO_LIMITS
) -> tuple[provenance_pb2.ImageWatermark | None, int]:
    """The watermark's score on the mean of up to FRAMES_CHECKED frames spread over the
    file, and how many frames that was (None when no frame is large enough to carry it)."""
    container = video.open_video(io.BytesIO(data))
    try:
        info = video.probe(container, limits)
        if not image_watermark.applies(info.width, info.height):
            return None, 0
        within = min(info.frames_declared, FRAMES_DECODED) or FRAMES_DECODED
        stride = max(1, -(-within // FRAMES_CHECKED))
        total: np.ndarray | None = None
        taken = 0
        for index, frame in enumerate(video.decoded_frames(container, info, limits)):
            if index >= FRAMES_DECODED:
                break
            if index % stride:
                continue
            window = image_watermark.centre_window(video.rgb(frame), image_watermark.WORK_SIDE)
            total = window.astype(np.float32) if total is None else total + window
            taken += 1
            if taken == FRAMES_CHECKED:
                break
    finally:
        container.close()
    if total is None:
        raise InvalidArgument("the video holds no frames that decode")
    found = image_watermark.score(total / taken, key)
    threshold = image_watermark.THRESHOLD
    mark = provenance_pb2.ImageWatermark(
        score=found, threshold=threshold, detected=found >= threshold
    )
    return mark, taken
