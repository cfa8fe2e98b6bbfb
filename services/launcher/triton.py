"""Runs the real ``tritonserver`` binary that the nvidia-pytriton wheel ships.

The wheel carries the server, its python backend and a backend stub per
Python version. The stub for the running Python is copied into a private
backend directory, and the environment is set so the stub loads this
interpreter's libpython (pyenv and other non-system Pythons) and finds the
virtual environment's packages (torch, transformers). The stub ignores
PYTHONPATH: the model code is installed in the venv (`make venv`), or named by a
.pth file in its site-packages (bench/gpu/install.sh, for a lent GPU machine).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from genmedia_shared.paths import REPO_ROOT
from services.launcher.ports import LOOPBACK, PortUse, confirm_listener

MODEL_REPOSITORY = REPO_ROOT / "models" / "repository"


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backends: Path
    stub: Path
    libs: Path

    @classmethod
    def find(cls) -> TritonInstall:
        """Locates the server inside the installed nvidia-pytriton wheel."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("nvidia-pytriton is not installed; run `make venv`")
        package = Path(next(iter(spec.submodule_search_locations)))
        server = package / "tritonserver"
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            binary=server / "bin" / "tritonserver",
            backends=server / "backends",
            stub=server / "python_backend_stubs" / python / "triton_python_backend_stub",
            libs=package.parent / "nvidia_pytriton.libs",
        )
        for path in (install.binary, install.backends, install.stub):
            if not path.exists():
                raise RuntimeError(f"{path} is missing from the nvidia-pytriton wheel")
        return install

    def backend_directory(self, work_dir: Path) -> Path:
        """A backend directory whose python backend has this Python's stub."""
        target = work_dir / "backends"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.backends, target, symlinks=True)
        shutil.copy2(self.stub, target / "python" / self.stub.name)
        return target


TORCH_THREADS_ENV = "GENMEDIA_TORCH_THREADS"


def local_torch_threads() -> int:
    """Intra-op threads per model instance on this machine when nothing says otherwise: every
    core but one, which stays for the services and the gateway sharing the machine (with all
    of them, torch's spinning workers and the services' per-token work took turns on the
    same cores: docs/PERFORMANCE.md)."""
    return max(1, (os.cpu_count() or 2) - 1)


def triton_environment(weights_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and the python stubs it starts."""
    env = dict(os.environ if base is None else base)
    env.setdefault(TORCH_THREADS_ENV, str(local_torch_threads()))
    install = TritonInstall.find()
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, str(install.libs), env.get("LD_LIBRARY_PATH", "")) if p
    )
    # The stub runs its own interpreter setup: it finds the virtual
    # environment's packages through the first python on PATH, like PyTriton
    # arranges it, so the venv's bin goes first.
    env["PATH"] = os.pathsep.join(
        p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p
    )
    env["GENMEDIA_WEIGHTS_DIR"] = str(weights_dir)
    return env


@dataclass(frozen=True)
class TritonPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc}"

    def uses(self) -> list[PortUse]:
        return [
            PortUse(self.http, "Triton HTTP"),
            PortUse(self.grpc, "Triton gRPC"),
            PortUse(self.metrics, "Triton metrics"),
        ]


class TritonServer:
    """One tritonserver process, listening on loopback only (it serves no users directly)."""

    def __init__(
        self,
        weights_dir: Path,
        work_dir: Path,
        ports: TritonPorts = TritonPorts(),
        model_repository: Path = MODEL_REPOSITORY,
        log: IO[bytes] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.ports = ports
        self._weights_dir = weights_dir
        self._work_dir = work_dir
        self._model_repository = model_repository
        self._log = log
        self._extra_env = extra_env or {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return self.ports.grpc_url

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.metrics}/metrics"

    def command(self, binary: Path, backends: Path) -> list[str]:
        return [
            str(binary),
            f"--model-repository={self._model_repository}",
            f"--backend-directory={backends}",
            # tritonserver binds 0.0.0.0 by default; only this machine's services call it.
            f"--http-address={LOOPBACK}",
            f"--grpc-address={LOOPBACK}",
            f"--metrics-address={LOOPBACK}",
            f"--http-port={self.ports.http}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true",
            "--disable-auto-complete-config",
            # The repository is fixed at start: no loading or unloading over the API.
            "--model-control-mode=none",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
        ]

    def start(self) -> None:
        install = TritonInstall.find()
        self._work_dir.mkdir(parents=True, exist_ok=True)
        backends = install.backend_directory(self._work_dir)
        env = triton_environment(self._weights_dir) | self._extra_env
        self._process = subprocess.Popen(
            self.command(install.binary, backends),
            env=env,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def is_ready(self) -> bool:
        url = f"http://{LOOPBACK}:{self.ports.http}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Blocks until every model is loaded; raises if Triton exits or stalls."""
        assert self._process is not None, "never started"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._raise_if_exited()
            if self.is_ready():
                # The answer counts only if it came from our child, still running.
                self._raise_if_exited()
                confirm_listener("tritonserver", self._process.pid, self.ports.http)
                return
            time.sleep(0.5)
        raise TimeoutError(f"tritonserver was not ready after {timeout_s:.0f} s")

    def _raise_if_exited(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(
                f"tritonserver exited with code {self._process.returncode} while loading"
            )

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (Triton unloads models and stops its stubs), then SIGKILL if stuck."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def wait_exit(self, timeout_s: float) -> int:
        """The exit code of a Triton that was told to stop (e.g. SIGTERM by a test)."""
        assert self._process is not None, "never started"
        return self._process.wait(timeout=timeout_s)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid
