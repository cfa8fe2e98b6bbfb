"""Telling video files from images by their first bytes (client and server alike)."""

from __future__ import annotations

MP4_MIME = "video/mp4"
WEBM_MIME = "video/webm"


def sniff_video_mime(data: bytes) -> str | None:
    """``video/mp4`` for an ISO media file (MP4, MOV: an ``ftyp`` box first), ``video/webm``
    for an EBML file (WebM, Matroska); None for anything else."""
    if data[4:8] == b"ftyp":
        return MP4_MIME
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return WEBM_MIME
    return None
