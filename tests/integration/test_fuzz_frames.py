"""TranslateFrames fuzzed: Hypothesis streams of configs, encoded frames (valid, odd and
broken images from tests/fuzz/strategies.py), raw frames of any declared size and bytes,
in any order. Whatever the stream, it ends OK or with a caller-error status and a message,
within the deadline, through the gateway and straight to the service."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from genmedia.v1 import common_pb2
from genmedia.v1 import image_translation_pb2 as pb
from services.common.registry import GATEWAY, IMAGE_TRANSLATION
from tests.fuzz import strategies
from tests.integration.test_fuzz import FUZZ, SERVER_FAULTS, TIMEOUT_S
from tools.video_files import moving_gradient, write_video

pytestmark = pytest.mark.integration

PATH = "/genmedia.v1.ImageTranslationService/TranslateFrames"
configs = st.builds(
    pb.FrameStreamConfig,
    model=st.sampled_from(["horse2zebra", "zebra2horse", "", "nowhere"]),
    format=st.sampled_from([*common_pb2.ImageFormat.values(), 9]),
    quality=st.integers(0, 120),
)
raw_frames = st.builds(
    pb.RawFrame,
    rgb=st.binary(max_size=4096),
    width=st.integers(0, 64),
    height=st.integers(0, 64),
)
items = st.one_of(
    configs.map(lambda config: pb.TranslateFramesRequest(config=config)),
    strategies.image_bytes().map(lambda data: pb.TranslateFramesRequest(image=data)),
    raw_frames.map(lambda raw: pb.TranslateFramesRequest(raw=raw)),
    st.just(pb.TranslateFramesRequest()),
)
streams = st.tuples(configs, st.lists(items, max_size=6)).map(
    lambda drawn: [pb.TranslateFramesRequest(config=drawn[0]), *drawn[1]]
) | st.lists(items, max_size=6)


def judged_stream(call: Any, messages: list[Any], about: str) -> tuple[list[Any], grpc.StatusCode]:
    """Sends ``messages`` as one stream; the answers and the status, once it is checked that
    the stream ended in time, OK or with a caller-error status that says why."""
    started = time.monotonic()
    try:
        answers = list(call(iter(messages), timeout=TIMEOUT_S))
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        answers, code, details = [], error.code(), error.details() or ""
    assert time.monotonic() - started < TIMEOUT_S
    assert code not in SERVER_FAULTS, f"{code.name}: {details!r} {about}"
    assert code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    if code != grpc.StatusCode.OK:
        assert details, f"{code.name} without saying why"
    return answers, code


@pytest.mark.parametrize("process", [GATEWAY, IMAGE_TRANSLATION], ids=lambda p: p.name)
def test_every_frame_stream_ends_ok_or_with_a_caller_error_in_time(stack, process) -> None:
    with grpc.insecure_channel(stack.ports.address(process)) as channel:
        call = channel.stream_stream(
            PATH,
            request_serializer=pb.TranslateFramesRequest.SerializeToString,
            response_deserializer=pb.TranslateFramesResponse.FromString,
        )

        @FUZZ
        @given(streams)
        def run(messages: list[pb.TranslateFramesRequest]) -> None:
            answers, _ = judged_stream(call, messages, f"for {messages!r}")
            assert [answer.index for answer in answers] == list(range(len(answers)))

        run()


VIDEO_PATH = "/genmedia.v1.ImageTranslationService/TranslateVideo"


def damaged(base: bytes) -> st.SearchStrategy[bytes]:
    """A real video file cut short, with bytes overwritten, or with bytes spliced in."""
    cut = st.integers(0, len(base)).map(lambda end: base[:end])
    flips = st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=8)

    def flipped(changes: list[tuple[int, int]]) -> bytes:
        data = bytearray(base)
        for at, value in changes:
            data[at] = value
        return bytes(data)

    spliced = st.tuples(st.integers(0, len(base)), st.binary(max_size=64)).map(
        lambda drawn: base[: drawn[0]] + drawn[1] + base[drawn[0] :]
    )
    return st.one_of(st.just(base), cut, flips.map(flipped), spliced, st.binary(max_size=512))


@pytest.mark.parametrize("process", [GATEWAY, IMAGE_TRANSLATION], ids=lambda p: p.name)
def test_every_video_stream_ends_ok_or_with_a_caller_error_in_time(
    stack, process, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("fuzz-video")
    frames = [moving_gradient(index, 64, 64) for index in range(6)]
    bases = [
        write_video(folder / "a.mp4", frames, 6).read_bytes(),
        write_video(folder / "a.webm", frames, 6, "webm", "libvpx-vp9").read_bytes(),
    ]
    files = st.sampled_from(bases).flatmap(damaged)
    chunk_sizes = st.integers(1, 4096)
    model = st.sampled_from(["horse2zebra", "", "nowhere"])

    with grpc.insecure_channel(stack.ports.address(process)) as channel:
        call = channel.stream_stream(
            VIDEO_PATH,
            request_serializer=pb.TranslateVideoRequest.SerializeToString,
            response_deserializer=pb.TranslateVideoResponse.FromString,
        )

        @FUZZ
        @given(files, chunk_sizes, model, st.booleans())
        def run(data: bytes, size: int, direction: str, config_first: bool) -> None:
            messages = [pb.TranslateVideoRequest(config=pb.VideoConfig(model=direction))]
            chunks = [data[at : at + size] for at in range(0, len(data), size)]
            messages += [pb.TranslateVideoRequest(chunk=chunk) for chunk in chunks]
            if not config_first:
                messages.reverse()
            answers, code = judged_stream(call, messages, f"({len(data)} bytes)")
            if code == grpc.StatusCode.OK:
                assert answers[-1].WhichOneof("item") == "summary"

        run()
