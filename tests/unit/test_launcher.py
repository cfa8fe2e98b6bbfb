"""The local launcher's guards: its own work dir, free ports, its own children answering,
Triton on loopback, and development mode for what it starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.registry import GATEWAY, IMAGE_GENERATION
from services.launcher.__main__ import DEVELOPMENT_MODE_NOTE, is_true, start_up_notes
from services.launcher.ports import (
    NotOurListener,
    PortInUse,
    PortUse,
    check_free,
    confirm_listener,
)
from services.launcher.stack import DEVELOPMENT_MODE_ENV, Stack, StackPorts, free_port
from services.launcher.triton import TritonPorts, TritonServer
from services.launcher.workdir_lock import LOCK_FILE, WorkDirBusy, WorkDirLock

# A child that listens (sharing the port as gRPC servers do) or holds a work-dir lock,
# says so on stdout, then waits to be killed.
LISTENER = """
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.listen()
print("ready", flush=True)
time.sleep(60)
"""
LOCK_HOLDER = """
import sys, time
from pathlib import Path
from services.launcher.workdir_lock import WorkDirLock
WorkDirLock(Path(sys.argv[1])).acquire()
print("ready", flush=True)
time.sleep(60)
"""


def child(script: str, *args: str) -> subprocess.Popen[str]:
    popen = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    )
    assert popen.stdout is not None and popen.stdout.readline() == "ready\n"
    return popen


@pytest.fixture
def listening_child() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    popen = child(LISTENER, "127.0.0.1", str(port))
    yield popen, port
    popen.kill()
    popen.wait()


def listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket()
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen()
    return sock


# -- ports --------------------------------------------------------------------------


def test_a_taken_port_is_refused_naming_the_port_its_use_and_the_holder(
    listening_child: tuple[subprocess.Popen[str], int],
) -> None:
    popen, port = listening_child
    with pytest.raises(PortInUse) as refused:
        check_free([PortUse(free_port(), "Triton HTTP"), PortUse(port, "gateway gRPC")])
    assert str(refused.value) == (
        f"port {port} (gateway gRPC) is in use by pid {popen.pid} "
        f"({Path(sys.executable).name} -c import socket, sys, time sock = socket.socket()...)"
    )


def test_a_listener_on_every_interface_takes_the_loopback_port_too() -> None:
    port = free_port()
    refused = pytest.raises(PortInUse, match=f"port {port} \\(Triton gRPC\\) is in use by pid")
    with listen("0.0.0.0", port), refused:
        check_free([PortUse(port, "Triton gRPC")])
    check_free([PortUse(port, "Triton gRPC")])


def test_ports_taken_by_one_process_are_named_together() -> None:
    grpc_port, metrics_port = free_port(), free_port()
    uses = [PortUse(grpc_port, "gateway gRPC"), PortUse(metrics_port, "gateway metrics")]
    refused = pytest.raises(PortInUse, match=(
        f"^ports {grpc_port} \\(gateway gRPC\\) and {metrics_port} \\(gateway metrics\\) "
        f"are in use by pid {os.getpid()} \\("
    ))  # fmt: skip
    with listen("127.0.0.1", grpc_port), listen("127.0.0.1", metrics_port), refused:
        check_free(uses)


def test_the_stack_checks_all_of_tritons_and_every_processs_ports() -> None:
    ports = StackPorts.defaults()
    uses = {use.purpose: use.port for use in ports.uses()}
    assert uses["Triton HTTP"] == 8000 and uses["Triton metrics"] == 8002
    assert uses["gateway gRPC"] == 50051 and uses["gateway metrics"] == 9101
    assert uses["gateway HTTP"] == 8080  # the HTTP door; no backend has one
    assert len(uses) == 3 + 2 * len(ports.processes) + 1


def test_an_answer_counts_only_from_the_process_that_listens(
    listening_child: tuple[subprocess.Popen[str], int],
) -> None:
    popen, port = listening_child
    confirm_listener("gateway", popen.pid, port)
    ours = child(LISTENER, "127.0.0.1", str(free_port()))  # alive, but listening elsewhere
    try:
        with pytest.raises(NotOurListener) as refused:
            confirm_listener("gateway", ours.pid, port)
    finally:
        ours.kill()
        ours.wait()
    assert str(refused.value) == (
        f"port {port} answered, but the gateway this launcher started (pid {ours.pid}) "
        f"does not listen on it: pid {popen.pid} ({Path(sys.executable).name} -c import "
        "socket, sys, time sock = socket.socket()...) does"
    )


def test_a_port_shared_through_so_reuseport_is_not_ours(
    listening_child: tuple[subprocess.Popen[str], int],
) -> None:
    popen, port = listening_child
    shared = pytest.raises(NotOurListener, match=f"shares port {port} with pid {os.getpid()} ")
    with listen("127.0.0.1", port, reuse_port=True), shared:
        confirm_listener("gateway", popen.pid, port)


# -- work dir lock ------------------------------------------------------------------


def test_a_second_lock_on_a_work_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = WorkDirLock(tmp_path)
    first.acquire()
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(WorkDirBusy) as refused:
        WorkDirLock(tmp_path).acquire()
    assert str(refused.value) == (
        f"{tmp_path} is in use by another launcher (pid {os.getpid()}), whose stack serves "
        "from it: stop that one first, or give a second stack its own GENMEDIA_WORK_DIR"
    )
    first.release()
    second = WorkDirLock(tmp_path)
    second.acquire()
    second.release()


def test_a_lock_held_by_another_process_is_freed_when_it_dies(tmp_path: Path) -> None:
    holder = child(LOCK_HOLDER, str(tmp_path))
    with pytest.raises(WorkDirBusy, match=f"pid {holder.pid}"):
        WorkDirLock(tmp_path).acquire()
    holder.kill()  # as a launcher killed with SIGKILL: no clean-up ran
    holder.wait()
    lock = WorkDirLock(tmp_path)
    lock.acquire()
    assert lock.held
    lock.release()


def test_a_refused_stack_writes_nothing_into_the_work_dir(tmp_path: Path) -> None:
    ports = StackPorts.free()
    stack = Stack(weights_dir=tmp_path / "weights", work_dir=tmp_path / "run", ports=ports)
    gateway_port = ports.processes[GATEWAY.name].grpc
    refused = pytest.raises(PortInUse, match=f"port {gateway_port} \\(gateway gRPC\\) is in use")
    with listen("127.0.0.1", gateway_port), refused:
        stack.start(timeout_s=5)
    stack.stop()
    assert [p.name for p in (tmp_path / "run").iterdir()] == [LOCK_FILE]

    holder = WorkDirLock(tmp_path / "run")
    holder.acquire()
    with pytest.raises(WorkDirBusy):
        Stack(weights_dir=tmp_path / "weights", work_dir=tmp_path / "run").start(timeout_s=5)
    holder.release()
    assert [p.name for p in (tmp_path / "run").iterdir()] == [LOCK_FILE]


# -- Triton on loopback, development mode -------------------------------------------


def test_triton_listens_on_loopback_only(tmp_path: Path) -> None:
    server = TritonServer(tmp_path, tmp_path, TritonPorts(1, 2, 3))
    command = server.command(Path("tritonserver"), tmp_path / "backends")
    for endpoint in ("http", "grpc", "metrics"):
        assert f"--{endpoint}-address=127.0.0.1" in command


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.delenv(DEVELOPMENT_MODE_ENV, raising=False)
    return Stack(weights_dir=tmp_path / "weights", work_dir=tmp_path, ports=StackPorts.free())


def test_the_local_stack_runs_every_process_and_triton_in_development_mode(stack: Stack) -> None:
    for process in (GATEWAY, IMAGE_GENERATION):
        assert stack.process_env(process)[DEVELOPMENT_MODE_ENV] == "true"
    assert stack.triton_extra_env()[DEVELOPMENT_MODE_ENV] == "true"
    assert DEVELOPMENT_MODE_NOTE in start_up_notes(stack)


def test_a_development_mode_given_in_extra_env_wins(stack: Stack) -> None:
    stack.extra_env[DEVELOPMENT_MODE_ENV] = "false"
    assert stack.process_env(GATEWAY)[DEVELOPMENT_MODE_ENV] == "false"
    assert stack.triton_extra_env()[DEVELOPMENT_MODE_ENV] == "false"
    assert DEVELOPMENT_MODE_NOTE not in start_up_notes(stack)


def test_a_development_mode_in_the_callers_environment_wins(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEVELOPMENT_MODE_ENV, "0")
    assert stack.process_env(IMAGE_GENERATION)[DEVELOPMENT_MODE_ENV] == "0"
    assert stack.triton_extra_env()[DEVELOPMENT_MODE_ENV] == "0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("on", True), ("false", False), ("0", False), ("x", False)],
)
def test_the_start_up_note_reads_the_mode_as_the_settings_do(value: str, expected: bool) -> None:
    assert is_true(value) is expected
