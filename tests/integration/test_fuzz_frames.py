"""TranslateFrames fuzzed: Hypothesis streams of configs, encoded frames (valid, odd and
broken images from tests/fuzz/strategies.py), raw frames of any declared size and bytes,
in any order. Whatever the stream, it ends OK or with a caller-error status and a message,
within the deadline, through the gateway and straight to the service."""

from __future__ import annotations

import time

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from genmedia.v1 import common_pb2
from genmedia.v1 import image_translation_pb2 as pb
from services.common.registry import GATEWAY, IMAGE_TRANSLATION
from tests.fuzz import strategies
from tests.integration.test_fuzz import FUZZ, SERVER_FAULTS, TIMEOUT_S

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
            started = time.monotonic()
            try:
                answers = list(call(iter(messages), timeout=TIMEOUT_S))
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as error:
                answers, code, details = [], error.code(), error.details() or ""
            assert time.monotonic() - started < TIMEOUT_S
            assert code not in SERVER_FAULTS, f"{code.name}: {details!r} for {messages!r}"
            assert code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
            if code != grpc.StatusCode.OK:
                assert details, f"{code.name} without saying why"
            assert [answer.index for answer in answers] == list(range(len(answers)))

        run()
