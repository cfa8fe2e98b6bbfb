"""SIGTERM: health turns NOT_SERVING, in-flight streams finish, the process exits 0."""

import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmedia.v1 import text_generation_pb2 as pb
from genmedia.v1 import text_generation_pb2_grpc as pb_grpc
from genmedia_shared.paths import REPO_ROOT
from services.common.registry import TEXT_GENERATION
from services.launcher.stack import free_port

pytestmark = pytest.mark.integration


def test_sigterm_drains_an_in_flight_stream_and_reports_not_serving(stack, tmp_path) -> None:
    port = free_port()
    env = stack.process_env(TEXT_GENERATION) | {
        "GENMEDIA_GRPC_PORT": str(port),
        "GENMEDIA_METRICS_PORT": str(free_port()),
        "GENMEDIA_SHUTDOWN_GRACE_S": "20",
    }
    log = (tmp_path / "text.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", TEXT_GENERATION.package], env=env, cwd=REPO_ROOT, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            statuses: list[int] = []
            deadline = time.monotonic() + 60
            while health_status(health) != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, (tmp_path / "text.log").read_text()
                time.sleep(0.2)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            watcher = threading.Thread(
                target=lambda: statuses.extend(r.status for r in iter_ok(watch))
            )
            watcher.start()

            stub = pb_grpc.TextGenerationServiceStub(channel)
            request = pb.GenerateTextRequest(prompt="Once", max_new_tokens=300, seed=1)
            stream = stub.StreamText(request, timeout=60)
            first = next(stream)
            process.send_signal(signal.SIGTERM)
            rest = list(stream)
            watcher.join(timeout=30)
        assert process.wait(timeout=30) == 0
        final = rest[-1] if rest else first
        assert final.finish_reason != pb.FINISH_REASON_UNSPECIFIED, "stream was cut"
        assert final.usage.generated_tokens > 0
        assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def health_status(stub: health_pb2_grpc.HealthStub) -> int:
    try:
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
    except grpc.RpcError:
        return health_pb2.HealthCheckResponse.UNKNOWN


def iter_ok(stream):
    try:
        yield from stream
    except grpc.RpcError:
        return
