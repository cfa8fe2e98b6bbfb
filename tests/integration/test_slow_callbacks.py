"""Nothing holds the event loop: the gateway and the text-generation service, in asyncio's
debug mode (``GENMEDIA_ASYNCIO_DEBUG_SLOW_MS``), run no callback that takes 20 ms of the
loop's CPU while streams, whole generations and long prompts (tokenized, audited) run
concurrently through them.

Debug mode's own warnings ("Executing ... took 0.031 seconds") measure wall time: on this
kind of shared two-core host any process, even an idle one at the highest priority, is
descheduled for 15-80 ms now and then under load, and the callbacks those warnings name
used under 1 ms of CPU. They are printed, not failed on; the services log each callback's
own CPU time beside them (services/common/server.py), and that is what must stay under 20 ms.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from genmedia.v1 import text_generation_pb2 as pb
from genmedia.v1 import text_generation_pb2_grpc as pb_grpc
from services.common.registry import GATEWAY, TEXT_GENERATION
from services.launcher.stack import Stack
from tests.integration.processes import Spawned, log_events, open_channel, spawn

pytestmark = pytest.mark.integration

SLOW_MS = 20
DEBUG_ENV = {"GENMEDIA_ASYNCIO_DEBUG_SLOW_MS": str(SLOW_MS)}
CALLERS = 8
ROUNDS = 3
WALL_SLOW = re.compile(r"^Executing (?P<what>.*) took (?P<seconds>[0-9.]+) seconds$")
CPU_HEAVY = re.compile(
    r"^callback used (?P<seconds>[0-9.]+) s of CPU \([0-9.]+ s wall\): (?P<what>.*)$"
)
# Thousands of characters: the tokenizer works for milliseconds on such a prompt.
LONG_PROMPT = "Provenance travels with every generated image and text. " * 100


@pytest.fixture
def debug_processes(stack: Stack, tmp_path: Path) -> Iterator[tuple[Spawned, Spawned]]:
    """A text-generation service and a gateway in front of it, both in asyncio debug mode."""
    text = spawn(stack, TEXT_GENERATION, tmp_path, **DEBUG_ENV)
    gateway = spawn(
        stack, GATEWAY, tmp_path, GENMEDIA_TEXT_GENERATION_ADDR=text.address, **DEBUG_ENV
    )
    try:
        text.wait_health()
        gateway.wait_health()
        yield text, gateway
    finally:
        gateway.stop()
        text.stop()


def call(stub: pb_grpc.TextGenerationServiceStub, caller: int, round_: int) -> None:
    seed = caller * ROUNDS + round_
    if (caller + round_) % 3 == 0:
        request = pb.GenerateTextRequest(
            prompt=LONG_PROMPT, max_new_tokens=32, seed=seed, truncate_prompt=True
        )
        stub.GenerateText(request, timeout=30)
    elif (caller + round_) % 3 == 1:
        request = pb.GenerateTextRequest(
            prompt="The stop sequence", max_new_tokens=48, seed=seed, stop=["zz"]
        )
        stub.GenerateText(request, timeout=30)
    else:
        request = pb.GenerateTextRequest(prompt="A stream of", max_new_tokens=64, seed=seed)
        list(stub.StreamText(request, timeout=30))


def slow_callbacks(
    process: Spawned, offset: int, pattern: re.Pattern[str]
) -> list[tuple[float, str]]:
    """(seconds, what) for each warning matching ``pattern`` logged after ``offset``."""
    text = process.log_text()[offset:]
    complete = text[: text.rfind("\n") + 1]  # a line still being written waits for next time
    found = []
    for event in log_events(complete):
        match = pattern.match(str(event.get("message", "")))
        if match:
            found.append((float(match["seconds"]), match["what"][:300]))
    return found


def test_no_callback_holds_the_loop_over_20_ms_under_load(
    debug_processes: tuple[Spawned, Spawned],
) -> None:
    text, gateway = debug_processes
    with open_channel(gateway.address) as channel:
        stub = pb_grpc.TextGenerationServiceStub(channel)
        for kind in range(3):  # the first calls fill caches (model version, config): not load
            call(stub, kind, 0)
        # Start-up runs in long loop callbacks by design; only what follows counts.
        offsets = {p.process.name: len(p.log_text()) for p in debug_processes}
        started = time.monotonic()
        with ThreadPoolExecutor(CALLERS) as pool:
            futures = [
                pool.submit(call, stub, caller, round_)
                for caller in range(CALLERS)
                for round_ in range(ROUNDS)
            ]
            for future in futures:
                try:
                    future.result()
                except grpc.RpcError as error:
                    pytest.fail(f"call failed under load: {error}")
        elapsed = time.monotonic() - started

    assert "asyncio debug mode" in text.log_text()  # the setting took effect
    waited = {
        p.process.name: slow_callbacks(p, offsets[p.process.name], WALL_SLOW)
        for p in debug_processes
    }
    busy = {
        p.process.name: slow_callbacks(p, offsets[p.process.name], CPU_HEAVY)
        for p in debug_processes
    }
    assert busy == {TEXT_GENERATION.name: [], GATEWAY.name: []}, busy
    print(
        f"{CALLERS * ROUNDS} calls in {elapsed:.1f} s; no callback used {SLOW_MS} ms of CPU; "
        f"over {SLOW_MS} ms of wall time (descheduled): {waited}"
    )
