"""A local stack whose gateway asks for an API key, for runs that measure the stack as users
reach it (the benches, the load test): one new key without limits, so a run measures the
stack, not the quotas."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from services.gateway.keys import hash_key, new_key
from services.launcher.stack import Stack, StackPorts


@contextlib.contextmanager
def stack_with_api_key(
    weights_dir: Path,
    work_dir: Path,
    timeout_s: float = 300.0,
    progress: Callable[[str], None] = lambda _: None,
    **options: Any,
) -> Iterator[tuple[Stack, str]]:
    """A started stack on free ports whose gateway requires API keys, and one new key without
    limits (a run measures the stack, not the quotas); stopped at the end. If it fails to
    start, the tail of each log goes to ``progress`` before the error is raised."""
    key = new_key()
    keys_file = work_dir / "keys.json"
    keys_file.write_text(json.dumps({"keys": [{"name": "local-run", "sha256": hash_key(key)}]}))
    stack = Stack(
        weights_dir=weights_dir,
        work_dir=work_dir,
        ports=StackPorts.free(),
        extra_env={
            "GENMEDIA_AUTH_MODE": "api-keys",
            "GENMEDIA_API_KEYS_FILE": str(keys_file),
            "GENMEDIA_LOG_LEVEL": "warning",
        },
        **options,
    )
    try:
        stack.start(timeout_s=timeout_s, progress=progress)
    except BaseException as error:  # Ctrl-C included: nothing may outlive the caller
        stack.stop()
        if isinstance(error, RuntimeError | TimeoutError):
            for log in sorted((work_dir / "logs").glob("*.log")):
                progress(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    try:
        yield stack, key
    finally:
        stack.stop()
