"""The gateway a load run calls: one already running, or a local stack started for the run."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.common.registry import GATEWAY
from services.gateway.keys import hash_key, new_key
from services.launcher.repository import discover
from services.launcher.stack import Stack, StackPorts
from tests.load.settings import LoadSettings


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
    with tempfile.TemporaryDirectory(prefix="genmedia-load-") as scratch:
        work_dir = Path(scratch)
        key = new_key()
        keys_file = work_dir / "keys.json"
        # No limits on this key: the run measures the stack, not the quotas.
        keys_file.write_text(json.dumps({"keys": [{"name": "load", "sha256": hash_key(key)}]}))
        stack = Stack(
            weights_dir=weights_dir,
            work_dir=work_dir,
            ports=StackPorts.free(),
            extra_env={
                "GENMEDIA_AUTH_MODE": "api-keys",
                "GENMEDIA_API_KEYS_FILE": str(keys_file),
                "GENMEDIA_LOG_LEVEL": "warning",
            },
        )
        print(f"starting the local stack on {weights_dir}...", flush=True)
        try:
            stack.start(timeout_s=300, progress=lambda line: print(f"  {line}", flush=True))
        except BaseException as exc:  # Ctrl-C included: nothing may outlive the runner
            stack.stop()
            if not isinstance(exc, RuntimeError | TimeoutError):  # start-up failures
                raise
            for log in sorted((work_dir / "logs").glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}", flush=True)
            raise TargetError(f"the local stack did not start: {exc}") from None
        try:
            # The key file variable would win over the key in the locustfile; TLS is off here.
            yield Target(
                address=stack.ports.address(GATEWAY),
                env={
                    "GENMEDIA_API_KEY": key,
                    "GENMEDIA_API_KEY_FILE": "",
                    "GENMEDIA_LOADTEST_TLS": "0",
                },
            )
        finally:
            print("stopping the local stack...", flush=True)
            stack.stop()


@contextlib.contextmanager
def gateway_to_load(settings: LoadSettings) -> Iterator[Target]:
    if settings.target:
        wait_reachable(settings.target)
        yield Target(address=settings.target)
    else:
        with local_stack(settings.weights_dir) as target:
            yield target
