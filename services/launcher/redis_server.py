"""A local redis-server (Debian's package) for the gateways' shared quota store.

Started by the launcher when ``GENMEDIA_GATEWAY_REPLICAS`` > 1, and by the tests.
Nothing is persisted: a local run's quotas start afresh with the run.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from services.launcher.ports import LOOPBACK

INSTALL_HINT = "install Debian's redis-server (`make redis-server`)"


class RedisServerError(RuntimeError):
    """redis-server is missing, or did not start; the message says where to look."""


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisServerError(f"redis-server not found on PATH: {INSTALL_HINT}")
    return found


@dataclass
class RedisServer:
    port: int
    work_dir: Path
    log: IO[bytes] | None = None
    password: str | None = None
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self._popen is not None, "redis-server not started"
        return self._popen.pid

    def start(self, timeout_s: float = 10.0) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        command = [
            redis_server_binary(),
            "--bind", LOOPBACK,
            "--port", str(self.port),
            "--dir", str(self.work_dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        self._popen = subprocess.Popen(
            command,
            stdout=self.log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        """Returns once redis-server answers PING (a NOAUTH error is an answer too)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._popen is not None
            if self._popen.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with code {self._popen.returncode} "
                    f"(port {self.port} taken?)"
                )
            if self._answers():
                return
            time.sleep(0.05)
        raise RedisServerError(
            f"redis-server not answering on port {self.port} after {timeout_s} s"
        )

    def _answers(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64)[:1] in (b"+", b"-")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is saved."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGKILL)
            self._popen.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._popen is None or self._popen.poll() is not None:
            return
        self._popen.send_signal(signal.SIGTERM)
        try:
            self._popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
