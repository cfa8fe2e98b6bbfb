"""TranslateVideo and VerifyVideo through the real stack: real video files (made by FFmpeg
through PyAV) in, translated files out with their frames, rates, durations and audio kept,
signed and watermarked; every limit and hostile file refused by name."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from genmedia.v1 import image_translation_pb2 as pb
from genmedia.v1 import image_translation_pb2_grpc as pb_grpc
from genmedia.v1 import provenance_pb2, provenance_pb2_grpc
from services.common.registry import GATEWAY, IMAGE_TRANSLATION, ProcessSpec
from services.common.usage import USAGE_HEADER, Usage
from services.launcher.stack import Stack
from tests.integration.conftest import metric_samples, scrape
from tools.video_files import (
    describe,
    frames_of,
    mean_change,
    moving_gradient,
    noisy_still_with_a_mover,
    reencode,
    write_video,
)

pytestmark = pytest.mark.integration

MODEL = "horse2zebra"
SIDE = 128
"""Large enough for the image watermark (64 pixels a side at least)."""
FRAMES, RATE = 30, 15


def requests(
    data: bytes, model: str = MODEL, chunk: int = 64 * 1024, hold: int = 0
) -> Iterator[pb.TranslateVideoRequest]:
    yield pb.TranslateVideoRequest(config=pb.VideoConfig(model=model, hold_still_below=hold))
    for start in range(0, len(data), chunk):
        yield pb.TranslateVideoRequest(chunk=data[start : start + chunk])


def translated(
    answers: Iterable[pb.TranslateVideoResponse],
) -> tuple[bytes, list[pb.VideoProgress], pb.VideoSummary]:
    data, progress, summary = bytearray(), [], None
    for answer in answers:
        kind = answer.WhichOneof("item")
        if kind == "progress":
            progress.append(answer.progress)
        elif kind == "chunk":
            data += answer.chunk
        else:
            summary = answer.summary
    assert summary is not None, "the stream ended without its summary"
    return bytes(data), progress, summary


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    frames = [moving_gradient(index, SIDE, SIDE) for index in range(FRAMES)]
    return {
        "mp4": write_video(folder / "in.mp4", frames, RATE),
        "webm": write_video(folder / "in.webm", frames, RATE, "webm", "libvpx-vp9"),
    }


@pytest.fixture
def stub(connect: Callable[[ProcessSpec], grpc.Channel]) -> pb_grpc.ImageTranslationServiceStub:
    return pb_grpc.ImageTranslationServiceStub(connect(IMAGE_TRANSLATION))


@pytest.mark.parametrize(
    ("kind", "codec", "audio"), [("mp4", "h264", "aac"), ("webm", "vp9", "opus")]
)
def test_a_video_comes_back_translated_with_its_frames_rate_duration_and_audio(
    stub, videos: dict[str, Path], tmp_path: Path, kind: str, codec: str, audio: str
) -> None:
    source = videos[kind]
    call = stub.TranslateVideo(requests(source.read_bytes()), timeout=120)
    data, progress, summary = translated(call)
    out = tmp_path / f"out.{kind}"
    out.write_bytes(data)
    before, after = describe(source), describe(out)
    assert after["frames"] == before["frames"] == summary.frames == FRAMES
    assert after["rate"] == before["rate"] == RATE and summary.frame_rate == RATE
    assert after["duration_s"] == pytest.approx(before["duration_s"], abs=0.1)
    assert (after["width"], after["height"]) == (SIDE, SIDE) == (summary.width, summary.height)
    assert after["codec"] == codec == summary.codec and after["container"] == before["container"]
    # The audio track is copied packet for packet, not re-encoded.
    assert after["audio"] == audio and after["audio_packets"] == before["audio_packets"]
    assert summary.audio_copied and summary.bytes == len(data)
    assert summary.content_credentials == (kind == "mp4")
    assert summary.provenance.synthetic and summary.provenance.model == f"cyclegan_{MODEL}"
    assert progress[0].frames_done == 0 and progress[0].frames_total == FRAMES
    assert progress[-1].frames_done == FRAMES
    # The usage as it goes: each progress message's running total of megapixels.
    for step in progress:
        assert step.megapixels == pytest.approx(step.frames_done * SIDE * SIDE / 1e6)
    trailer = dict(call.trailing_metadata())
    assert Usage.parse(trailer[USAGE_HEADER]).megapixels == pytest.approx(
        FRAMES * SIDE * SIDE / 1e6
    )


def test_the_temporal_hold_stills_the_flicker_and_leaves_the_moving_part_translated(
    stub, tmp_path: Path
) -> None:
    source = write_video(
        tmp_path / "still.mp4", [noisy_still_with_a_mover(i, SIDE) for i in range(20)], RATE
    )
    outputs = {}
    for hold in (0, 6):
        data, _, summary = translated(
            stub.TranslateVideo(requests(source.read_bytes(), hold=hold), timeout=120)
        )
        assert summary.frames == 20
        (tmp_path / f"held-{hold}.mp4").write_bytes(data)
        outputs[hold] = frames_of(tmp_path / f"held-{hold}.mp4")
    # The still part: every row but the square's band (and the model's reach around it).
    still = np.r_[0 : SIDE // 3 - 8, SIDE // 3 + 24 : SIDE]
    flicker = {hold: mean_change([f[still] for f in frames]) for hold, frames in outputs.items()}
    assert flicker[6] < 0.5 * flicker[0], flicker
    # Held or not, the frames are the same translation to within a few levels (2.6 here)...
    apart = [
        np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()
        for a, b in zip(outputs[0], outputs[6], strict=True)
    ]
    assert np.mean(apart) < 4, apart
    # ...and the square moves in the held output as in the fresh one (26 levels here).
    square = np.s_[SIDE // 3 : SIDE // 3 + 16, 40:56]  # where it is in frame 10

    def moved(frames: list[np.ndarray]) -> float:
        return float(np.abs(frames[10][square].astype(np.int16) - frames[0][square]).mean())

    assert moved(outputs[0]) > 10 and moved(outputs[6]) > 0.8 * moved(outputs[0])
    with pytest.raises(grpc.RpcError) as error:
        translated(stub.TranslateVideo(requests(source.read_bytes(), hold=300), timeout=60))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "hold_still_below is 300" in error.value.details()


def verify(gateway: grpc.Channel, data: bytes) -> provenance_pb2.VerifyVideoResponse:
    return provenance_pb2_grpc.ProvenanceServiceStub(gateway).VerifyVideo(
        provenance_pb2.VerifyVideoRequest(data=data), timeout=60
    )


def test_verify_video_finds_credentials_and_the_watermark_even_after_reencoding_and_trimming(
    gateway: grpc.Channel, videos: dict[str, Path], tmp_path: Path
) -> None:
    stub = pb_grpc.ImageTranslationServiceStub(gateway)
    data, _, _ = translated(stub.TranslateVideo(requests(videos["mp4"].read_bytes()), timeout=120))
    served = tmp_path / "served.mp4"
    served.write_bytes(data)

    checked = verify(gateway, data)
    assert checked.verdict == provenance_pb2.VERDICT_SYNTHETIC, checked.explanation
    credentials = checked.content_credentials
    assert credentials.present and credentials.validation_state in ("Valid", "Trusted")
    assert list(credentials.actions) == ["c2pa.opened", "c2pa.edited"]
    assert credentials.provenance.model == f"cyclegan_{MODEL}"
    assert checked.watermark.detected and checked.frames_checked == FRAMES

    # A platform's re-encode at a low bitrate, and a trimmed clip: the credentials are gone,
    # the watermark is still read over the frames.
    for edited in (
        reencode(served, tmp_path / "low.mp4", bitrate=150_000),
        reencode(served, tmp_path / "trim.mp4", bitrate=400_000, first=8, last=24),
    ):
        checked = verify(gateway, edited.read_bytes())
        assert not checked.content_credentials.present
        assert checked.watermark.detected, (edited.name, checked.watermark.score)
        assert checked.verdict == provenance_pb2.VERDICT_SYNTHETIC
        assert "no Content Credentials" in checked.explanation

    # The untranslated input has neither.
    checked = verify(gateway, videos["mp4"].read_bytes())
    assert checked.verdict == provenance_pb2.VERDICT_NO_EVIDENCE
    assert not checked.watermark.detected and checked.watermark.score < checked.watermark.threshold


def test_verify_video_refuses_what_is_not_a_video(gateway: grpc.Channel) -> None:
    for data, expected in (
        (b"", "data is empty"),
        (b"\x89PNG\r\n\x1a\n", "not an MP4/MOV or WebM"),
    ):
        with pytest.raises(grpc.RpcError) as error:
            verify(gateway, data)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in error.value.details()


def hostile_files(folder: Path) -> Iterator[tuple[str, bytes, str]]:
    """(name, file, what the refusal must say): the catalogue of docs/RELIABILITY.md."""
    good = write_video(folder / "good.mp4", [moving_gradient(i, 64, 64) for i in range(10)])
    data = good.read_bytes()
    yield "random bytes", bytes(range(256)) * 40, "not a video FFmpeg can read"
    yield "truncated, index last", data[: len(data) // 2], "not a video FFmpeg can read"
    streaming = write_video(
        folder / "streaming.mp4", [moving_gradient(i, 64, 64) for i in range(30)], faststart=True
    ).read_bytes()
    yield "truncated, index first", streaming[: len(streaming) * 2 // 3], "truncated"
    yield "an image", _png(), "container is"
    big = write_video(
        folder / "big.mp4", [moving_gradient(i, 2048, 1152) for i in range(2)], codec="mpeg4",
        audio=False,
    )  # fmt: skip
    yield "frames over 1080p", big.read_bytes(), "at most 2088960 pixels a frame"
    long = write_video(
        folder / "long.mp4", [moving_gradient(i, 16, 16) for i in range(125)], rate=1,
        audio=False,
    )  # fmt: skip
    yield "over the duration limit", long.read_bytes(), "at most 120 s"
    many = write_video(
        folder / "many.mp4", [moving_gradient(i, 16, 16) for i in range(3700)], rate=120,
        audio=False,
    )  # fmt: skip
    yield "over the frame limit", many.read_bytes(), "at most 3600"
    mjpeg = write_video(
        folder / "mjpeg.mov", [moving_gradient(i, 64, 64) for i in range(4)], container="mov",
        codec="mjpeg", audio=False, pixel_format="yuvj420p",
    )  # fmt: skip
    yield "another codec", mjpeg.read_bytes(), "the video codec is mjpeg"
    gif = write_video(
        folder / "anim.gif", [moving_gradient(i, 64, 64) for i in range(4)], container="gif",
        codec="gif", audio=False, pixel_format="rgb8",
    )  # fmt: skip
    yield "another container", gif.read_bytes(), "send MP4/MOV or WebM/MKV"


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(moving_gradient(0, 64, 64)).save(out, "PNG")
    return out.getvalue()


def test_every_hostile_file_and_limit_is_refused_by_name(stub, tmp_path: Path) -> None:
    for name, data, expected in hostile_files(tmp_path):
        with pytest.raises(grpc.RpcError) as error:
            translated(stub.TranslateVideo(requests(data), timeout=60))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error.value.details())
        assert expected in error.value.details(), (name, error.value.details())


def test_the_size_limit_and_the_stream_shape_are_enforced(stub) -> None:
    def oversized() -> Iterator[pb.TranslateVideoRequest]:
        yield pb.TranslateVideoRequest(config=pb.VideoConfig(model=MODEL))
        for _ in range(65):
            yield pb.TranslateVideoRequest(chunk=bytes(1024 * 1024))

    cases = [
        (oversized(), grpc.StatusCode.RESOURCE_EXHAUSTED, "over 67108864 bytes"),
        (iter([pb.TranslateVideoRequest(chunk=b"x")]), grpc.StatusCode.INVALID_ARGUMENT,
         "first message of TranslateVideo must be config"),
        (requests(b""), grpc.StatusCode.INVALID_ARGUMENT, "no video was sent"),
        (requests(b"x", model="nowhere"), grpc.StatusCode.INVALID_ARGUMENT, "unknown model"),
        (iter([*requests(b"x"), pb.TranslateVideoRequest(config=pb.VideoConfig())]),
         grpc.StatusCode.INVALID_ARGUMENT, "must carry the next chunk"),
    ]  # fmt: skip
    for stream, code, expected in cases:
        with pytest.raises(grpc.RpcError) as error:
            translated(stub.TranslateVideo(stream, timeout=60))
        assert error.value.code() == code, error.value.details()
        assert expected in error.value.details()


def test_the_cli_translates_a_file_with_progress_and_verifies_it(
    stack: Stack, videos: dict[str, Path], tmp_path: Path
) -> None:
    genmedia = Path(sys.executable).with_name("genmedia")
    target = stack.ports.address(GATEWAY)
    out = tmp_path / "out.mp4"
    done = subprocess.run(
        [str(genmedia), "--target", target, "video", "translate", str(videos["mp4"]),
         "--model", MODEL, "--out", str(out), "--hold-still-below", "6"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{FRAMES} frames {SIDE}x{SIDE} at {RATE} fps, mp4/h264, audio copied" in done.stdout
    assert f"{FRAMES}/{FRAMES}" in done.stderr  # the progress bar reached the end
    assert describe(out)["frames"] == FRAMES
    checked = subprocess.run(
        [str(genmedia), "--target", target, "verify", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    # Held pixels carry the watermark too: it is found over every frame read.
    assert ": SYNTHETIC:" in checked.stdout and f"over {FRAMES} frames" in checked.stdout


def test_video_metrics_count_frames_and_streams(stack: Stack, videos: dict[str, Path]) -> None:
    url = f"http://127.0.0.1:{stack.ports.processes[IMAGE_TRANSLATION.name].metrics}/metrics"
    model = f"cyclegan_{MODEL}"

    def counted() -> float:
        return sum(
            metric_samples(
                scrape(url), "genmedia_frames_translated_total", rpc="TranslateVideo", model=model
            )
        )

    before = counted()
    with grpc.insecure_channel(stack.ports.address(IMAGE_TRANSLATION)) as channel:
        stub = pb_grpc.ImageTranslationServiceStub(channel)
        translated(stub.TranslateVideo(requests(videos["mp4"].read_bytes()), timeout=120))
    text = scrape(url)
    assert counted() == before + FRAMES
    assert metric_samples(text, "genmedia_frame_streams_open", rpc="TranslateVideo") == [0.0]
    assert metric_samples(text, "genmedia_frame_seconds_count", rpc="TranslateVideo")[0] >= FRAMES
    assert (
        metric_samples(text, "genmedia_stream_frames_per_second_count", rpc="TranslateVideo")[0]
        >= 1
    )


def test_the_readme_demo_video_is_made_through_the_stack(stack: Stack, tmp_path: Path) -> None:
    """tools/demo_video.py against the running stack: the GIF holds input | output pairs and
    the translated MP4 verifies as synthetic (the test stack serves horse2zebra, not the demo
    pack's direction, so it is asked for its own)."""
    from PIL import Image

    from tools import demo_video

    frames = demo_video.digit_frames()
    assert len(frames) == 10 * (demo_video.HOLD + demo_video.FADE)
    assert frames[0].shape == (demo_video.SIDE, demo_video.SIDE, 3)
    checked = demo_video.make(stack.ports.address(GATEWAY), tmp_path / "demo.gif", model=MODEL)
    assert checked.verdict == provenance_pb2.VERDICT_SYNTHETIC, checked.explanation
    with Image.open(tmp_path / "demo.gif") as gif:
        assert gif.size == (2 * demo_video.SIDE, demo_video.SIDE)
        # Held digits repeat frames, which Pillow merges: the total time is what counts.
        shown_ms = 0
        for index in range(gif.n_frames):
            gif.seek(index)
            shown_ms += gif.info["duration"]
    assert shown_ms == len(frames) * 1000 // demo_video.RATE
