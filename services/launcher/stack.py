"""The whole local stack: Triton, the three services and the gateway.

Used by ``make run`` (``python -m services.launcher``) and by the
integration tests, which give it free loopback ports. With
``gateway_replicas`` > 1 it also starts a redis-server and that many gateways
sharing their quotas in it: the first on the gateway's port, the others on
free ones, all listed in ``gateways.txt`` in the work dir.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmedia_shared.paths import REPO_ROOT
from services.common.registry import (
    ALL_PROCESSES,
    BACKENDS,
    GATEWAY,
    IMAGE_GENERATION,
    IMAGE_TRANSLATION,
    ProcessSpec,
)
from services.common.signing_keys import CHAIN_FILE, KEY_FILE, ROOT_FILE, development_credentials
from services.launcher.ports import (
    LOOPBACK,
    NotOurListener,
    PortUse,
    check_free,
    confirm_listener,
)
from services.launcher.redis_server import RedisServer
from services.launcher.repository import (
    InstanceGroup,
    ServedModels,
    build_repository,
    verify_manifest,
)
from services.launcher.triton import TritonPorts, TritonServer
from services.launcher.workdir_lock import WorkDirLock

IMAGE_SERVICES = (IMAGE_GENERATION, IMAGE_TRANSLATION)
# Read by every genmedia process and the gpt2 model: without it they refuse the public
# development watermark keys. A local stack is for development, so it runs with it on.
DEVELOPMENT_MODE_ENV = "GENMEDIA_DEVELOPMENT_MODE"


# Below Linux's ephemeral range (32768-60999 by default): a port picked now and bound
# only once Triton has loaded cannot meanwhile become some outgoing connection's own.
_FREE_PORTS = (20000, 32767)
_picked: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range, not handed out before."""
    for _ in range(1000):
        port = random.randint(*_FREE_PORTS)
        if port in _picked:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        _picked.add(port)
        return port
    raise RuntimeError(f"no free port in {_FREE_PORTS}")


@dataclass(frozen=True)
class ProcessPorts:
    grpc: int
    metrics: int
    http: int = 0
    """The HTTP door's port (the gateway's); 0: none."""


@dataclass(frozen=True)
class GatewayReplica:
    """One gateway process of the stack: ``gateway``, then ``gateway-2``, ``gateway-3``..."""

    name: str
    ports: ProcessPorts

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        """Base URL of its HTTP door (the OpenAI SDKs want ``http_url + "/v1"``)."""
        return f"http://{LOOPBACK}:{self.ports.http}"


@dataclass(frozen=True)
class StackPorts:
    triton: TritonPorts
    processes: dict[str, ProcessPorts]

    @classmethod
    def defaults(cls) -> StackPorts:
        return cls(
            triton=TritonPorts(),
            processes={
                p.name: ProcessPorts(p.grpc_port, p.metrics_port, p.http_port)
                for p in ALL_PROCESSES
            },
        )

    @classmethod
    def free(cls) -> StackPorts:
        return cls(
            triton=TritonPorts(free_port(), free_port(), free_port()),
            processes={
                p.name: ProcessPorts(free_port(), free_port(), free_port() if p.http_port else 0)
                for p in ALL_PROCESSES
            },
        )

    def address(self, process: ProcessSpec) -> str:
        return f"{LOOPBACK}:{self.processes[process.name].grpc}"

    def uses(self) -> list[PortUse]:
        """Every port the stack listens on, Triton's first."""
        uses = self.triton.uses()
        for name, ports in self.processes.items():
            uses += [PortUse(ports.grpc, f"{name} gRPC"), PortUse(ports.metrics, f"{name} metrics")]
            if ports.http:
                uses.append(PortUse(ports.http, f"{name} HTTP"))
        return uses


@dataclass
class Stack:
    weights_dir: Path
    work_dir: Path
    ports: StackPorts = field(default_factory=StackPorts.defaults)
    extra_env: dict[str, str] = field(default_factory=dict)
    """Added to every process's environment (e.g. settings under test)."""
    triton_env: dict[str, str] = field(default_factory=dict)
    instance_group: InstanceGroup | None = None
    """Replaces every model's instance group (e.g. KIND_GPU); None keeps the sources' KIND_AUTO."""
    model_parameters: dict[str, dict[str, str]] = field(default_factory=dict)
    """Replacements of models' config parameters, e.g. {"gpt2": {"max_sequences": "2"}}."""
    extra_models: tuple[Path, ...] = ()
    """More Triton model directories (config.pbtxt + 1/model.py) to serve beside the weights'
    models, e.g. the bench's identity model (the floor of a Triton hop)."""
    milestones: dict[str, float] = field(default_factory=dict)
    """Seconds from start() to Triton ready and to each process SERVING (the cold start)."""
    gateway_replicas: int = 1
    """Gateways to start; more than one share their quotas in a redis-server started too."""
    _gateways: list[GatewayReplica] = field(default_factory=list)
    _redis: RedisServer | None = None
    _triton: TritonServer | None = None
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _lock: WorkDirLock | None = None

    @property
    def triton(self) -> TritonServer:
        assert self._triton is not None, "stack not started"
        return self._triton

    def log_path(self, name: str) -> Path:
        return self.work_dir / "logs" / f"{name}.log"

    def _open_log(self, name: str) -> IO[bytes]:
        path = self.log_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        log = path.open("ab")
        self._logs.append(log)
        return log

    @property
    def gateways(self) -> list[GatewayReplica]:
        """Every gateway of the stack, the one on the gateway's own port first."""
        if not self._gateways:
            first = GatewayReplica(GATEWAY.name, self.ports.processes[GATEWAY.name])
            more = [
                GatewayReplica(
                    f"{GATEWAY.name}-{n}", ProcessPorts(free_port(), free_port(), free_port())
                )
                for n in range(2, self.gateway_replicas + 1)
            ]
            self._gateways = [first, *more]
        return self._gateways

    @property
    def redis(self) -> RedisServer | None:
        """The shared quota store, when there are several gateways."""
        return self._redis

    def process_env(
        self, process: ProcessSpec, ports: ProcessPorts | None = None
    ) -> dict[str, str]:
        ports = ports or self.ports.processes[process.name]
        env = dict(os.environ)
        env.update(
            {
                "GENMEDIA_HOST": LOOPBACK,
                "GENMEDIA_GRPC_PORT": str(ports.grpc),
                "GENMEDIA_METRICS_PORT": str(ports.metrics),
                "GENMEDIA_HTTP_PORT": str(ports.http),
                "GENMEDIA_TRITON_URL": self.ports.triton.grpc_url,
                "GENMEDIA_TOKENIZER_DIR": str(self.weights_dir / "gpt2"),
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
                ),
            }
        )
        signing = self.signing_files()
        if process is GATEWAY:
            for backend in BACKENDS:
                env[backend.addr_setting] = self.ports.address(backend)
            env["GENMEDIA_C2PA_TRUST_ANCHORS_FILE"] = str(signing["root"])
            if self._redis is not None:
                env["GENMEDIA_QUOTA_STORE"] = self._redis.url
                env["GENMEDIA_QUOTA_FALLBACK_REPLICAS"] = str(self.gateway_replicas)
        elif process in IMAGE_SERVICES:
            env["GENMEDIA_C2PA_KEY_FILE"] = str(signing["key"])
            env["GENMEDIA_C2PA_CERT_FILE"] = str(signing["chain"])
        env.update(self.extra_env)
        env[DEVELOPMENT_MODE_ENV] = self.development_mode()
        if process is GATEWAY and "GENMEDIA_API_KEYS_FILE" not in env:
            # A local stack without keys is for development: say so explicitly;
            # the gateway logs a warning about it.
            env.setdefault("GENMEDIA_AUTH_MODE", "open")
        return env

    def development_mode(self) -> str:
        """GENMEDIA_DEVELOPMENT_MODE for every process and Triton: the caller's if set."""
        return self.extra_env.get(
            DEVELOPMENT_MODE_ENV, os.environ.get(DEVELOPMENT_MODE_ENV, "true")
        )

    def triton_extra_env(self) -> dict[str, str]:
        """Added to tritonserver's environment: the gpt2 model reads the development mode."""
        return {DEVELOPMENT_MODE_ENV: self.development_mode(), **self.triton_env}

    def signing_files(self) -> dict[str, Path]:
        """The local run's Content Credentials key, chain and root (made once per work dir)."""
        directory = self.work_dir / "signing"
        names = {"key": KEY_FILE, "chain": CHAIN_FILE, "root": ROOT_FILE}
        paths = {role: directory / name for role, name in names.items()}
        if not all(path.exists() for path in paths.values()):
            paths = development_credentials("genmedia local signer").write(directory)
        return paths

    def start_triton(self, timeout_s: float = 300.0) -> ServedModels:
        """Checks the weights, builds the served repository, starts Triton on it."""
        verify_manifest(self.weights_dir)
        repository = self.work_dir / "repository"
        served = build_repository(
            self.weights_dir, repository, self.instance_group, self.model_parameters
        )
        for model in self.extra_models:
            (repository / model.name).symlink_to(model.resolve(), target_is_directory=True)
        self._triton = TritonServer(
            weights_dir=self.weights_dir,
            work_dir=self.work_dir / "triton",
            ports=self.ports.triton,
            model_repository=repository,
            log=self._open_log("triton"),
            extra_env=self.triton_extra_env(),
        )
        self._triton.start()
        self._triton.wait_ready(timeout_s)
        return served

    def start_process(
        self,
        process: ProcessSpec,
        replica: GatewayReplica | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Starts ``process`` (or one more gateway, ``replica``); ``env`` overrides settings."""
        name = process.name if replica is None else replica.name
        popen = subprocess.Popen(
            [sys.executable, "-m", process.package],
            env={
                **self.process_env(process, None if replica is None else replica.ports),
                **(env or {}),
            },
            cwd=REPO_ROOT,
            stdout=self._open_log(name),
            stderr=subprocess.STDOUT,
        )
        self._processes[name] = popen
        return popen

    def start_redis(self) -> RedisServer:
        self._redis = RedisServer(
            port=free_port(), work_dir=self.work_dir / "redis", log=self._open_log("redis")
        )
        self._redis.start()
        return self._redis

    def write_gateways_file(self) -> Path:
        """``gateways.txt`` in the work dir: one host:port a line, for clients and load tests."""
        path = self.work_dir / "gateways.txt"
        path.write_text("".join(f"{gateway.address}\n" for gateway in self.gateways))
        return path

    def start(
        self, timeout_s: float = 300.0, progress: Callable[[str], None] = lambda _: None
    ) -> None:
        """Starts everything and returns once every process reports SERVING.

        Refuses at once, before writing anything, when another launcher runs from the
        same work dir or a port is taken."""
        self._lock = self._lock or WorkDirLock(self.work_dir)
        self._lock.acquire()
        check_free(self.ports.uses())
        started = time.monotonic()
        if self.gateway_replicas > 1:
            redis = self.start_redis()
            progress(f"redis-server: the gateways' shared quota store on {LOOPBACK}:{redis.port}")
        progress(f"Triton: loading models from {self.weights_dir}...")
        served = self.start_triton(timeout_s)
        self.milestones["Triton"] = time.monotonic() - started
        progress(
            f"Triton: {', '.join(served.triton_models)} ready ({self.milestones['Triton']:.1f} s)"
        )
        for process in BACKENDS:
            self.start_process(process)
        for gateway in self.gateways:
            self.start_process(GATEWAY, gateway)
        for process in BACKENDS:
            self.wait_serving(process, timeout_s=60.0)
            self.milestones[process.name] = time.monotonic() - started
            progress(f"{process.name}: SERVING ({self.milestones[process.name]:.1f} s)")
        for gateway in self.gateways:
            self.wait_serving(GATEWAY, timeout_s=60.0, replica=gateway)
            self.milestones[gateway.name] = time.monotonic() - started
            progress(
                f"{gateway.name}: SERVING on {gateway.address} "
                f"({self.milestones[gateway.name]:.1f} s)"
            )
        if self.gateway_replicas > 1:
            progress(f"gateway addresses written to {self.write_gateways_file()}")

    def wait_serving(
        self, process: ProcessSpec, timeout_s: float, replica: GatewayReplica | None = None
    ) -> None:
        """Returns once the process this stack started answers SERVING on its port."""
        name = process.name if replica is None else replica.name
        port = self.ports.processes[process.name].grpc if replica is None else replica.ports.grpc
        popen = self._processes[name]
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                self._raise_if_exited(name, popen)
                if self._reports_serving(stub):
                    # Another stack's process may have answered: ours must be the listener.
                    self._raise_if_exited(name, popen)
                    self._confirm_listener(name, popen.pid, port)
                    return
                time.sleep(0.2)
        raise TimeoutError(f"{name} not SERVING after {timeout_s:.0f} s; see {self.log_path(name)}")

    @staticmethod
    def _reports_serving(stub: health_pb2_grpc.HealthStub) -> bool:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def _raise_if_exited(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        if popen.poll() is not None:
            raise RuntimeError(
                f"{name} exited with code {popen.returncode}; see {self.log_path(name)}"
            )

    def _confirm_listener(self, name: str, pid: int, port: int) -> None:
        try:
            confirm_listener(name, pid, port)
        except NotOurListener as error:
            raise NotOurListener(f"{error}; see {self.log_path(name)}") from None

    def pid_of(self, process: ProcessSpec | GatewayReplica) -> int:
        return self._processes[process.name].pid

    def stop_process(self, name: str, timeout_s: float = 20.0) -> int | None:
        popen = self._processes.pop(name, None)
        if popen is None:
            return None
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        return popen.returncode

    def stop(self) -> None:
        """Gateways first, then the services, then Triton: callers drain first."""
        backends = [process.name for process in BACKENDS]
        for name in [name for name in self._processes if name not in backends]:
            self.stop_process(name)  # the gateways, however many were started
        for name in backends:
            self.stop_process(name)
        if self._triton is not None:
            self._triton.stop()
        if self._redis is not None:
            self._redis.stop()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._lock is not None:
            self._lock.release()
