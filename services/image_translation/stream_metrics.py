"""Metrics of frame streams (TranslateFrames, TranslateVideo): frames translated, each
frame's latency, each stream's frames per second, and the streams open."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

RPCS = ("TranslateFrames", "TranslateVideo")

frames_translated = Counter(
    "genmedia_frames_translated_total", "Frames translated in streams.", ("rpc", "model")
)
frame_seconds = Histogram(
    "genmedia_frame_seconds",
    "Time of one frame through the translator (resize, Triton, resize back, watermark).",
    ("rpc",),
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
stream_fps = Histogram(
    "genmedia_stream_frames_per_second",
    "Frames per second of each stream over its life, observed when it ends.",
    ("rpc",),
    buckets=(1, 2, 5, 10, 15, 24, 30, 60, 120, 240, 480),
)
streams_open = Gauge("genmedia_frame_streams_open", "Frame streams open right now.", ("rpc",))

for _rpc in RPCS:  # every series exists from the start, at 0
    frame_seconds.labels(_rpc)
    stream_fps.labels(_rpc)
    streams_open.labels(_rpc)


class StreamMeter:
    """One stream's share of the metrics; :meth:`close` when it ends, however it ends."""

    def __init__(self, rpc: str, model: str) -> None:
        self._rpc, self._frames = rpc, 0
        self._counter = frames_translated.labels(rpc, model)
        self._latency = frame_seconds.labels(rpc)
        self._started = time.monotonic()
        self._closed = False
        streams_open.labels(rpc).inc()

    def frame_done(self, seconds: float) -> None:
        self._frames += 1
        self._counter.inc()
        self._latency.observe(seconds)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        streams_open.labels(self._rpc).dec()
        elapsed = time.monotonic() - self._started
        if self._frames and elapsed > 0:
            stream_fps.labels(self._rpc).observe(self._frames / elapsed)
