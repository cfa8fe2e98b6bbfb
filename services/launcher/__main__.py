"""python -m services.launcher: the whole stack on this machine until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading

from pydantic import TypeAdapter, ValidationError

from services.common.registry import GATEWAY
from services.common.settings import load_settings
from services.launcher.repository import discover
from services.launcher.settings import LauncherSettings
from services.launcher.stack import DEVELOPMENT_MODE_ENV, Stack

USAGE = """
genmedia is up: gateway on {gateway} (HTTP: {http}); Triton on {triton}; logs in {logs}

Try it (from this directory; `make run` installed the CLI in .venv/bin):
  .venv/bin/genmedia image generate --class seven --class 3 --count 4 --seed 1 --out out/
  .venv/bin/genmedia image translate out/seven-0.png --model handwritten2typeset --out typeset.png
  .venv/bin/genmedia text generate "Return the" --stream
  (.venv/bin/genmedia image classes | image models | models list: see what is there)
  curl -s {first_http}/v1/completions -d '{{"prompt": "Return the", "max_tokens": 16}}'

{notes}
Ctrl-C stops everything.
"""
OPEN_MODE_NOTE = """
The gateway runs WITHOUT authentication (GENMEDIA_AUTH_MODE=open) because
GENMEDIA_API_KEYS_FILE is not set: fine on this machine, never in front of users.
"""
DEVELOPMENT_MODE_NOTE = f"""
Development mode ({DEVELOPMENT_MODE_ENV}=true): the processes accept the public
development watermark keys, with which anyone can forge or strip the marks:
fine on this machine, never in front of users.
"""


def is_true(value: str | None) -> bool:
    """A boolean setting read as the processes' settings read it (true, 1, yes, on...)."""
    try:
        return value is not None and TypeAdapter(bool).validate_python(value)
    except ValidationError:
        return False


def start_up_notes(stack: Stack) -> str:
    """What a user must know about how this local stack differs from a deployment."""
    gateway_env = stack.process_env(GATEWAY)
    notes = [OPEN_MODE_NOTE] if gateway_env.get("GENMEDIA_AUTH_MODE") == "open" else []
    if is_true(gateway_env.get(DEVELOPMENT_MODE_ENV)):
        notes.append(DEVELOPMENT_MODE_NOTE)
    return "".join(notes)


def main() -> None:
    settings = load_settings(LauncherSettings)
    if not discover(settings.weights_dir).triton_models:
        raise SystemExit(
            f"no model weights in {settings.weights_dir}: set GENMEDIA_WEIGHTS_DIR to the "
            "demo pack (models/demo), the output of `genmedia models fetch`, or of "
            "`make weights` (var/weights)"
        )
    stack = Stack(
        weights_dir=settings.weights_dir,
        work_dir=settings.work_dir,
        gateway_replicas=settings.gateway_replicas,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stack.start(
            timeout_s=settings.startup_timeout_s, progress=lambda line: print(line, flush=True)
        )
        print(
            USAGE.format(
                gateway=", ".join(gateway.address for gateway in stack.gateways),
                http=", ".join(gateway.http_url for gateway in stack.gateways),
                first_http=stack.gateways[0].http_url,
                triton=stack.triton.grpc_url,
                logs=settings.work_dir / "logs",
                notes=start_up_notes(stack),
            ),
            flush=True,
        )
        stop.wait()
    except (RuntimeError, TimeoutError) as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        print("stopping...", flush=True)
        stack.stop()


if __name__ == "__main__":
    main()
