"""Small real video files for tests, the bench and the demo: frames given as pixels,
encoded by FFmpeg through PyAV, with a sine tone as the audio track if asked."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 48_000
AUDIO = {"mp4": "aac", "mov": "aac", "webm": "libopus", "matroska": "libopus"}


def moving_gradient(index: int, width: int = 96, height: int = 96) -> np.ndarray:
    """A frame of a gradient that slides a few pixels a frame, as a video's frames do."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [(x * 3 + index * 4) % 256, (y * 3) % 256, (x + y + index * 2) % 256], -1
    ).astype(np.uint8)


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    rate: Fraction | int = 15,
    container: str = "mp4",
    codec: str = "libx264",
    audio: bool = True,
    options: dict[str, str] | None = None,
    pixel_format: str = "yuv420p",
    faststart: bool = False,
) -> Path:
    """Encodes ``frames`` ([H, W, 3] uint8, all one size) at ``rate`` frames per second; with
    ``audio``, a 440 Hz tone as long as the video."""
    # faststart: the index before the frames, as files made for streaming have it.
    muxer = {"movflags": "+faststart"} if faststart else {}
    out = av.open(str(path), "w", format=container, options=muxer)
    try:
        stream = None
        count = 0
        for pixels in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=rate, options=options or {})
                stream.height, stream.width = pixels.shape[:2]
                stream.pix_fmt = pixel_format
                tone = out.add_stream(AUDIO[container], rate=AUDIO_RATE) if audio else None
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = count
            out.mux(stream.encode(frame))
            count += 1
        if stream is None:
            raise ValueError("no frames to write")
        out.mux(stream.encode(None))
        if tone is not None:
            _write_tone(out, tone, count / Fraction(rate))
    finally:
        out.close()
    return path


def _write_tone(
    out: av.container.OutputContainer, stream: av.AudioStream, seconds: Fraction
) -> None:
    samples = int(AUDIO_RATE * seconds)
    size = stream.codec_context.frame_size or 1024
    pcm = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / AUDIO_RATE)).astype(np.float32)
    for start in range(0, samples - size + 1, size):
        frame = av.AudioFrame.from_ndarray(
            pcm[None, start : start + size], format="flt", layout="mono"
        )
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def reencode(
    source: Path, target: Path, bitrate: int, first: int = 0, last: int | None = None
) -> Path:
    """``source``'s frames ``first``..``last`` re-encoded in H.264 at ``bitrate`` bits/s (what
    a platform does on upload, or someone who trims a clip), without its audio."""
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = [
            frame.to_ndarray(format="rgb24")
            for index, frame in enumerate(container.decode(stream))
            if index >= first and (last is None or index < last)
        ]
    return write_video(
        target, frames, rate, audio=False, options={"b": str(bitrate), "preset": "veryfast"}
    )


def describe(path: Path) -> dict[str, object]:
    """What a file holds: frame count, rate, size, duration, codecs, audio packets."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        facts: dict[str, object] = {
            "container": container.format.name,
            "codec": video.codec_context.name,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "rate": video.average_rate,
            "duration_s": container.duration / av.time_base if container.duration else 0.0,
            "audio": audio.codec_context.name if audio is not None else None,
        }
        facts["frames"] = sum(1 for _ in container.decode(video=0))
    if audio is not None:
        with av.open(str(path)) as container:
            facts["audio_packets"] = [
                bytes(packet)
                for packet in container.demux(container.streams.audio[0])
                if packet.size
            ]
    return facts


def noisy_still_with_a_mover(
    index: int, side: int = 128, seed: int = 7, noise_levels: int = 2
) -> np.ndarray:
    """A still picture with a camera's noise (``noise_levels`` either way, new every frame)
    and a white square sliding across it: the case temporal flicker shows in."""
    y, x = np.mgrid[0:side, 0:side]
    still = np.stack([x * 200 // side + 20, y * 200 // side + 20, (x + y) * 100 // side + 60], -1)
    noise = np.random.default_rng(seed + index).integers(
        -noise_levels, noise_levels + 1, still.shape
    )
    frame = np.clip(still + noise, 0, 255).astype(np.uint8)
    left = (4 * index) % (side - 16)
    frame[side // 3 : side // 3 + 16, left : left + 16] = 255
    return frame


def frames_of(path: Path) -> list[np.ndarray]:
    """Every frame of a file's video track as RGB pixels."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def mean_change(frames: list[np.ndarray]) -> float:
    """Mean absolute difference of consecutive frames, in 0-255 levels: flicker, where the
    picture itself stands still."""
    return float(
        np.mean(
            [
                np.abs(b.astype(np.int16) - a.astype(np.int16)).mean()
                for a, b in itertools.pairwise(frames)
            ]
        )
    )
