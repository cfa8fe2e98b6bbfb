"""Property-based fuzzing of every RPC on the live stack: no INTERNAL or UNKNOWN, no hang.

Hypothesis builds request messages (tests/fuzz/strategies.py), valid and
invalid, and also corrupts their serialized bytes; each goes through the
gateway and to the service directly as raw bytes. Whatever the input, the
answer is OK or a caller-error status with a message, within the deadline;
a message the strategies build valid must get OK. UNAVAILABLE is never a
pass: it says a backend is down, not that the input was bad. A known-valid
request to the same RPC, before and after the examples, must get OK too, so a
dead backend fails the run instead of answering every example UNAVAILABLE.

`make test` runs GENMEDIA_FUZZ_EXAMPLES (default 15) derandomized examples
per RPC, target and kind; `make fuzz` runs 300 random ones each.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import provenance_pb2 as provenance_pb
from genmedia.v1 import text_generation_pb2 as text_pb
from services.common.registry import (
    GATEWAY,
    IMAGE_GENERATION,
    IMAGE_TRANSLATION,
    TEXT_GENERATION,
    ProcessSpec,
)
from tests.fuzz import strategies

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("GENMEDIA_FUZZ_EXAMPLES", "15"))
RANDOM = os.environ.get("GENMEDIA_FUZZ_RANDOM") == "1"
TIMEOUT_S = 30.0
# What a server error looks like; everything else names the caller's mistake or a state.
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RPCS: dict[str, tuple[ProcessSpec, str, st.SearchStrategy, type, bool]] = {
    "GenerateImages": (IMAGE_GENERATION, "ImageGenerationService",
                       strategies.requests(strategies.valid_generate_images(),
                                           strategies.generate_images_requests()),
                       gen_pb.GenerateImagesResponse, False),
    "ListClasses": (IMAGE_GENERATION, "ImageGenerationService",
                    strategies.requests(strategies.valid_list_classes(),
                                        strategies.list_classes_requests()),
                    gen_pb.ListClassesResponse, False),
    "TranslateImage": (IMAGE_TRANSLATION, "ImageTranslationService",
                       strategies.requests(strategies.valid_translate_image(),
                                           strategies.translate_image_requests()),
                       trans_pb.TranslateImageResponse, False),
    "ListModels": (IMAGE_TRANSLATION, "ImageTranslationService",
                   st.just(strategies.Drawn(trans_pb.ListModelsRequest(), valid=True)),
                   trans_pb.ListModelsResponse, False),
    "GenerateText": (TEXT_GENERATION, "TextGenerationService",
                     strategies.requests(strategies.valid_generate_text(),
                                         strategies.generate_text_requests()),
                     text_pb.GenerateTextResponse, False),
    "StreamText": (TEXT_GENERATION, "TextGenerationService",
                   strategies.requests(strategies.valid_generate_text(),
                                       strategies.generate_text_requests()),
                   text_pb.StreamTextResponse, True),
    # The gateway serves these itself: "direct" is the gateway too.
    "VerifyImage": (GATEWAY, "ProvenanceService",
                    strategies.requests(strategies.valid_verify_image(),
                                        strategies.verify_image_requests()),
                    provenance_pb.VerifyImageResponse, False),
    "VerifyText": (GATEWAY, "ProvenanceService",
                   strategies.requests(strategies.valid_verify_text(),
                                       strategies.verify_text_requests()),
                   provenance_pb.VerifyTextResponse, False),
}  # fmt: skip


def _png(side: int) -> bytes:
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


# The positive control: one request per RPC that the stack must answer OK.
KNOWN_VALID: dict[str, Message] = {
    "GenerateImages": gen_pb.GenerateImagesRequest(
        classes=[gen_pb.ClassSelector(name="goldfish")], count=1, seed=1
    ),
    "ListClasses": gen_pb.ListClassesRequest(query="goldfish"),
    "TranslateImage": trans_pb.TranslateImageRequest(image=_png(32), model="horse2zebra"),
    "ListModels": trans_pb.ListModelsRequest(),
    "GenerateText": text_pb.GenerateTextRequest(prompt="Once", max_new_tokens=4, seed=1),
    "StreamText": text_pb.GenerateTextRequest(prompt="Once", max_new_tokens=4, seed=1),
    "VerifyImage": provenance_pb.VerifyImageRequest(data=_png(24)),
    "VerifyText": provenance_pb.VerifyTextRequest(text="Once upon a time"),
}


def call_raw(
    channel: grpc.Channel, path: str, payload: bytes, streaming: bool
) -> tuple[grpc.StatusCode, str, list[bytes]]:
    """Sends raw request bytes; returns the status, its details and the raw responses."""
    if streaming:
        call = channel.unary_stream(path)(payload, timeout=TIMEOUT_S)
        try:
            return grpc.StatusCode.OK, "", list(call)
        except grpc.RpcError as error:
            return error.code(), error.details() or "", []
    try:
        return grpc.StatusCode.OK, "", [channel.unary_unary(path)(payload, timeout=TIMEOUT_S)]
    except grpc.RpcError as error:
        return error.code(), error.details() or "", []


def check(channel: grpc.Channel, rpc: str, payload: bytes, valid: bool = False) -> None:
    """``valid``: the request is one the API accepts, so only OK will do."""
    _, service, _, response_type, streaming = RPCS[rpc]
    started = time.monotonic()
    code, details, responses = call_raw(
        channel, f"/genmedia.v1.{service}/{rpc}", payload, streaming
    )
    elapsed = time.monotonic() - started
    assert code not in SERVER_FAULTS, f"{rpc} answered {code.name}: {details!r} for {payload!r}"
    assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{rpc} hung on {payload!r}"
    assert code != grpc.StatusCode.UNAVAILABLE, f"{rpc}: backend unavailable: {details!r}"
    assert elapsed < TIMEOUT_S, f"{rpc} took {elapsed:.1f} s"
    if valid:
        assert code == grpc.StatusCode.OK, f"{rpc} refused a valid {payload!r}: {details!r}"
    if code == grpc.StatusCode.OK:
        assert responses, f"{rpc} answered OK with nothing"
        for response in responses:
            response_type.FromString(response)  # well-formed
    else:
        assert details, f"{rpc} answered {code.name} without saying why"


def check_known_valid(channel: grpc.Channel, rpc: str) -> None:
    check(channel, rpc, KNOWN_VALID[rpc].SerializeToString(), valid=True)


@pytest.fixture(scope="module")
def channels(stack) -> Callable[[str, str], grpc.Channel]:
    opened: dict[str, grpc.Channel] = {}

    def get(target: str, rpc: str) -> grpc.Channel:
        process = GATEWAY if target == "gateway" else RPCS[rpc][0]
        if process.name not in opened:
            opened[process.name] = grpc.insecure_channel(
                stack.ports.address(process),
                options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
            )
        return opened[process.name]

    yield get
    for channel in opened.values():
        channel.close()


@pytest.mark.parametrize("target", ["gateway", "direct"])
@pytest.mark.parametrize("rpc", list(RPCS))
def test_every_message_gets_ok_or_a_caller_error_in_time(channels, target: str, rpc: str) -> None:
    channel = channels(target, rpc)
    check_known_valid(channel, rpc)

    @FUZZ
    @given(RPCS[rpc][2])
    def run(drawn: strategies.Drawn) -> None:
        check(channel, rpc, drawn.message.SerializeToString(), drawn.valid)

    run()
    check_known_valid(channel, rpc)  # the examples left the backend serving


@pytest.mark.parametrize("rpc", list(RPCS))
def test_corrupted_bytes_get_ok_or_a_caller_error_in_time(channels, rpc: str) -> None:
    channel = channels("gateway", rpc)
    check_known_valid(channel, rpc)

    @FUZZ
    @given(strategies.mutated(RPCS[rpc][2].map(lambda drawn: drawn.message)))
    def run(payload: bytes) -> None:
        check(channel, rpc, payload)

    run()
    check_known_valid(channel, rpc)
