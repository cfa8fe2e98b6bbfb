"""The production gateway through the real stack: keys, quotas, replicas, TLS, shutdown.

A gateway with API keys and mutual TLS is started beside the session stack,
balancing image generation over the stack's replica and a second one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from services.client import cli
from services.common.registry import ALL_PROCESSES, GATEWAY, IMAGE_GENERATION, TEXT_GENERATION
from services.common.server import LIVENESS_SERVICE
from services.launcher.stack import Stack, free_port
from tests.certs import Pki, make_pki
from tests.integration.conftest import metric_value, scrape
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
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
IMAGES = IMAGE_GENERATION.grpc_services[0]
KEY_LIMITS: dict[str, dict[str, object]] = {
    "full": {},
    "text-only": {"services": ["text-generation"]},
    "rate": {"rate_per_s": 0.25, "burst": 2},
    "single": {"max_concurrent": 1},
    "budget": {"daily": {"images": 3}},
}


# Seed 3 runs the full 1000 tokens with the test weights (about 1.6 s on 2 cores).
LONG_STORY = text_pb.GenerateTextRequest(prompt="Another long story:", max_new_tokens=1000, seed=3)


def one_image(seed: int = 1, count: int = 1) -> gen_pb.GenerateImagesRequest:
    return gen_pb.GenerateImagesRequest(
        classes=[gen_pb.ClassSelector(id=1)], count=count, seed=seed
    )


def trailing(error_or_call: grpc.Call) -> dict[str, str]:
    return dict(error_or_call.trailing_metadata() or ())


def handled_generate_calls(spawned_or_url: str) -> float:
    return metric_value(
        scrape(spawned_or_url), "grpc_server_handled_total", grpc_method="GenerateImages"
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def mtls(pki: Pki, client: bool = True) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client.key.read_bytes() if client else None,
        certificate_chain=pki.client.cert.read_bytes() if client else None,
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateways")


@pytest.fixture(scope="module")
def second_replica(stack: Stack, work: Path) -> Iterator[Spawned]:
    replica = spawn(stack, IMAGE_GENERATION, work)
    try:
        replica.wait_health(SERVING)
        yield replica
    finally:
        replica.stop()


@pytest.fixture(scope="module")
def keys(work: Path) -> dict[str, ApiKey]:
    return write_keys_file(work / "keys.json", KEY_LIMITS)


@pytest.fixture(scope="module")
def secured(
    stack: Stack, second_replica: Spawned, pki: Pki, keys: dict[str, ApiKey], work: Path
) -> Iterator[Spawned]:
    """A gateway with API keys, mutual TLS and two image-generation replicas."""
    gateway = spawn(
        stack,
        GATEWAY,
        work,
        GENMEDIA_AUTH_MODE="api-keys",
        GENMEDIA_API_KEYS_FILE=str(work / "keys.json"),
        GENMEDIA_TLS_CERT_FILE=str(pki.server.cert),
        GENMEDIA_TLS_KEY_FILE=str(pki.server.key),
        GENMEDIA_TLS_CLIENT_CA_FILE=str(pki.ca),
        GENMEDIA_IMAGE_GENERATION_ADDR=(
            f"{stack.ports.address(IMAGE_GENERATION)},{second_replica.address}"
        ),
    )
    try:
        gateway.wait_health(SERVING, credentials=mtls(pki))
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def channel(secured: Spawned, pki: Pki) -> Iterator[grpc.Channel]:
    with open_channel(secured.address, mtls(pki)) as opened:
        yield opened


# -- authentication -----------------------------------------------------------


def test_health_and_reflection_need_no_key(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=IMAGES), timeout=5
    )
    assert reply.status == SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    assert IMAGES in {s.name for s in answer.list_services_response.service}


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing API key"),
        ((("authorization", "Bearer gm_not-a-key"),), "not recognised"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "must be 'Bearer <API key>'"),
    ],
)
def test_missing_or_wrong_key_is_unauthenticated(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    stub = gen_grpc.ImageGenerationServiceStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.ListClasses(gen_pb.ListClassesRequest(), metadata=metadata, timeout=10)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in error.value.details()


def test_key_without_access_to_a_service_is_permission_denied(
    channel: grpc.Channel, keys: dict[str, ApiKey]
) -> None:
    text_only = keys["text-only"]
    with pytest.raises(grpc.RpcError) as error:
        gen_grpc.ImageGenerationServiceStub(channel).ListClasses(
            gen_pb.ListClassesRequest(), metadata=text_only.metadata, timeout=10
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'text-only' may not call ImageGenerationService" in error.value.details()
    reply = text_grpc.TextGenerationServiceStub(channel).GenerateText(
        text_pb.GenerateTextRequest(prompt="Hi", max_new_tokens=2, seed=1),
        metadata=text_only.metadata,
        timeout=30,
    )
    assert reply.usage.generated_tokens == 2


def test_caller_name_not_key_reaches_logs(
    channel: grpc.Channel, keys: dict[str, ApiKey], secured: Spawned, stack: Stack
) -> None:
    full = keys["full"]
    stub = gen_grpc.ImageGenerationServiceStub(channel)
    spoof = ("x-genmedia-caller", "text-only")
    stub.ListClasses(
        gen_pb.ListClassesRequest(), metadata=(*full.metadata, spoof, ("x-request-id", "who-am-i")),
        timeout=10,
    )  # fmt: skip
    with pytest.raises(grpc.RpcError):
        stub.ListClasses(
            gen_pb.ListClassesRequest(), metadata=(spoof, ("x-request-id", "no-key")), timeout=10
        )
    time.sleep(0.3)
    log = secured.log_text()
    events = log_events(log)
    served = [e for e in events if e["correlation_id"] == "who-am-i"]
    assert served and all(e["caller"] == "full" for e in served)
    refused = [e for e in events if e["correlation_id"] == "no-key"]
    assert refused and all(e["caller"] == "-" for e in refused)
    assert {"method": "/genmedia.v1.ImageGenerationService/ListClasses",
            "code": "UNAUTHENTICATED"}.items() <= refused[-1].items()  # fmt: skip
    assert full.key not in log


# -- TLS --------------------------------------------------------------------------


def test_mutual_tls_refuses_plaintext_and_clients_without_a_certificate(
    secured: Spawned, pki: Pki, keys: dict[str, ApiKey]
) -> None:
    attempts = {
        "plaintext": None,
        "no client certificate": mtls(pki, client=False),
        "untrusted server CA": grpc.ssl_channel_credentials(pki.other_ca.read_bytes()),
    }
    for what, credentials in attempts.items():
        with open_channel(secured.address, credentials) as channel:
            with pytest.raises(grpc.RpcError) as error:
                gen_grpc.ImageGenerationServiceStub(channel).ListClasses(
                    gen_pb.ListClassesRequest(), metadata=keys["full"].metadata, timeout=5
                )
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE, what


def test_backends_over_tls(stack: Stack, pki: Pki, work: Path) -> None:
    replica = spawn(
        stack,
        IMAGE_GENERATION,
        work / "tls-backend",
        GENMEDIA_TLS_CERT_FILE=str(pki.server.cert),
        GENMEDIA_TLS_KEY_FILE=str(pki.server.key),
        GENMEDIA_TLS_CLIENT_CA_FILE=str(pki.ca),
    )
    gateway = spawn(
        stack,
        GATEWAY,
        work / "tls-backend",
        GENMEDIA_IMAGE_GENERATION_ADDR=f"localhost:{replica.port}",
        GENMEDIA_BACKEND_TLS_CA_FILE=str(pki.ca),
        GENMEDIA_BACKEND_TLS_CERT_FILE=str(pki.client.cert),
        GENMEDIA_BACKEND_TLS_KEY_FILE=str(pki.client.key),
    )
    try:
        replica.wait_health(SERVING, credentials=mtls(pki))
        # Backend TLS covers every backend; only image generation has it here.
        gateway.wait_health(SERVING, service=IMAGES)
        with open_channel(gateway.address) as channel:
            reply = gen_grpc.ImageGenerationServiceStub(channel).ListClasses(
                gen_pb.ListClassesRequest(), timeout=10
            )
        assert reply.classes
        listed = metric_value(
            scrape(replica.metrics_url), "grpc_server_handled_total", grpc_method="ListClasses"
        )
        assert listed == 1, "the call did not reach the TLS replica"
        assert "(mutual TLS)" in replica.log_text()
    finally:
        gateway.stop()
        replica.stop()


# -- quotas -------------------------------------------------------------------------


def test_rate_limit_is_resource_exhausted_with_retry_after(
    channel: grpc.Channel, keys: dict[str, ApiKey]
) -> None:
    stub = gen_grpc.ImageGenerationServiceStub(channel)
    rate = keys["rate"]
    for _ in range(2):  # the burst
        stub.ListClasses(gen_pb.ListClassesRequest(), metadata=rate.metadata, timeout=10)
    with pytest.raises(grpc.RpcError) as error:
        stub.ListClasses(gen_pb.ListClassesRequest(), metadata=rate.metadata, timeout=10)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over its rate of 0.25 calls/s" in error.value.details()
    retry_after_ms = int(trailing(error.value)["retry-after-ms"])
    assert 1000 <= retry_after_ms <= 4000  # one token at 0.25/s, minus the time spent
    time.sleep(retry_after_ms / 1000)
    stub.ListClasses(gen_pb.ListClassesRequest(), metadata=rate.metadata, timeout=10)


def test_concurrent_calls_over_the_key_limit_are_refused(
    channel: grpc.Channel, keys: dict[str, ApiKey]
) -> None:
    single = keys["single"]
    text = text_grpc.TextGenerationServiceStub(channel)
    stream = text.StreamText(
        LONG_STORY,
        metadata=single.metadata,
        timeout=60,
    )
    next(stream)
    with pytest.raises(grpc.RpcError) as error:
        text.GenerateText(
            text_pb.GenerateTextRequest(prompt="Hi", max_new_tokens=1),
            metadata=single.metadata,
            timeout=10,
        )
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1 calls in flight" in error.value.details()
    assert "retry-after-ms" in trailing(error.value)
    list(stream)
    text.GenerateText(
        text_pb.GenerateTextRequest(prompt="Hi", max_new_tokens=1),
        metadata=single.metadata,
        timeout=30,
    )


def test_daily_image_budget_is_charged_from_backend_usage(
    channel: grpc.Channel, keys: dict[str, ApiKey], secured: Spawned
) -> None:
    budget = keys["budget"]
    stub = gen_grpc.ImageGenerationServiceStub(channel)
    reply, call = stub.GenerateImages.with_call(
        one_image(count=2), metadata=budget.metadata, timeout=60
    )
    assert len(reply.images) == 2
    assert trailing(call)["x-genmedia-usage"] == "images=2"
    with pytest.raises(grpc.RpcError) as error:
        stub.GenerateImages(one_image(count=2), metadata=budget.metadata, timeout=60)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "asks for 2 image(s); 1 of 3 left today" in error.value.details()
    retry_after_s = int(trailing(error.value)["retry-after-ms"]) / 1000
    assert 0 < retry_after_s <= 86400  # until 00:00 UTC
    stub.GenerateImages(one_image(count=1), metadata=budget.metadata, timeout=60)
    with pytest.raises(grpc.RpcError) as error:
        stub.GenerateImages(one_image(count=1), metadata=budget.metadata, timeout=60)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    charged = metric_value(
        scrape(secured.metrics_url), "genmedia_gateway_units_total", key="budget", unit="images"
    )
    assert charged == 3


def test_global_in_flight_limit_sheds_load(stack: Stack, work: Path) -> None:
    gateway = spawn(stack, GATEWAY, work / "shed", GENMEDIA_MAX_IN_FLIGHT="1")
    try:
        gateway.wait_health(SERVING)
        with open_channel(gateway.address) as channel:
            text = text_grpc.TextGenerationServiceStub(channel)
            stream = text.StreamText(
                LONG_STORY,
                timeout=60,
            )
            next(stream)
            with pytest.raises(grpc.RpcError) as error:
                gen_grpc.ImageGenerationServiceStub(channel).ListClasses(
                    gen_pb.ListClassesRequest(), timeout=10
                )
            list(stream)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 1 calls" in error.value.details()
        assert trailing(error.value)["retry-after-ms"] == "1000"
        assert "AUTHENTICATION IS OFF" in gateway.log_text()
    finally:
        gateway.stop()


def test_oversized_message_is_resource_exhausted(
    channel: grpc.Channel, keys: dict[str, ApiKey]
) -> None:
    huge = trans_pb.TranslateImageRequest(image=b"\0" * (33 * 1024 * 1024), model="x")
    with pytest.raises(grpc.RpcError) as error:
        trans_grpc.ImageTranslationServiceStub(channel).TranslateImage(
            huge, metadata=keys["full"].metadata, timeout=30
        )
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- replicas, health, retries ------------------------------------------------------


def test_two_replicas_both_receive_traffic(
    channel: grpc.Channel, keys: dict[str, ApiKey], stack: Stack, second_replica: Spawned
) -> None:
    first_url = f"http://127.0.0.1:{stack.ports.processes[IMAGE_GENERATION.name].metrics}/metrics"
    before = (handled_generate_calls(first_url), handled_generate_calls(second_replica.metrics_url))
    stub = gen_grpc.ImageGenerationServiceStub(channel)
    for seed in range(10):
        stub.GenerateImages(one_image(seed), metadata=keys["full"].metadata, timeout=60)
    after = (handled_generate_calls(first_url), handled_generate_calls(second_replica.metrics_url))
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == 10
    assert min(served) >= 3, f"one replica got almost nothing: {served}"


def test_killing_a_replica_mid_load_loses_no_call(stack: Stack, work: Path) -> None:
    replica = spawn(stack, IMAGE_GENERATION, work / "kill")
    replica.wait_health(SERVING)
    gateway = spawn(
        stack,
        GATEWAY,
        work / "kill",
        GENMEDIA_IMAGE_GENERATION_ADDR=f"{stack.ports.address(IMAGE_GENERATION)},{replica.address}",
        # Room for every call in flight on the killed replica to be retried even
        # on a slow machine; the budget's own rules are unit-tested.
        GENMEDIA_BACKEND_RETRY_BUDGET_TOKENS="20",
    )
    try:
        gateway.wait_health(SERVING)
        failures: list[str] = []
        done = threading.Event()

        def client(worker: int) -> int:
            """Half the workers make slow calls (in flight at the kill), half cheap ones."""
            calls = 0
            with open_channel(gateway.address) as channel:
                stub = gen_grpc.ImageGenerationServiceStub(channel)
                while not done.is_set():
                    try:
                        if worker % 2:
                            stub.GenerateImages(one_image(worker * 1000 + calls), timeout=30)
                        else:
                            stub.ListClasses(gen_pb.ListClassesRequest(), timeout=30)
                    except grpc.RpcError as error:
                        failures.append(f"{error.code().name}: {error.details()}")
                    calls += 1
            return calls

        with ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(client, n) for n in range(4)]
            time.sleep(1.5)
            served_before_kill = metric_value(
                scrape(replica.metrics_url), "grpc_server_handled_total", grpc_service=IMAGES
            )
            replica.stop(signal.SIGKILL)
            time.sleep(2.0)
            done.set()
            total = sum(w.result() for w in workers)
        assert served_before_kill > 0, "the killed replica never had traffic"
        assert total > 20
        assert failures == []
        assert gateway.popen.poll() is None
        with open_channel(gateway.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(service=IMAGES), timeout=5)
        assert reply.status == SERVING
    finally:
        gateway.stop()
        replica.stop()


def test_service_is_not_serving_when_no_backend_is_healthy(stack: Stack, work: Path) -> None:
    gateway = spawn(
        stack,
        GATEWAY,
        work / "nobackend",
        GENMEDIA_IMAGE_GENERATION_ADDR=f"127.0.0.1:{free_port()}",
    )
    try:
        gateway.wait_health(NOT_SERVING)
        gateway.wait_health(SERVING, service=TEXT_GENERATION.grpc_services[0])
        with open_channel(gateway.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service=IMAGES)).status == NOT_SERVING
            # What the liveness probes ask: a backend outage never restarts the gateway.
            liveness = health.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE))
            assert liveness.status == SERVING
            with pytest.raises(grpc.RpcError) as error:
                gen_grpc.ImageGenerationServiceStub(channel).ListClasses(
                    gen_pb.ListClassesRequest(), timeout=10
                )
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no healthy image-generation backend" in error.value.details()
        # The container health check command (compose) says the same.
        port = {"GENMEDIA_GRPC_PORT": gateway.address.rsplit(":", 1)[1]}
        check = [sys.executable, "-m", "services", "healthcheck", "gateway"]
        env = os.environ | port
        overall = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30)
        alive = subprocess.run(
            [*check, "--service", "liveness"], env=env, capture_output=True, text=True, timeout=30
        )
        assert (overall.returncode, alive.returncode) == (1, 0), overall.stdout + alive.stdout
        assert "gateway on :" in alive.stdout and "SERVING" in alive.stdout
    finally:
        gateway.stop()


# -- request ids, shutdown -------------------------------------------------------------


def test_the_gateways_request_id_is_returned_and_passed_downstream_with_the_callers_id(
    channel: grpc.Channel, keys: dict[str, ApiKey], stack: Stack, secured: Spawned
) -> None:
    text = text_grpc.TextGenerationServiceStub(channel)
    request = text_pb.GenerateTextRequest(prompt="Hi", max_new_tokens=2, seed=1)
    reply, call = text.GenerateText.with_call(
        request, metadata=(*keys["full"].metadata, ("x-request-id", "trace-me-42")), timeout=30
    )
    minted = trailing(call)["x-request-id"]
    assert re.fullmatch("[0-9a-f]{32}", minted), minted  # the gateway's, not the caller's
    assert reply.provenance.request_id == minted
    time.sleep(0.3)
    for log in (stack.log_path("text-generation").read_text(), secured.log_text()):
        traced = [e for e in log_events(log) if e["request_id"] == minted]
        assert traced and all(e["caller"] == "full" for e in traced)
        assert all(e["correlation_id"] == "trace-me-42" for e in traced)
        access = [e for e in traced if e["logger"] == "genmedia.access"]
        assert access and access[-1]["code"] == "OK" and access[-1]["duration_ms"] > 0


def test_sigterm_lets_a_stream_through_the_gateway_finish(stack: Stack, work: Path) -> None:
    gateway = spawn(stack, GATEWAY, work / "sigterm", GENMEDIA_SHUTDOWN_GRACE_S="30")
    gateway.wait_health(SERVING)
    try:
        with open_channel(gateway.address) as channel:
            stream = text_grpc.TextGenerationServiceStub(channel).StreamText(LONG_STORY, timeout=60)
            first = next(stream)
            gateway.popen.send_signal(signal.SIGTERM)
            rest = list(stream)
        assert len(rest) > 50, "the stream was not in progress at SIGTERM"
        assert rest[-1].finish_reason == text_pb.FINISH_REASON_LENGTH, "stream was cut"
        assert rest[-1].usage.generated_tokens == 1000
        assert first.text
        assert gateway.popen.wait(timeout=30) == 0
        with open_channel(gateway.address) as channel, pytest.raises(grpc.RpcError) as error:
            gen_grpc.ImageGenerationServiceStub(channel).ListClasses(
                gen_pb.ListClassesRequest(), timeout=2
            )
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        gateway.stop()


def test_cli_calls_the_secured_gateway_with_key_and_mutual_tls(
    secured: Spawned, pki: Pki, keys: dict[str, ApiKey], capsys: pytest.CaptureFixture[str]
) -> None:
    tls = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client.cert),
           "--tls-key", str(pki.client.key)]  # fmt: skip
    target = ["--target", secured.address]
    assert cli.main([*target, *tls, "--api-key", keys["full"].key, "image", "models"]) == 0
    assert "horse2zebra" in capsys.readouterr().out
    assert cli.main([*target, *tls, "image", "models"]) == 1
    assert "UNAUTHENTICATED: missing API key" in capsys.readouterr().err


# -- secrets ------------------------------------------------------------------------


def test_api_keys_never_reach_logs_metrics_or_error_messages(
    channel: grpc.Channel, keys: dict[str, ApiKey], secured: Spawned, stack: Stack
) -> None:
    stub = gen_grpc.ImageGenerationServiceStub(channel)
    details = []
    for key in keys.values():
        try:
            stub.ListClasses(gen_pb.ListClassesRequest(), metadata=key.metadata, timeout=10)
        except grpc.RpcError as error:  # text-only: PERMISSION_DENIED
            details.append(error.details() or "")
    bogus = "gm_" + "x" * 40
    for metadata in ((("authorization", f"Bearer {bogus}"),), (("authorization", bogus),)):
        with pytest.raises(grpc.RpcError) as error:
            stub.ListClasses(gen_pb.ListClassesRequest(), metadata=metadata, timeout=10)
        details.append(error.value.details() or "")
    time.sleep(0.3)

    places = {
        "keyed gateway log": secured.log_text(),
        "keyed gateway metrics": urllib.request.urlopen(secured.metrics_url, timeout=5)
        .read()
        .decode(),
        "error messages": "\n".join(details),
    }
    for process in ALL_PROCESSES:
        path = stack.log_path(process.name)
        if path.exists():
            places[f"stack's {process.name} log"] = path.read_text(errors="replace")
    secrets = [key.key for key in keys.values()] + [bogus]
    leaks = [f"{name} holds a key" for name, text in places.items() for s in secrets if s in text]
    assert not leaks, leaks
    assert "UNAUTHENTICATED" in places["keyed gateway log"]  # the refusals were logged
