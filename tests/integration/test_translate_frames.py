"""TranslateFrames through the real stack, through the gateway and straight to the service:
frames in order, each exactly as TranslateImage translates it, usage charged, and each bad
frame refused by its index."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from genmedia.v1 import common_pb2
from genmedia.v1 import image_translation_pb2 as pb
from genmedia.v1 import image_translation_pb2_grpc as pb_grpc
from services.common.registry import GATEWAY, IMAGE_TRANSLATION, ProcessSpec
from services.common.usage import USAGE_HEADER, Usage
from services.launcher.stack import Stack
from tests.integration.conftest import metric_value, scrape
from tests.integration.processes import open_channel, spawn, write_keys_file

pytestmark = pytest.mark.integration

MODEL = "horse2zebra"


def frame_pixels(index: int, side: int = 32) -> np.ndarray:
    """A moving gradient: every frame different, as a video's are."""
    y, x = np.mgrid[0:side, 0:side]
    return np.stack([(x * 8 + index * 5) % 256, (y * 8) % 256, (x + y + index) % 256], -1).astype(
        np.uint8
    )


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def stream(
    *frames: pb.TranslateFramesRequest, model: str = MODEL
) -> Iterator[pb.TranslateFramesRequest]:
    yield pb.TranslateFramesRequest(config=pb.FrameStreamConfig(model=model))
    yield from frames


@pytest.fixture
def stub(connect: Callable[[ProcessSpec], grpc.Channel]) -> pb_grpc.ImageTranslationServiceStub:
    return pb_grpc.ImageTranslationServiceStub(connect(IMAGE_TRANSLATION))


def test_sixty_frames_come_back_in_order_each_as_translate_image_makes_it(stub) -> None:
    frames = [png(frame_pixels(index)) for index in range(60)]
    call = stub.TranslateFrames(
        stream(*(pb.TranslateFramesRequest(image=frame) for frame in frames)), timeout=120
    )
    answers = list(call)
    assert [answer.index for answer in answers] == list(range(60))
    for index in (0, 17, 59):  # spot checks against the unary path
        alone = stub.TranslateImage(
            pb.TranslateImageRequest(image=frames[index], model=MODEL), timeout=60
        )
        assert np.array_equal(decoded(answers[index].image.data), decoded(alone.image.data))
    for answer in answers:
        assert (answer.image.width, answer.image.height) == (32, 32)
        assert answer.image.format == common_pb2.IMAGE_FORMAT_PNG
        assert answer.image.provenance.synthetic
    # The usage so far, as it goes: each frame's running total.
    assert [answer.megapixels for answer in answers] == pytest.approx(
        [(index + 1) * 32 * 32 / 1e6 for index in range(60)]
    )
    trailer = dict(call.trailing_metadata())
    assert Usage.parse(trailer[USAGE_HEADER]).megapixels == pytest.approx(60 * 32 * 32 / 1e6)


def test_raw_frames_are_translated_as_the_same_pixels_encoded(stub) -> None:
    pixels = frame_pixels(3)
    raw = pb.RawFrame(rgb=pixels.tobytes(), width=32, height=32)
    (from_raw,) = stub.TranslateFrames(stream(pb.TranslateFramesRequest(raw=raw)), timeout=60)
    (from_png,) = stub.TranslateFrames(
        stream(pb.TranslateFramesRequest(image=png(pixels))), timeout=60
    )
    assert np.array_equal(decoded(from_raw.image.data), decoded(from_png.image.data))


def test_raw_output_answers_the_same_pixels_bare_with_their_provenance_beside_them(stub) -> None:
    frames = [frame_pixels(index, side=40) for index in range(6)]
    encoded = list(stub.TranslateFrames(
        stream(*(pb.TranslateFramesRequest(image=png(f)) for f in frames)), timeout=60
    ))  # fmt: skip
    bare = pb.FrameStreamConfig(model=MODEL, raw_output=True)
    requests = [pb.TranslateFramesRequest(config=bare)]
    for index, pixels in enumerate(frames):  # encoded and raw frames, mixed
        requests.append(
            pb.TranslateFramesRequest(image=png(pixels))
            if index % 2
            else pb.TranslateFramesRequest(
                raw=pb.RawFrame(rgb=pixels.tobytes(), width=40, height=40)
            )
        )
    answers = list(stub.TranslateFrames(iter(requests), timeout=60))
    assert [answer.index for answer in answers] == list(range(6))
    for answer, reference in zip(answers, encoded, strict=True):
        assert not answer.HasField("image") and (answer.raw.width, answer.raw.height) == (40, 40)
        pixels = np.frombuffer(answer.raw.rgb, np.uint8).reshape(40, 40, 3)
        assert np.array_equal(pixels, decoded(reference.image.data))
        assert answer.provenance.synthetic
        assert answer.provenance.model == f"cyclegan_{MODEL}"
    assert answers[-1].megapixels == pytest.approx(6 * 40 * 40 / 1e6)
    # Bare frames meet the limits an encoded frame meets when it is decoded.
    tiny = pb.RawFrame(rgb=bytes(4 * 4 * 3), width=4, height=4)
    with pytest.raises(grpc.RpcError) as error:
        list(
            stub.TranslateFrames(
                iter([requests[0], pb.TranslateFramesRequest(raw=tiny)]), timeout=60
            )
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "frame 0: raw frame is 4x4; both sides must be at least 8 pixels" in error.value.details()
    )


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([png(frame_pixels(0)), png(frame_pixels(1)), png(frame_pixels(2, side=48))],
         "frame 2 is 48x48; this stream's frames are 32x32"),
        ([png(frame_pixels(0)), b"not an image"], "frame 1: "),
    ],
)  # fmt: skip
def test_a_bad_frame_ends_the_stream_naming_its_index(
    stub, frames: list[bytes], expected: str
) -> None:
    requests = stream(*(pb.TranslateFramesRequest(image=frame) for frame in frames))
    with pytest.raises(grpc.RpcError) as error:
        list(stub.TranslateFrames(requests, timeout=60))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.value.details()


def test_a_stream_must_open_with_its_config_and_raw_frames_must_fit(stub) -> None:
    with pytest.raises(grpc.RpcError) as error:
        list(
            stub.TranslateFrames(
                iter([pb.TranslateFramesRequest(image=png(frame_pixels(0)))]), timeout=30
            )
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message of TranslateFrames must be config" in error.value.details()
    short = pb.RawFrame(rgb=b"\0" * 10, width=32, height=32)
    with pytest.raises(grpc.RpcError) as error:
        list(stub.TranslateFrames(stream(pb.TranslateFramesRequest(raw=short)), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame 0: raw rgb is 10 bytes" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        list(stub.TranslateFrames(stream(model="nowhere"), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown model 'nowhere'" in error.value.details()


def test_the_cli_translates_a_directory_of_frames_as_one_stream(stack, tmp_path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(12):
        (frames / f"frame-{index:03d}.png").write_bytes(png(frame_pixels(index)))
    genmedia = Path(sys.executable).with_name("genmedia")
    done = subprocess.run(
        [str(genmedia), "--target", stack.ports.address(GATEWAY), "video", "frames", str(frames),
         "--model", MODEL, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = sorted((tmp_path / "out").glob("*.png"))
    assert [path.name for path in written] == [f"frame-{index:03d}.png" for index in range(12)]
    assert "12 frames" in done.stdout


def test_a_message_that_does_not_decode_is_refused_by_its_position(
    connect: Callable[[ProcessSpec], grpc.Channel],
) -> None:
    call = connect(IMAGE_TRANSLATION).stream_stream(
        "/genmedia.v1.ImageTranslationService/TranslateFrames"
    )
    config = pb.TranslateFramesRequest(config=pb.FrameStreamConfig(model=MODEL))
    with pytest.raises(grpc.RpcError) as error:
        list(call(iter([config.SerializeToString(), b"\xff\xff\xff"]), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message 1 of the stream" in error.value.details()


def test_a_caller_that_waits_for_each_answer_is_answered_frame_by_frame(stub) -> None:
    answered = threading.Event()

    def interactive() -> Iterator[pb.TranslateFramesRequest]:
        yield pb.TranslateFramesRequest(config=pb.FrameStreamConfig(model=MODEL))
        for index in range(3):
            answered.clear()
            yield pb.TranslateFramesRequest(image=png(frame_pixels(index)))
            assert answered.wait(timeout=20), f"frame {index} was held back"

    indexes = []
    for answer in stub.TranslateFrames(interactive(), timeout=60):
        indexes.append(answer.index)
        answered.set()
    assert indexes == [0, 1, 2]


def test_a_long_stream_is_charged_as_it_goes_and_ended_when_its_budget_runs_out(
    stack: Stack, tmp_path: Path
) -> None:
    # 30 frames of 32x32 spend the budget; the gateway charges every 0.05 s.
    budget = 30 * 32 * 32 / 1e6
    keys = write_keys_file(tmp_path / "keys.json", {"frames": {"daily": {"megapixels": budget}}})
    spawned = spawn(
        stack,
        GATEWAY,
        tmp_path,
        GENMEDIA_AUTH_MODE="api-keys",
        GENMEDIA_API_KEYS_FILE=str(tmp_path / "keys.json"),
        GENMEDIA_STREAM_CHARGE_INTERVAL_S="0.05",
    )
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(spawned.stop)
        spawned.wait_health()
        channel = cleanup.enter_context(open_channel(spawned.address))
        stub = pb_grpc.ImageTranslationServiceStub(channel)
        frames = (pb.TranslateFramesRequest(image=png(frame_pixels(i % 60))) for i in range(3000))
        answered = []
        with pytest.raises(grpc.RpcError) as error:
            for answer in stub.TranslateFrames(
                stream(*frames), metadata=keys["frames"].metadata, timeout=120
            ):
                answered.append(answer)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "daily megapixels budget of key 'frames' ran out during this stream" in (
            error.value.details()
        )
        assert 30 <= len(answered) < 3000
        # Every frame answered is charged; the next stream is refused at its start.
        charged = metric_value(
            scrape(spawned.metrics_url), "genmedia_gateway_units_total", key="frames",
            unit="megapixels",
        )  # fmt: skip
        assert charged == pytest.approx(answered[-1].megapixels, rel=0.05)
        with pytest.raises(grpc.RpcError) as error:
            list(stub.TranslateFrames(stream(), metadata=keys["frames"].metadata, timeout=30))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "budget of key 'frames' is spent" in error.value.details()
