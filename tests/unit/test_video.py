"""Video files in-process: what a file declares against the limits, frames checked as they
decode, and the writer's timestamps; real files made by FFmpeg (tools/video_files.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from genmedia_shared.media_types import sniff_video_mime
from services.common import image_watermark, video
from services.common.errors import InvalidArgument
from services.gateway.video_check import FRAMES_CHECKED, FRAMES_DECODED, watermark_over_frames
from services.image_translation.temporal_hold import TemporalHold
from services.image_translation.video import VideoWriter
from tools.video_files import describe, moving_gradient, reencode, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = [moving_gradient(index, 64, 48) for index in range(12)]
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, rate=12)


def test_sniffing_tells_mp4_and_webm_from_anything_else(clip: Path, tmp_path: Path) -> None:
    webm = write_video(tmp_path / "c.webm", [moving_gradient(0, 32, 32)], 1, "webm", "libvpx")
    assert sniff_video_mime(clip.read_bytes()) == "video/mp4"
    assert sniff_video_mime(webm.read_bytes()) == "video/webm"
    assert sniff_video_mime(b"\x89PNG\r\n\x1a\n" + bytes(16)) is None
    assert sniff_video_mime(b"") is None


def test_a_file_within_the_limits_is_described_as_it_is(clip: Path) -> None:
    with video.open_video(clip) as container:
        info = video.probe(container, video.VideoLimits())
        assert (info.container, info.codec, info.width, info.height) == ("mp4", "h264", 64, 48)
        assert info.frame_rate == 12 and info.frames_declared == 12 and info.has_audio
        assert info.duration_s == pytest.approx(1.0) and info.mime == "video/mp4"
        frames = list(video.decoded_frames(container, info, video.VideoLimits()))
    assert len(frames) == 12 and video.rgb(frames[0]).shape == (48, 64, 3)


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (video.VideoLimits(max_frame_pixels=64 * 47), "at most 3008 pixels a frame"),
        (video.VideoLimits(max_seconds=0.5), "lasts 1.0 s; at most 0.5 s"),
        (video.VideoLimits(max_frames=11), "declares 12 frames; at most 11"),
    ],
)
def test_each_declared_figure_over_its_limit_is_refused_by_name(
    clip: Path, limits: video.VideoLimits, expected: str
) -> None:
    with video.open_video(clip) as container, pytest.raises(InvalidArgument, match=expected):
        video.probe(container, limits)


def test_frames_are_checked_again_as_they_decode(clip: Path) -> None:
    """A header can lie: the decoded count, times and sizes are held to the limits too."""
    with video.open_video(clip) as container:
        info = video.probe(container, video.VideoLimits())
        with pytest.raises(InvalidArgument, match="more than 5 frames"):
            list(video.decoded_frames(container, info, video.VideoLimits(max_frames=5)))
    with video.open_video(clip) as container:
        lying = video.VideoInfo(**{**info.__dict__, "width": 32})
        with pytest.raises(InvalidArgument, match="frame 0 is 64x48; the video declares 32x48"):
            list(video.decoded_frames(container, lying, video.VideoLimits()))


def test_the_writer_gives_the_encoder_rising_timestamps_whatever_the_file_says(
    clip: Path, tmp_path: Path
) -> None:
    with video.open_video(clip) as container:
        info = video.probe(container, video.VideoLimits())
        writer = VideoWriter(tmp_path / "out.mp4", info, container)
        pixels = [moving_gradient(index, 64, 48) for index in range(4)]
        stamps = [SimpleNamespace(pts=pts) for pts in (None, 0, 0, 5)]  # none, repeated
        writer.write(list(zip(stamps, pixels, strict=True)), pixels, TemporalHold(0))
        writer.close()
    assert describe(tmp_path / "out.mp4")["frames"] == 4


def test_the_watermark_is_read_over_the_frames_together(tmp_path: Path) -> None:
    key = image_watermark.DEVELOPMENT_KEY
    frames = [image_watermark.embed(moving_gradient(i, 128, 128), key) for i in range(20)]
    marked = write_video(tmp_path / "marked.mp4", frames, options={"crf": "18"})
    low = reencode(marked, tmp_path / "low.mp4", bitrate=100_000)
    plain = write_video(tmp_path / "plain.mp4", [moving_gradient(i, 128, 128) for i in range(20)])
    for path, detected in ((marked, True), (low, True), (plain, False)):
        mark, frames_read = watermark_over_frames(path.read_bytes(), key)
        assert mark is not None and mark.detected is detected, (path.name, mark.score)
        assert frames_read == 20
    # Small frames carry no mark to read; long files are read at a stride.
    small = write_video(tmp_path / "small.mp4", [moving_gradient(i, 32, 32) for i in range(3)])
    assert watermark_over_frames(small.read_bytes(), key) == (None, 0)
    many = write_video(tmp_path / "many.mp4", [moving_gradient(i, 64, 64) for i in range(100)])
    stride = -(-100 // FRAMES_CHECKED)  # 3: frames 0, 3, ... 99
    assert watermark_over_frames(many.read_bytes(), key)[1] == len(range(0, 100, stride))
    # A long file is read no further than its first FRAMES_DECODED frames.
    long = write_video(tmp_path / "long.mp4", [moving_gradient(i, 64, 64) for i in range(650)])
    stride = -(-FRAMES_DECODED // FRAMES_CHECKED)  # 13: frames 0, 13, ... 598
    assert watermark_over_frames(long.read_bytes(), key)[1] == len(range(0, FRAMES_DECODED, stride))
