"""Faults on purpose, on a stack of its own: Triton killed under load and started again."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from services.common.registry import GATEWAY, IMAGE_GENERATION
from services.launcher.stack import Stack
from tests.integration.conftest import TEST_STACK_ENV, channel_to, running_stack, weights_dir

pytestmark = pytest.mark.integration

DEADLINE_S = 5.0
# What the services promise once Triton is back (health polled every 0.5 s here,
# reconnection backoff at most 1 s): serving again within this.
RECOVERY_LIMIT_S = 10.0
OUTAGE_ANSWERS = {grpc.StatusCode.UNAVAILABLE}


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        weights_dir(), tmp_path_factory.mktemp("faults"), extra_env=TEST_STACK_ENV
    ) as running:
        yield running


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
