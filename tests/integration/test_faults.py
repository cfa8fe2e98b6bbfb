"""Faults on purpose, on a stack of its own: a slow model, the network to Triton cut,
Triton killed under load and started again, Triton stopped with SIGTERM under load.

The stack's ``cyclegan_zebra2horse`` holds every batch ``SLOW_MODEL_MS`` (its
test-only ``test_delay_ms``); every other model runs at full speed.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from services.common.registry import GATEWAY, IMAGE_GENERATION, IMAGE_TRANSLATION, TEXT_GENERATION
from services.launcher.stack import Stack
from tests.integration.conftest import (
    TEST_STACK_ENV,
    channel_to,
    metric_value,
    running_stack,
    scrape,
    weights_dir,
)
from tests.integration.processes import open_channel, spawn
from tests.integration.tcp_proxy import TcpProxy
from tools.traffic import Traffic, failures

pytestmark = pytest.mark.integration

DEADLINE_S = 5.0
# What the services promise once Triton is back (health polled every 0.5 s here,
# reconnection backoff at most 1 s): serving again within this.
RECOVERY_LIMIT_S = 10.0
# Health turns NOT_SERVING within this of Triton going away (a poll, plus the
# 2 s readiness timeout when the link is silent).
NOT_SERVING_LIMIT_S = 5.0
OUTAGE_ANSWERS = {grpc.StatusCode.UNAVAILABLE}
SLOW_MODEL = "cyclegan_zebra2horse"
SLOW_MODEL_MS = 2000
# How late a DEADLINE_EXCEEDED may arrive, and how soon the model must have
# dropped the work: both well under the model's delay.
DEADLINE_SLACK_S = 0.3
CANCELLED_WITHIN_S = 1.0
SERVICE = "genmedia.v1.ImageGenerationService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        weights_dir(),
        tmp_path_factory.mktemp("faults"),
        extra_env=TEST_STACK_ENV,
        model_parameters={SLOW_MODEL: {"test_delay_ms": str(SLOW_MODEL_MS)}},
    ) as running:
        yield running


def small_png() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


SLOW_REQUEST = trans_pb.TranslateImageRequest(image=small_png(), model="zebra2horse")
GOLDFISH = gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="goldfish")])


def cancelled_in_model(stack: Stack) -> float:
    text = scrape(stack.triton.metrics_url)
    return metric_value(text, "genmedia_model_requests_cancelled_total", model=SLOW_MODEL)


# -- a slow model ----------------------------------------------------------------------


@pytest.mark.parametrize("target", [GATEWAY, IMAGE_TRANSLATION], ids=["gateway", "direct"])
def test_deadline_on_a_slow_model_is_kept_and_the_work_is_cancelled_in_triton(
    own_stack: Stack, target
) -> None:
    before = cancelled_in_model(own_stack)
    with channel_to(own_stack, target) as channel:
        stub = trans_grpc.ImageTranslationServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as error:
            stub.TranslateImage(SLOW_REQUEST, timeout=0.5)
        answered_after = time.monotonic() - started
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert answered_after < 0.5 + DEADLINE_SLACK_S
    # The model gave up on the request instead of running it to the end.
    while cancelled_in_model(own_stack) == before:
        assert time.monotonic() - started < CANCELLED_WITHIN_S, "the model kept the work"
        time.sleep(0.05)
    assert cancelled_in_model(own_stack) == before + 1
    print(f"DEADLINE_EXCEEDED after {answered_after:.3f} s; dropped in Triton in time")


def test_gateway_sheds_calls_beyond_its_in_flight_limit_instead_of_queueing(
    own_stack: Stack, tmp_path: Path
) -> None:
    gateway = spawn(own_stack, GATEWAY, tmp_path, GENMEDIA_MAX_IN_FLIGHT="2")
    try:
        gateway.wait_health()
        results: list[tuple[str, float]] = []

        def call(_: int) -> None:
            with open_channel(gateway.address) as channel:
                stub = trans_grpc.ImageTranslationServiceStub(channel)
                started = time.monotonic()
                try:
                    stub.TranslateImage(SLOW_REQUEST, timeout=4 * SLOW_MODEL_MS / 1000)
                    code = "OK"
                except grpc.RpcError as error:
                    code = error.code().name
                    assert "limit of 2 calls" in (error.details() or ""), error.details()
                results.append((code, time.monotonic() - started))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(call, range(8)))
        shed = [seconds for code, seconds in results if code == "RESOURCE_EXHAUSTED"]
        served = [seconds for code, seconds in results if code == "OK"]
        assert (len(served), len(shed)) == (2, 6), results
        assert max(shed) < 1.0, "a refused call waited instead of being refused at once"
        assert min(served) >= SLOW_MODEL_MS / 1000
        # Once the slow calls are done the gateway admits again.
        with open_channel(gateway.address) as channel:
            trans_grpc.ImageTranslationServiceStub(channel).TranslateImage(SLOW_REQUEST, timeout=10)
        print(
            f"in-flight limit 2, 8 callers: 2 served in {min(served):.2f}-{max(served):.2f} s, "
            f"6 refused with RESOURCE_EXHAUSTED within {max(shed):.3f} s"
        )
    finally:
        gateway.stop()


# -- the network between a service and Triton -----------------------------------------


def wait_health(channel: grpc.Channel, wanted: int, limit_s: float) -> float:
    started = time.monotonic()
    while health(channel, SERVICE) != wanted:
        assert time.monotonic() - started < limit_s, f"not {wanted} within {limit_s} s"
        time.sleep(0.1)
    return time.monotonic() - started


def wait_every_service_serving(stack: Stack) -> None:
    """After Triton restarts, each service reconnects on its own backoff: a test must
    not send its first call before the service it needs is back."""
    started = time.monotonic()
    for process in (IMAGE_GENERATION, IMAGE_TRANSLATION, TEXT_GENERATION):
        with channel_to(stack, process) as channel:
            while health(channel, "") != SERVING:  # "": the process as a whole
                assert time.monotonic() - started < RECOVERY_LIMIT_S, f"{process.name} not back"
                time.sleep(0.1)


def timed_generate(
    stub: gen_grpc.ImageGenerationServiceStub, deadline_s: float
) -> tuple[str, float]:
    started = time.monotonic()
    try:
        stub.GenerateImages(GOLDFISH, timeout=deadline_s)
        code = "OK"
    except grpc.RpcError as error:
        code = error.code().name
    return code, time.monotonic() - started


def test_network_cut_between_a_service_and_triton(own_stack: Stack, tmp_path: Path) -> None:
    triton_host, triton_port = own_stack.triton.grpc_url.rsplit(":", 1)
    with TcpProxy(triton_host, int(triton_port)) as proxy:
        service = spawn(
            own_stack,
            IMAGE_GENERATION,
            tmp_path,
            GENMEDIA_TRITON_URL=proxy.address,
            GENMEDIA_HEALTH_POLL_S="0.3",
        )
        try:
            service.wait_health()
            with open_channel(service.address) as channel:
                stub = gen_grpc.ImageGenerationServiceStub(channel)
                assert timed_generate(stub, DEADLINE_S)[0] == "OK"

                # Severed: connections reset, new ones refused. Calls fail at once.
                proxy.sever()
                severed = [timed_generate(stub, DEADLINE_S) for _ in range(5)]
                assert {code for code, _ in severed} == {"UNAVAILABLE"}, severed
                assert max(seconds for _, seconds in severed) < 1.0, severed
                severed_not_serving = wait_health(channel, NOT_SERVING, NOT_SERVING_LIMIT_S)
                proxy.restore()
                severed_recovery = wait_health(channel, SERVING, RECOVERY_LIMIT_S)
                assert timed_generate(stub, DEADLINE_S)[0] == "OK"

                # Blackholed: nothing fails, nothing arrives. Calls end at their deadline.
                proxy.blackhole()
                silent_not_serving = wait_health(channel, NOT_SERVING, NOT_SERVING_LIMIT_S)
                silent = [timed_generate(stub, 1.0) for _ in range(3)]
                assert {code for code, _ in silent} == {"DEADLINE_EXCEEDED"}, silent
                assert max(seconds for _, seconds in silent) < 1.0 + DEADLINE_SLACK_S, silent
                proxy.restore()
                silent_recovery = wait_health(channel, SERVING, RECOVERY_LIMIT_S)
                assert timed_generate(stub, DEADLINE_S)[0] == "OK"
        finally:
            service.stop()
    print(
        f"severed: UNAVAILABLE in <= {max(s for _, s in severed):.3f} s, NOT_SERVING after "
        f"{severed_not_serving:.2f} s, SERVING {severed_recovery:.2f} s after restore; "
        f"blackholed: DEADLINE_EXCEEDED at {max(s for _, s in silent):.3f} s (1 s deadline), "
        f"NOT_SERVING after {silent_not_serving:.2f} s, SERVING {silent_recovery:.2f} s after "
        "restore"
    )


def generate(stub: gen_grpc.ImageGenerationServiceStub, seed: int) -> grpc.StatusCode:
    request = gen_pb.GenerateImagesRequest(
        classes=[gen_pb.ClassSelector(name="goldfish")], seed=seed
    )
    started = time.monotonic()
    try:
        stub.GenerateImages(request, timeout=DEADLINE_S)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
        assert code != grpc.StatusCode.INTERNAL, error.details()
    assert time.monotonic() - started < DEADLINE_S + 1.0, "the call outlived its deadline"
    return code


def health(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    return stub.Check(request, timeout=5).status


def test_triton_killed_under_load_then_back(own_stack: Stack) -> None:
    service_name = "genmedia.v1.ImageGenerationService"
    with (
        channel_to(own_stack, GATEWAY) as gateway,
        channel_to(own_stack, IMAGE_GENERATION) as direct,
    ):
        stub = gen_grpc.ImageGenerationServiceStub(gateway)
        assert generate(stub, 0) == grpc.StatusCode.OK

        stop = threading.Event()
        codes: list[grpc.StatusCode] = []

        def load(worker: int) -> None:
            seed = worker * 10_000
            while not stop.is_set():
                seed += 1
                codes.append(generate(stub, seed))

        with ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(load, n) for n in range(4)]
            time.sleep(1.0)
            os.killpg(own_stack.triton.pid, signal.SIGKILL)  # Triton and its model stubs
            killed = time.monotonic()
            while health(direct, service_name) != health_pb2.HealthCheckResponse.NOT_SERVING:
                assert time.monotonic() - killed < 5.0, "still SERVING 5 s after Triton died"
                time.sleep(0.1)
            not_serving_after = time.monotonic() - killed
            during = len(codes)
            time.sleep(2.0)
            outage = codes[during:]
            stop.set()
            for worker in workers:
                worker.result()

        # While Triton was down every call failed fast and said so.
        assert outage, "no call was made during the outage"
        assert set(outage) <= OUTAGE_ANSWERS, set(outage)
        assert not_serving_after < 5.0

        own_stack.start_triton()
        back = time.monotonic()
        while health(direct, service_name) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() - back < RECOVERY_LIMIT_S, "not SERVING again in time"
            time.sleep(0.1)
        recovered_after = time.monotonic() - back
        assert generate(stub, 99) == grpc.StatusCode.OK
        assert recovered_after < RECOVERY_LIMIT_S
        print(
            f"NOT_SERVING {not_serving_after:.2f} s after the kill; SERVING again "
            f"{recovered_after:.2f} s after Triton was ready; {len(outage)} calls during the "
            "outage, all UNAVAILABLE"
        )


# -- Triton stopped with SIGTERM -------------------------------------------------------


def test_sigterm_to_triton_lets_calls_in_flight_finish(own_stack: Stack) -> None:
    """Triton drains on SIGTERM: a call it holds finishes, new ones are refused at once,
    the services turn NOT_SERVING; then it is started again for the tests after this one."""
    # The test before restarted Triton; only image-generation was waited for.
    wait_every_service_serving(own_stack)
    with (
        channel_to(own_stack, GATEWAY) as gateway,
        channel_to(own_stack, IMAGE_GENERATION) as direct,
    ):
        slow = trans_grpc.ImageTranslationServiceStub(gateway)
        images = gen_grpc.ImageGenerationServiceStub(gateway)
        held = ThreadPoolExecutor(1).submit(slow.TranslateImage, SLOW_REQUEST, timeout=20)
        time.sleep(0.5)  # the slow model now holds it

        def generate(_worker: int, _n: int) -> None:
            images.GenerateImages(GOLDFISH, timeout=DEADLINE_S)

        with Traffic(generate, workers=2) as traffic:
            time.sleep(0.5)
            signalled = time.monotonic()
            os.kill(own_stack.triton.pid, signal.SIGTERM)
            not_serving_after = wait_health(direct, NOT_SERVING, NOT_SERVING_LIMIT_S)
            assert held.result(timeout=20).image.data, "the held call was cut"
            held_finished_after = time.monotonic() - signalled
            exit_code = own_stack.triton.wait_exit(timeout_s=40)
        after_signal = [c for c in traffic.snapshot() if c.started > signalled + 0.05]
    assert exit_code == 0
    assert after_signal, "no call was made while Triton stopped"
    assert {c.code for c in after_signal} <= {"OK", "UNAVAILABLE"}, failures(after_signal)
    assert max(c.ended - c.started for c in after_signal) < 1.0, "a refusal was not at once"
    own_stack.start_triton()
    wait_every_service_serving(own_stack)
    print(
        f"held call finished {held_finished_after:.2f} s after SIGTERM; image-generation "
        f"NOT_SERVING after {not_serving_after:.2f} s; {len(after_signal)} calls after the "
        f"signal: {traffic.codes(after_signal)}"
    )
