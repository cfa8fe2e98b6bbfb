"""genmedia's own processes stopped under traffic: SIGTERM to each (drains, cuts nothing that
started before), and a text-generation replica killed while streams run through the gateway."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.registry import (
    GATEWAY,
    IMAGE_GENERATION,
    IMAGE_TRANSLATION,
    TEXT_GENERATION,
    ProcessSpec,
)
from services.launcher.stack import Stack
from tests.integration.processes import open_channel, spawn
from tools.api_calls import (
    CallOn,
    PerWorker,
    generate,
    long_stream,
    stream,
    translate,
    write,
)
from tools.traffic import Call, Traffic, failures

pytestmark = pytest.mark.integration

GRACE_S = 20.0
# A call started this long before the signal has reached the server.
IN_TRANSIT_S = 0.05
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# What each worker calls, worker by worker (round robin over the list).
CALLS: dict[str, list[CallOn]] = {
    GATEWAY.name: [generate, translate, stream],
    IMAGE_GENERATION.name: [generate],
    IMAGE_TRANSLATION.name: [translate],
    TEXT_GENERATION.name: [stream, write],
}


class HealthWatch:
    """Every overall health status a process announces, with when it arrived."""

    def __init__(self, address: str) -> None:
        self.events: list[tuple[float, int]] = []
        self._channel = open_channel(address)
        watch = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=120
        )
        self._thread = threading.Thread(target=self._record, args=(watch,), daemon=True)
        self._thread.start()

    def _record(self, watch: grpc.Future) -> None:
        try:
            for reply in watch:
                self.events.append((time.monotonic(), reply.status))
        except grpc.RpcError:
            pass  # the process went away

    def first(self, status: int) -> float | None:
        return next((moment for moment, s in self.events if s == status), None)

    def close(self) -> None:
        self._thread.join(timeout=10)
        self._channel.close()


@pytest.mark.parametrize(
    "process",
    [GATEWAY, IMAGE_GENERATION, IMAGE_TRANSLATION, TEXT_GENERATION],
    ids=lambda p: p.name,
)
def test_sigterm_under_traffic_drains_and_cuts_no_call(
    stack: Stack, tmp_path: Path, process: ProcessSpec
) -> None:
    spawned = spawn(stack, process, tmp_path, GENMEDIA_SHUTDOWN_GRACE_S=str(GRACE_S))
    try:
        spawned.wait_health()
        watch = HealthWatch(spawned.address)
        call = PerWorker(spawned.address, CALLS[process.name])
        with Traffic(call, workers=3) as traffic:
            time.sleep(1.5)
            signalled = time.monotonic()
            spawned.popen.send_signal(signal.SIGTERM)
            exit_code = spawned.popen.wait(timeout=GRACE_S + 10)
            exited = time.monotonic()
            time.sleep(0.3)
        watch.close()
        call.close()
    finally:
        spawned.stop()
    calls = traffic.snapshot()
    before = [c for c in calls if c.started < signalled - IN_TRANSIT_S]
    draining = [c for c in calls if c.spans(signalled)]
    after = [c for c in calls if c.started >= signalled]
    refused = [c for c in after if c.code in ("UNAVAILABLE", "CANCELLED")]

    assert exit_code == 0
    assert exited - signalled < GRACE_S
    assert len(before) >= 3, "too little traffic before the signal"
    assert failures(before) == [], "a call that started before SIGTERM was cut"
    assert draining and all(c.code == "OK" for c in draining), draining
    # A call that reached the service as it began to stop is refused UNAVAILABLE. gRPC's
    # own server cancels the few it had queued but not yet handed to a handler (CANCELLED,
    # seen about once in ten runs on two busy cores): never one a handler saw, which would
    # have its access line.
    handled_cancelled = [
        line
        for line in spawned.log_text().splitlines()
        if '"logger": "genmedia.access"' in line and '"code": "CANCELLED"' in line
    ]
    refused_codes = {"UNAVAILABLE"} | (set() if handled_cancelled else {"CANCELLED"})
    assert {c.code for c in after} <= {"OK", *refused_codes}, (failures(after), handled_cancelled)
    # Readiness turns NOT_SERVING first: before the process refuses or exits.
    not_serving = watch.first(NOT_SERVING)
    assert not_serving is not None and signalled <= not_serving <= exited, watch.events
    if refused:
        assert not_serving <= min(c.ended for c in refused) + IN_TRANSIT_S
    print(
        f"{process.name}: {len(before)} calls before SIGTERM, all OK; "
        f"{len(draining)} in flight at the signal finished OK "
        f"(last {max(c.ended for c in draining) - signalled:.2f} s after it); "
        f"NOT_SERVING {not_serving - signalled:.3f} s after the signal; exit 0 after "
        f"{exited - signalled:.2f} s; after the signal: {traffic.codes(after)}"
    )


def test_text_replica_killed_under_streaming_load(stack: Stack, tmp_path: Path) -> None:
    """Streams on the killed replica that had sent tokens fail (they cannot start over);
    every other call, unary ones in flight on it included, succeeds."""
    replica = spawn(stack, TEXT_GENERATION, tmp_path)
    replica.wait_health()
    gateway = spawn(
        stack,
        GATEWAY,
        tmp_path,
        GENMEDIA_TEXT_GENERATION_ADDR=f"{stack.ports.address(TEXT_GENERATION)},{replica.address}",
        GENMEDIA_BACKEND_RETRY_BUDGET_TOKENS="20",
    )
    streaming_workers = 4
    # Workers 0-3 stream, 4-5 make unary calls.
    calls_by_worker: list[CallOn] = [long_stream] * streaming_workers + [write, write]
    try:
        gateway.wait_health()
        call = PerWorker(gateway.address, calls_by_worker)
        with Traffic(call, workers=len(calls_by_worker)) as traffic:
            time.sleep(1.5)
            killed = time.monotonic()
            replica.stop(signal.SIGKILL)
            time.sleep(2.5)
        call.close()
        assert gateway.popen.poll() is None
    finally:
        gateway.stop()
        replica.stop()
    calls = traffic.snapshot()
    streams = [c for c in calls if c.worker < streaming_workers]
    unary = [c for c in calls if c.worker >= streaming_workers]
    failed: list[Call] = [c for c in streams if c.code != "OK"]

    assert failures(unary) == [], "a unary call was lost though it could be retried"
    assert {c.code for c in failed} <= {"UNAVAILABLE"}, failures(failed)
    assert all(c.spans(killed) for c in failed), "a stream failed that was not on the replica"
    assert len(failed) <= streaming_workers
    later = [c for c in calls if c.started > killed + 0.5]
    assert later and failures(later) == [], "calls after the kill did not all succeed"
    print(
        f"replica SIGKILLed: {len(failed)} of {len(streams)} streams failed (in flight on it, "
        f"bound {streaming_workers}), {len(unary)} unary calls all OK, {len(later)} calls "
        "after the kill all OK"
    )
