"""The real stack on free loopback ports: tritonserver, three services, gateway."""

from __future__ import annotations

import contextlib
import os
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from genmedia_shared.paths import REPO_ROOT
from services.common.registry import GATEWAY, ProcessSpec
from services.launcher.stack import Stack, StackPorts

pytestmark = pytest.mark.integration


def weights_dir() -> Path:
    path = Path(os.environ.get("GENMEDIA_WEIGHTS_DIR", REPO_ROOT / "var" / "weights"))
    if not (path / "biggan" / "config.json").exists():
        pytest.fail(f"no weights in {path}: run `make weights` (make test does it)")
    return path


@contextlib.contextmanager
def running_stack(weights: Path, work_dir: Path, **options: Any) -> Iterator[Stack]:
    """A started stack on free ports; its logs are printed if it fails to start."""
    running = Stack(weights_dir=weights, work_dir=work_dir, ports=StackPorts.free(), **options)
    try:
        running.start(timeout_s=300)
    except BaseException:
        running.stop()
        for log in sorted((work_dir / "logs").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        raise
    try:
        yield running
    finally:
        running.stop()


# Quick health polling and a short drain, for every stack the tests start.
TEST_STACK_ENV = {"GENMEDIA_HEALTH_POLL_S": "0.5", "GENMEDIA_SHUTDOWN_GRACE_S": "5"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        weights_dir(), tmp_path_factory.mktemp("stack"), extra_env=TEST_STACK_ENV
    ) as running:
        yield running


def channel_to(stack: Stack, process: ProcessSpec) -> grpc.Channel:
    return grpc.insecure_channel(
        stack.ports.address(process),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> Iterator[grpc.Channel]:
    with channel_to(stack, GATEWAY) as channel:
        yield channel


@pytest.fixture(scope="session", params=["gateway", "direct"])
def connect(
    request: pytest.FixtureRequest, stack: Stack
) -> Iterator[Callable[[ProcessSpec], grpc.Channel]]:
    """Every public RPC is tested through the gateway and against its service directly.

    ``connect(IMAGE_GENERATION)`` is a channel to the gateway, or to the
    image-generation service itself, depending on the parameter.
    """
    channels: dict[str, grpc.Channel] = {}

    def get(process: ProcessSpec) -> grpc.Channel:
        target = GATEWAY if request.param == "gateway" else process
        if target.name not in channels:
            channels[target.name] = channel_to(stack, target)
        return channels[target.name]

    yield get
    for channel in channels.values():
        channel.close()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def metric_samples(text: str, name: str, **labels: str) -> list[float]:
    """The values of the samples of ``name`` whose labels include ``labels`` (none: [])."""
    values = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            values.append(float(line.rsplit(" ", 1)[1]))
    return values


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none match)."""
    return sum(metric_samples(text, name, **labels), 0.0)
