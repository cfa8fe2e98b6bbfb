"""Cancelling a frame stream (TranslateFrames, TranslateVideo), or letting its deadline pass,
ends its work in Triton at once (issue #22): proven with Triton's own count of the model's
inferences, the service's gauge of open streams and (TranslateVideo) its scratch directory,
through the gateway and straight to the service. The service must also outlive the calls
that were stopped.

The module runs its own stack (Triton included): tritonserver 2.51 was seen to crash under
these cancels on a loaded machine, and a crash must not take the session's stack down with
it. The image-translation service called is one more, started with its own TMPDIR (where
TranslateVideo spools each file, watched by the tests) and PYTHONFAULTHANDLER (a crash
leaves its threads' stacks in its log), with a gateway in front of it."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from PIL import Image

from genmedia.v1 import image_translation_pb2 as pb
from genmedia.v1 import image_translation_pb2_grpc as pb_grpc
from services.common.registry import GATEWAY, IMAGE_TRANSLATION
from services.launcher.stack import Stack
from tests.integration.conftest import (
    TEST_STACK_ENV,
    metric_value,
    running_stack,
    scrape,
    weights_dir,
)
from tests.integration.processes import Spawned, spawn
from tools.video_files import moving_gradient, write_video

pytestmark = pytest.mark.integration

MODEL = "horse2zebra"
TRITON_MODEL = f"cyclegan_{MODEL}"
IN_FLIGHT = 4
"""Frames of one stream in the translator at once (frames.py, video.py)."""
FRAMES_OFFERED = 5000
"""What an endless TranslateFrames caller would send: minutes of work at the test weights'
rate on two CPU cores (about 20 frames a second). gRPC takes most of them from the caller
within a second (they wait in its buffers), so a stream that went on would find them."""
ANSWERS_READ = 5
VIDEO_FRAMES, VIDEO_RATE = 240, 30
VIDEO_WIDTH, VIDEO_HEIGHT = 640, 360
"""8 s of video, about 15 s of translation here: still translating when it is stopped. Frames
this size keep PyAV busy (decoding, encoding) for a fair share of each frame's time, so a
call stopped at a random moment often stops while a PyAV step runs in its thread."""
LATE_INFERENCES = 3 * IN_FLIGHT
"""Inferences Triton may still finish once the caller has gone: those already queued or
running (the stream's IN_FLIGHT), and those the service sent while the news travelled."""
STOPPED_WITHIN_S = 3.0
"""Triton's count stops moving this soon after the caller has gone (a loaded machine)."""
DEADLINE_S = 3.0
"""Long enough for a loaded machine to translate some frames first (mid-stream), short
enough that the stream is nowhere near done."""
DEADLINE_SLACK_S = 1.0
STAGGERED_CANCELS = 8
STAGGER_S = 0.05
"""Cancels 0, 0.05 ... 0.35 s after a progress message: a batch of IN_FLIGHT frames takes
about 0.25 s here, so they land all over the frame loop (decoding, Triton, encoding)."""
ROUTES = ("gateway", "direct")


@dataclass
class Translation:
    """The module's own image-translation service, a gateway in front of it, and the stack
    whose Triton they call."""

    stack: Stack
    service: Spawned
    gateway: Spawned
    scratch: Path
    """The service's TMPDIR."""
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def stub(self, route: str) -> pb_grpc.ImageTranslationServiceStub:
        if route not in self.channels:
            target = self.gateway if route == "gateway" else self.service
            self.channels[route] = grpc.insecure_channel(target.address)
        return pb_grpc.ImageTranslationServiceStub(self.channels[route])

    def assert_alive(self) -> None:
        """The service outlived the calls that were stopped (a crash is in its log)."""
        code = self.service.popen.poll()
        if code is not None:
            log = self.service.log_text()
            crash = log[log.find("Fatal Python error") :] if "Fatal Python error" in log else log
            raise AssertionError(f"the service exited with {code}:\n{crash[:3000]}")

    def streams_open(self, rpc: str) -> float:
        self.assert_alive()
        return metric_value(
            scrape(self.service.metrics_url), "genmedia_frame_streams_open", rpc=rpc
        )

    def wait_streams_closed(self, rpc: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (open_now := self.streams_open(rpc)) != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert open_now == 0, f"{open_now:g} {rpc} streams still open {timeout_s:g} s later"

    def spooled(self) -> list[Path]:
        """TranslateVideo's scratch directories (one per call under way)."""
        return sorted(self.scratch.glob("genmedia-video-*"))

    def wait_spool_removed(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (left := self.spooled()) and time.monotonic() < deadline:
            self.assert_alive()
            time.sleep(0.2)
        assert not left, f"the call's scratch directory was left behind: {left}"
        self.assert_alive()


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        weights_dir(), tmp_path_factory.mktemp("cancellation-stack"), extra_env=TEST_STACK_ENV
    ) as running:
        yield running


@pytest.fixture(scope="module")
def module_translation(
    own_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Translation]:
    work = tmp_path_factory.mktemp("frame-stream-cancellation")
    scratch = work / "scratch"
    scratch.mkdir()
    serving = health_pb2.HealthCheckResponse.SERVING
    service = spawn(own_stack, IMAGE_TRANSLATION, work, TMPDIR=str(scratch), PYTHONFAULTHANDLER="1")
    gateway: Spawned | None = None
    try:
        service.wait_health(serving)
        gateway = spawn(
            own_stack, GATEWAY, work, **{IMAGE_TRANSLATION.addr_setting: service.address}
        )
        gateway.wait_health(serving)
        translation = Translation(own_stack, service, gateway, scratch)
        yield translation
        for channel in translation.channels.values():
            channel.close()
    finally:
        if gateway is not None:
            gateway.stop()
        service.stop()


@pytest.fixture
def translation(module_translation: Translation) -> Translation:
    """The module's service, still running (not crashed by an earlier test's call)."""
    module_translation.assert_alive()
    return module_translation


def triton_inferences(stack: Stack) -> float:
    """Images the model has translated, by Triton's own count."""
    try:
        text = scrape(stack.triton.metrics_url)
    except OSError as error:  # a crash is in its log
        log = stack.log_path("triton").read_text(errors="replace")
        crash = log[log.rfind("Signal (") :] if "Signal (" in log else log[-2000:]
        raise AssertionError(f"Triton does not answer ({error}):\n{crash[:3000]}") from None
    return metric_value(text, "nv_inference_count", model=TRITON_MODEL)


def settled_inferences(
    stack: Stack, quiet_s: float = 1.5, timeout_s: float = 30.0
) -> tuple[float, float]:
    """Triton's count once it has not moved for ``quiet_s``, and when it last moved (the
    model translates about 20 frames a second: a stream still running moves it every poll)."""
    value, moved_at = triton_inferences(stack), time.monotonic()
    deadline = moved_at + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = triton_inferences(stack)
        if now != value:
            value, moved_at = now, time.monotonic()
        elif time.monotonic() - moved_at >= quiet_s:
            return value, moved_at
    raise AssertionError(f"Triton was still translating {timeout_s:g} s later (count {value:g})")


def png(index: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(moving_gradient(index, 32, 32)).save(out, format="PNG")
    return out.getvalue()


def endless_frames() -> Iterator[pb.TranslateFramesRequest]:
    """A caller that would keep sending frames for minutes, as fast as it is let."""
    yield pb.TranslateFramesRequest(config=pb.FrameStreamConfig(model=MODEL))
    frames = [png(index) for index in range(16)]
    for index in range(FRAMES_OFFERED):
        yield pb.TranslateFramesRequest(image=frames[index % len(frames)])


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("long-video") / "long.mp4"
    frames = (moving_gradient(index, VIDEO_WIDTH, VIDEO_HEIGHT) for index in range(VIDEO_FRAMES))
    return write_video(path, frames, VIDEO_RATE).read_bytes()


def video_requests(data: bytes, chunk: int = 64 * 1024) -> Iterator[pb.TranslateVideoRequest]:
    yield pb.TranslateVideoRequest(config=pb.VideoConfig(model=MODEL))
    for start in range(0, len(data), chunk):
        yield pb.TranslateVideoRequest(chunk=data[start : start + chunk])


def assert_work_stopped(
    stack: Stack, before: float, at_end: float, ended_at: float, limit: float
) -> float:
    """Triton's count stops moving soon after the caller has gone, only a handful of
    inferences (those under way) coming after, and the call cost less than ``limit``
    inferences in all; returns that cost."""
    after, moved_at = settled_inferences(stack)
    late, spent = after - at_end, after - before
    assert late <= LATE_INFERENCES, (
        f"Triton translated {late:g} more frames after the call ended ({spent:g} in all)"
    )
    assert moved_at - ended_at < STOPPED_WITHIN_S, (
        f"Triton was still translating {moved_at - ended_at:.1f} s after the call ended"
    )
    assert spent < limit, f"{spent:g} inferences for a call stopped early (limit {limit:g})"
    return spent


@pytest.mark.parametrize("route", ROUTES)
def test_cancelling_translate_frames_stops_its_frames_in_triton(
    translation: Translation, route: str
) -> None:
    stack = translation.stack
    before, _ = settled_inferences(stack)
    call = translation.stub(route).TranslateFrames(endless_frames(), timeout=120)
    answers = [answer.index for _, answer in zip(range(ANSWERS_READ), call, strict=False)]
    assert answers == list(range(ANSWERS_READ))
    assert translation.streams_open("TranslateFrames") == 1
    call.cancel()
    cancelled_at = time.monotonic()
    at_cancel = triton_inferences(stack)
    assert call.code() == grpc.StatusCode.CANCELLED

    # The frames gRPC had already taken from the caller are dropped, not translated.
    spent = assert_work_stopped(stack, before, at_cancel, cancelled_at, FRAMES_OFFERED / 10)
    assert spent >= ANSWERS_READ, f"{spent:g} inferences for {ANSWERS_READ} answers"
    translation.wait_streams_closed("TranslateFrames")


@pytest.mark.parametrize("route", ROUTES)
def test_a_translate_frames_deadline_ends_the_stream_and_its_frames_in_triton(
    translation: Translation, route: str
) -> None:
    stack = translation.stack
    before, _ = settled_inferences(stack)
    started = time.monotonic()
    call = translation.stub(route).TranslateFrames(endless_frames(), timeout=DEADLINE_S)
    answers = 0
    with pytest.raises(grpc.RpcError) as error:
        for _ in call:
            answers += 1
    ended_at = time.monotonic()
    at_deadline = triton_inferences(stack)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.value.details()
    elapsed = ended_at - started
    assert elapsed < DEADLINE_S + DEADLINE_SLACK_S, f"DEADLINE_EXCEEDED came after {elapsed:.2f} s"
    assert answers > 0, "no frame was answered before the deadline: not mid-stream"

    assert_work_stopped(stack, before, at_deadline, ended_at, FRAMES_OFFERED / 10)
    translation.wait_streams_closed("TranslateFrames")


def progressed(call: Iterator[pb.TranslateVideoResponse]) -> pb.VideoProgress:
    """Reads the call's messages up to the first progress with frames done (mid-translation)."""
    for answer in call:
        if answer.WhichOneof("item") == "progress" and answer.progress.frames_done > 0:
            return answer.progress
    raise AssertionError("the call ended before any progress")


@pytest.mark.parametrize("route", ROUTES)
def test_cancelling_translate_video_stops_its_frames_in_triton_and_removes_its_spool(
    translation: Translation, long_video: bytes, route: str
) -> None:
    stack = translation.stack
    before, _ = settled_inferences(stack)
    call = translation.stub(route).TranslateVideo(video_requests(long_video), timeout=120)
    progress = progressed(call)
    assert progress.frames_total == VIDEO_FRAMES and progress.frames_done < VIDEO_FRAMES
    assert translation.streams_open("TranslateVideo") == 1
    assert len(translation.spooled()) == 1, "the call's scratch directory is not where expected"
    call.cancel()
    cancelled_at = time.monotonic()
    at_cancel = triton_inferences(stack)
    assert call.code() == grpc.StatusCode.CANCELLED

    assert_work_stopped(stack, before, at_cancel, cancelled_at, VIDEO_FRAMES / 2)
    translation.wait_streams_closed("TranslateVideo")
    translation.wait_spool_removed()


@pytest.mark.parametrize("route", ROUTES)
def test_a_translate_video_deadline_ends_the_call_and_its_frames_in_triton(
    translation: Translation, long_video: bytes, route: str
) -> None:
    stack = translation.stack
    before, _ = settled_inferences(stack)
    done = 0
    started = time.monotonic()
    call = translation.stub(route).TranslateVideo(video_requests(long_video), timeout=DEADLINE_S)
    with pytest.raises(grpc.RpcError) as error:
        for answer in call:
            if answer.WhichOneof("item") == "progress":
                done = answer.progress.frames_done
    ended_at = time.monotonic()
    at_deadline = triton_inferences(stack)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.value.details()
    elapsed = ended_at - started
    assert elapsed < DEADLINE_S + DEADLINE_SLACK_S, f"DEADLINE_EXCEEDED came after {elapsed:.2f} s"
    assert 0 < done < VIDEO_FRAMES, f"{done} frames done at the deadline: not mid-translation"

    assert_work_stopped(stack, before, at_deadline, ended_at, VIDEO_FRAMES / 2)
    translation.wait_streams_closed("TranslateVideo")
    translation.wait_spool_removed()


def test_translate_video_cancelled_at_any_moment_leaves_the_service_serving(
    translation: Translation, long_video: bytes
) -> None:
    """PyAV's steps run in threads: a call cancelled while one runs must wait for it before
    closing the files under it. The service outlives every cancel, closes every stream,
    removes every spool, and the calls' frames stop in Triton."""
    stack = translation.stack
    before, _ = settled_inferences(stack)
    for attempt in range(STAGGERED_CANCELS):
        stub = translation.stub(ROUTES[attempt % len(ROUTES)])
        call = stub.TranslateVideo(video_requests(long_video), timeout=120)
        progressed(call)
        time.sleep(attempt * STAGGER_S)
        call.cancel()
        translation.wait_spool_removed()
        translation.wait_streams_closed("TranslateVideo")

    spent = settled_inferences(stack)[0] - before
    # Each call was stopped a fraction of a second into the file: together, less than one file.
    assert spent < VIDEO_FRAMES, f"{STAGGERED_CANCELS} cancelled calls cost {spent:g} inferences"
