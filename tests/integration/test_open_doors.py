"""The gateway's open doors hardened (issue #24), through the real stack.

Anonymous callers of ProvenanceService get verdicts without figures and have
limits of their own; a large image verifies in bounded memory and time; a
32 MiB malformed message does not stall the gateway; request ids are the
gateway's own; budgets are held from the request and the backend; Triton's
internals stay in the log; weak keys refuse to start.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import provenance_pb2 as provenance_pb
from genmedia.v1 import provenance_pb2_grpc as provenance_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from services.common.registry import GATEWAY, IMAGE_GENERATION, TEXT_GENERATION
from services.launcher.stack import Stack, free_port
from tests.fuzz.bad_inputs import FLOOD_BYTES, encoded, field_flood, large_photo, picture
from tests.integration.conftest import channel_to
from tests.integration.processes import (
    ApiKey,
    Spawned,
    log_events,
    open_channel,
    spawn,
    write_keys_file,
)

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
TEXT = (
    "Deep fakes are cheap to make at scale, so provenance matters more every year. "
    "A photograph used to be evidence; now a caption has to say where it came from, who "
    "signed it and whether anything was changed since. Watermarks help where metadata is "
    "stripped, but only if the key stays secret and nobody can probe the detector freely."
)
VERIFY_RSS_LIMIT_MB = 160
"""What one 16-megapixel verification may add to the gateway's peak memory (measured: 65 MB
for PNG and JPEG; docs/RELIABILITY.md)."""
VERIFY_TIME_LIMIT_S = 5.0
"""Its answer time on 2 busy cores (measured: 0.6-1.2 s)."""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("open-doors")


@pytest.fixture(scope="module")
def keys(work: Path) -> dict[str, ApiKey]:
    return write_keys_file(
        work / "keys.json",
        {
            "full": {},
            "pixels": {"daily": {"megapixels": 0.01}},
            "tokens": {"daily": {"tokens": 10}},
        },
    )


@pytest.fixture(scope="module")
def keyed(stack: Stack, keys: dict[str, ApiKey], work: Path) -> Iterator[Spawned]:
    """A gateway with API keys whose anonymous callers get 3 calls, then 1 per 100 s."""
    gateway = spawn(
        stack,
        GATEWAY,
        work,
        GENMEDIA_AUTH_MODE="api-keys",
        GENMEDIA_API_KEYS_FILE=str(work / "keys.json"),
        GENMEDIA_OPEN_RATE_PER_S="0.01",
        GENMEDIA_OPEN_BURST="3",
    )
    try:
        gateway.wait_health(SERVING)
        yield gateway
    finally:
        gateway.stop()


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: VmHWM := current RSS


def test_anonymous_callers_get_verdicts_without_figures_and_limits_of_their_own(
    keyed: Spawned, keys: dict[str, ApiKey]
) -> None:
    with open_channel(keyed.address) as channel:
        verify = provenance_grpc.ProvenanceServiceStub(channel)
        text = provenance_pb.VerifyTextRequest(text=TEXT)
        anonymous = verify.VerifyText(text, timeout=30)
        assert anonymous.detail_withheld and not anonymous.HasField("watermark")
        assert anonymous.verdict == provenance_pb.VERDICT_NO_EVIDENCE
        image = provenance_pb.VerifyImageRequest(data=encoded(picture(96, 96), "PNG"))
        unmarked = verify.VerifyImage(image, timeout=30)
        assert unmarked.detail_withheld and not unmarked.HasField("watermark")
        short = verify.VerifyText(provenance_pb.VerifyTextRequest(text="Hi there"), timeout=30)
        assert "too short" in short.explanation and not short.HasField("watermark")
        with pytest.raises(grpc.RpcError) as refused:  # the burst of 3 is spent
            verify.VerifyText(text, timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "without an API key" in (refused.value.details() or "")
        retry_after = dict(refused.value.trailing_metadata() or ())["retry-after-ms"]
        assert int(retry_after) > 1000
        for _ in range(4):  # a key has its own limits, and sees every figure
            keyed_answer = verify.VerifyText(text, metadata=keys["full"].metadata, timeout=30)
            assert not keyed_answer.detail_withheld
            assert keyed_answer.watermark.tokens_scored > 16
        with pytest.raises(grpc.RpcError) as wrong:
            verify.VerifyText(text, metadata=(("authorization", "Bearer gm_nope"),), timeout=30)
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_16_megapixel_image_verifies_in_bounded_memory_and_time(stack: Stack) -> None:
    request = provenance_pb.VerifyImageRequest(data=large_photo())
    pid = stack.pid_of(GATEWAY)
    with channel_to(stack, GATEWAY) as channel:
        verify = provenance_grpc.ProvenanceServiceStub(channel)
        verify.VerifyImage(provenance_pb.VerifyImageRequest(data=encoded(picture(), "PNG")))
        before = Path(f"/proc/{pid}/status").read_text()
        current = int(re.search(r"VmRSS:\s+(\d+) kB", before).group(1)) / 1024  # type: ignore[union-attr]
        reset_peak_rss(pid)
        started = time.monotonic()
        answer = verify.VerifyImage(request, timeout=60)
        elapsed = time.monotonic() - started
    growth = peak_rss_mb(pid) - current
    print(f"\n4000x4000 PNG verified in {elapsed:.2f} s; gateway peak RSS +{growth:.0f} MB")
    assert answer.verdict == provenance_pb.VERDICT_NO_EVIDENCE
    assert growth < VERIFY_RSS_LIMIT_MB
    assert elapsed < VERIFY_TIME_LIMIT_S


def test_a_32_mib_malformed_message_does_not_stall_a_concurrent_cheap_call(stack: Stack) -> None:
    """Health checks sent while 32 MiB messages arrive: malformed ones (16 million fields,
    which protobuf took 0.1-0.4 s to parse on the event loop, and the UTF-8 walk 8 s) must
    cost no more than the floor, the same hop with a well-formed 32 MiB message (one bytes
    field: receiving it is all the work), measured in the same run."""
    floor = provenance_pb.VerifyImageRequest(data=b"\0" * FLOOD_BYTES).SerializeToString()
    flood = field_flood(0x08)()  # VerifyTextRequest.text's number, as a varint, 16M times
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    address = stack.ports.address(GATEWAY)
    with (
        grpc.insecure_channel(address, options=options) as sender,
        grpc.insecure_channel(address) as prober,
    ):
        health = health_pb2_grpc.HealthStub(prober)

        def probe_while(method: str, payload: bytes) -> tuple[list[grpc.StatusCode], float]:
            """Three calls of ``method`` with ``payload``; the slowest health check meanwhile."""
            call = sender.unary_unary(f"/genmedia.v1.ProvenanceService/{method}")
            answers: list[grpc.StatusCode] = []

            def send() -> None:
                for _ in range(3):
                    try:
                        call(payload, timeout=30)
                        answers.append(grpc.StatusCode.OK)
                    except grpc.RpcError as error:
                        answers.append(error.code())

            sending = threading.Thread(target=send)
            sending.start()
            worst = 0.0
            while sending.is_alive():
                started = time.perf_counter()
                health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                worst = max(worst, time.perf_counter() - started)
            sending.join()
            return answers, worst * 1000

        floor_answers, floor_worst = probe_while("VerifyImage", floor)
        flood_answers, flood_worst = probe_while("VerifyText", flood)
    print(
        f"\nslowest health check: {floor_worst:.0f} ms under well-formed 32 MiB messages "
        f"(the floor), {flood_worst:.0f} ms under 32 MiB of 16 million fields"
    )
    assert floor_answers == [grpc.StatusCode.INVALID_ARGUMENT] * 3  # not an image
    assert flood_answers == [grpc.StatusCode.INVALID_ARGUMENT] * 3
    assert flood_worst < floor_worst + 50


def test_the_gateway_mints_request_ids_and_keeps_the_callers_as_correlation(
    stack: Stack,
) -> None:
    chosen = "caller-chosen-id-24"
    with channel_to(stack, GATEWAY) as channel:
        response, call = gen_grpc.ImageGenerationServiceStub(channel).GenerateImages.with_call(
            gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(id=1)], seed=5),
            metadata=(("x-request-id", chosen),),
            timeout=60,
        )
    minted = dict(call.trailing_metadata())["x-request-id"]
    assert minted != chosen
    assert response.images[0].image.provenance.request_id == minted  # signed into the image
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        gateway_lines = [
            event
            for event in log_events(stack.log_path("gateway").read_text())
            if event.get("request_id") == minted
        ]
        backend_lines = [
            event
            for event in log_events(stack.log_path("image-generation").read_text())
            if event.get("request_id") == minted
        ]
        if gateway_lines and backend_lines:
            break
        time.sleep(0.1)
    assert gateway_lines and all(e["correlation_id"] == chosen for e in gateway_lines)
    assert backend_lines and all(e["correlation_id"] == chosen for e in backend_lines)


def test_a_translation_is_held_to_its_megapixels_before_it_is_forwarded(
    keyed: Spawned, keys: dict[str, ApiKey]
) -> None:
    request = trans_pb.TranslateImageRequest(
        image=encoded(picture(200, 100), "PNG"), model="horse2zebra"
    )
    with open_channel(keyed.address) as channel, pytest.raises(grpc.RpcError) as refused:
        trans_grpc.ImageTranslationServiceStub(channel).TranslateImage(
            request, metadata=keys["pixels"].metadata, timeout=30
        )
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "this call asks for 0.02 megapixels" in (refused.value.details() or "")


def test_an_unset_max_new_tokens_holds_the_backends_own_default(
    stack: Stack, keys: dict[str, ApiKey], work: Path
) -> None:
    """A text backend whose default is 8 tokens, behind a gateway, for a key of 10 a day: the
    first call (8 held, 8 generated) passes, the second cannot hold 8 more. With the old
    hard-coded 64 the first would have been refused."""
    replica = spawn(stack, TEXT_GENERATION, work, GENMEDIA_DEFAULT_MAX_NEW_TOKENS="8")
    try:
        replica.wait_health(SERVING)
        gateway = spawn(
            stack,
            GATEWAY,
            work,
            GENMEDIA_AUTH_MODE="api-keys",
            GENMEDIA_API_KEYS_FILE=str(work / "keys.json"),
            GENMEDIA_TEXT_GENERATION_ADDR=replica.address,
        )
        try:
            gateway.wait_health(SERVING)
            with open_channel(gateway.address) as channel:
                generate = text_grpc.TextGenerationServiceStub(channel).GenerateText
                request = text_pb.GenerateTextRequest(prompt="Return the", seed=1)
                first = generate(request, metadata=keys["tokens"].metadata, timeout=60)
                assert first.usage.generated_tokens <= 8
                with pytest.raises(grpc.RpcError) as refused:
                    generate(request, metadata=keys["tokens"].metadata, timeout=60)
            left = 10 - first.usage.generated_tokens
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"asks for 8 tokens; {left:g} of 10 left" in (refused.value.details() or "")
        finally:
            gateway.stop()
    finally:
        replica.stop()


def test_tritons_internals_stay_in_the_log(stack: Stack, work: Path) -> None:
    closed = free_port()  # nothing listens there: Triton is "down"
    service = spawn(stack, IMAGE_GENERATION, work, GENMEDIA_TRITON_URL=f"127.0.0.1:{closed}")
    try:
        service.wait_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        with open_channel(service.address) as channel, pytest.raises(grpc.RpcError) as failed:
            gen_grpc.ImageGenerationServiceStub(channel).GenerateImages(
                gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(id=1)]), timeout=30
            )
        details = failed.value.details() or ""
        request_id = dict(failed.value.trailing_metadata() or ())["x-request-id"]
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "retry later" in details
        assert str(closed) not in details and "127.0.0.1" not in details
        deadline = time.monotonic() + 5
        logged: list[dict[str, object]] = []
        while not logged and time.monotonic() < deadline:
            logged = [
                event
                for event in log_events(service.log_text())
                if event.get("request_id") == request_id and str(closed) in str(event["message"])
            ]
            time.sleep(0.1)
        assert logged, "the detail (Triton's own message) is logged with the request id"
    finally:
        service.stop()


@pytest.mark.parametrize("process", [GATEWAY, IMAGE_GENERATION], ids=lambda p: p.name)
def test_a_placeholder_watermark_key_refuses_to_start_outside_development(
    stack: Stack, work: Path, process
) -> None:
    secret = work / f"{process.name}-image-watermark.key"
    secret.write_text("REPLACE-WITH-ANOTHER-RANDOM-SECRET\n")
    started = spawn(
        stack,
        process,
        work,
        GENMEDIA_DEVELOPMENT_MODE="false",
        GENMEDIA_IMAGE_WATERMARK_KEY_FILE=str(secret),
        GENMEDIA_TEXT_WATERMARK_KEY="d" * 64,
    )
    code = started.popen.wait(timeout=60)
    log = started.log_text()
    assert code != 0
    assert "is a placeholder" in log and "GENMEDIA_DEVELOPMENT_MODE=true" in log
    assert "REPLACE-WITH-ANOTHER-RANDOM-SECRET" not in log
    assert "Traceback" not in log
