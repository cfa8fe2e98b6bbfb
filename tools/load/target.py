"""The gateway a load run calls: one already running, or a local stack started for the run."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.common.registry import GATEWAY
from services.launcher.repository import discover
from tools.keyed_stack import stack_with_api_key
from tools.load.settings import LoadSettings


@dataclass(frozen=True)
class Target:
    address: str
    """host:port of the gateway, locust's --host."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables locust needs on top of the runner's own environment (the API key)."""


class TargetError(RuntimeError):
    """The gateway to load is not there, or the local stack did not start."""


def wait_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fails fast on a wrong address instead of a run of UNAVAILABLE failures."""
    if os.environ.get("GENMEDIA_LOADTEST_TLS") == "1":
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials())
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise TargetError(f"no gateway answers at {address} within {timeout_s:.0f} s") from None


@contextlib.contextmanager
def local_stack(weights_dir: Path) -> Iterator[Target]:
    """The whole stack on free ports, with API keys on as in production, stopped at the end."""
    weights_dir = weights_dir.resolve()  # the stack's processes run from the repository root
    if not discover(weights_dir).triton_models:
        raise TargetError(f"no model weights in {weights_dir}")
    with tempfile.TemporaryDirectory(prefix="genmedia-load-") as scratch, ExitStack() as running:
        print(f"starting the local stack on {weights_dir}...", flush=True)
        try:
            stack, key = running.enter_context(
                stack_with_api_key(
                    weights_dir, Path(scratch), progress=lambda line: print(f"  {line}", flush=True)
                )
            )
        except (RuntimeError, TimeoutError) as exc:  # start-up failures; their logs are printed
            raise TargetError(f"the local stack did not start: {exc}") from None
        try:
            # The key file variable would win over the key in the locustfile; TLS is off here.
            yield Target(
                address=stack.ports.address(GATEWAY),
                env={
                    "GENMEDIA_LOADTEST_HTTP_HOST": stack.gateways[0].http_url,
                    "GENMEDIA_API_KEY": key,
                    "GENMEDIA_API_KEY_FILE": "",
                    "GENMEDIA_LOADTEST_TLS": "0",
                },
            )
        finally:
            print("stopping the local stack...", flush=True)


@contextlib.contextmanager
def gateway_to_load(settings: LoadSettings) -> Iterator[Target]:
    if settings.target:
        wait_reachable(settings.target)
        http = {"GENMEDIA_LOADTEST_HTTP_HOST": settings.http_target} if settings.http_target else {}
        yield Target(address=settings.target, env=http)
    else:
        with local_stack(settings.weights_dir) as target:
            yield target
