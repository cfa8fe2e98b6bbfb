"""The launcher beside a running stack: Triton on loopback only, a second stack refused."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from services.common.registry import GATEWAY
from services.launcher.ports import PortInUse
from services.launcher.stack import ProcessPorts, Stack, StackPorts, free_port
from services.launcher.workdir_lock import WorkDirBusy
from tests.integration.conftest import TEST_STACK_ENV

pytestmark = pytest.mark.integration

REFUSED_WITHIN_S = 2.0


def non_loopback_addresses() -> list[str]:
    return [
        address.address
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family == socket.AF_INET and not address.address.startswith("127.")
    ]


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    # gRPC listens on an IPv6 socket bound to ::ffff:127.0.0.1 for 127.0.0.1.
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def test_triton_listens_on_loopback_only(stack: Stack) -> None:
    ports = {use.port for use in stack.ports.triton.uses()}
    listening = [
        connection.laddr
        for connection in psutil.Process(stack.triton.pid).net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN
    ]
    assert {address.port for address in listening} == ports
    assert all(is_loopback(address.ip) for address in listening), listening
    # And so this machine's other addresses are refused.
    for address in non_loopback_addresses():
        for port in ports:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, port), timeout=2).close()


def log_sizes(stack: Stack) -> dict[Path, int]:
    return {log: log.stat().st_size for log in (stack.work_dir / "logs").glob("*.log")}


def test_a_second_stack_on_the_same_work_dir_refuses_at_once_and_leaves_it_alone(
    stack: Stack,
) -> None:
    sizes = log_sizes(stack)
    repository = (stack.work_dir / "repository").stat().st_mtime_ns
    second = Stack(
        weights_dir=stack.weights_dir,
        work_dir=stack.work_dir,
        ports=StackPorts.free(),
        extra_env=TEST_STACK_ENV,
    )
    started = time.monotonic()
    with pytest.raises(WorkDirBusy) as refused:
        second.start(timeout_s=60)
    second.stop()
    assert time.monotonic() - started < REFUSED_WITHIN_S
    assert f"{stack.work_dir} is in use by another launcher (pid {os.getpid()})" in str(
        refused.value
    )
    assert "GENMEDIA_WORK_DIR" in str(refused.value)
    assert log_sizes(stack) == sizes
    assert (stack.work_dir / "repository").stat().st_mtime_ns == repository


def test_a_stack_whose_gateway_port_is_taken_refuses_naming_port_and_holder(
    stack: Stack, tmp_path: Path
) -> None:
    taken = stack.ports.processes[GATEWAY.name].grpc
    free = StackPorts.free()
    ports = StackPorts(
        triton=free.triton,
        processes={**free.processes, GATEWAY.name: ProcessPorts(taken, free_port())},
    )
    second = Stack(weights_dir=stack.weights_dir, work_dir=tmp_path, ports=ports)
    started = time.monotonic()
    with pytest.raises(PortInUse) as refused:
        second.start(timeout_s=60)
    second.stop()
    assert time.monotonic() - started < REFUSED_WITHIN_S
    python = Path(sys.executable).name
    assert str(refused.value) == (
        f"port {taken} (gateway gRPC) is in use by pid {stack.pid_of(GATEWAY)} "
        f"({python} -m {GATEWAY.package})"
    )
    assert not (tmp_path / "logs").exists()
