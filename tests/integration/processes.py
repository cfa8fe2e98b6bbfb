"""Extra gateways and backend replicas beside the session stack, each with its own settings."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmedia_shared.paths import REPO_ROOT
from services.common.registry import GATEWAY, ProcessSpec
from services.gateway.keys import hash_key, new_key
from services.launcher.stack import Stack, free_port
from tools.api_calls import open_channel


@dataclass
class Spawned:
    """One genmedia process started by a test."""

    process: ProcessSpec
    popen: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path
    http_port: int = 0
    """Its HTTP door's port (a gateway's); 0: none."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_health(
        self,
        status: int = health_pb2.HealthCheckResponse.SERVING,
        service: str = "",
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.process.name} exited: {self.log_text()[-3000:]}")
            with open_channel(self.address, credentials) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=1.0
                    )
                    if reply.status == status:
                        return
                except grpc.RpcError:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.process.name} not in status {status}: {self.log_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


def log_events(text: str) -> list[dict[str, object]]:
    """The JSON log records of a process's output: not gRPC core's own lines (not JSON), nor
    the audit events a backend writes to stdout by default (no level)."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if "level" in event:
                events.append(event)
    return events


def spawn(stack: Stack, process: ProcessSpec, work_dir: Path, **env: str) -> Spawned:
    """Starts ``process`` on new ports with the stack's settings plus ``env``."""
    port, metrics_port = free_port(), free_port()
    http_port = free_port() if process.http_port else 0
    variables = stack.process_env(process) | {
        "GENMEDIA_GRPC_PORT": str(port),
        "GENMEDIA_METRICS_PORT": str(metrics_port),
        "GENMEDIA_HTTP_PORT": str(http_port),
        "GENMEDIA_HEALTH_POLL_S": "0.3",
    }
    variables.update(env)
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / f"{process.name}-{port}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", process.package],
            env=variables,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Spawned(process, popen, port, metrics_port, log, http_port)


@dataclass(frozen=True)
class ApiKey:
    name: str
    key: str

    @property
    def metadata(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.key}"),)


def write_keys_file(path: Path, entries: dict[str, dict[str, object]]) -> dict[str, ApiKey]:
    """A keys file with one fresh key per entry (name -> limits); returns the keys."""
    keys = {name: ApiKey(name, new_key()) for name in entries}
    document = {
        "keys": [
            {"name": name, "sha256": hash_key(keys[name].key), **limits}
            for name, limits in entries.items()
        ]
    }
    path.write_text(json.dumps(document, indent=2))
    return keys


def running(spawned: Spawned) -> Iterator[Spawned]:
    try:
        yield spawned
    finally:
        spawned.stop()


__all__ = [
    "GATEWAY",
    "ApiKey",
    "Spawned",
    "log_events",
    "open_channel",
    "running",
    "spawn",
    "write_keys_file",
]
