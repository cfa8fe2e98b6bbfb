"""Where a streamed token's time goes: CPU per token of every process on the path (issue #18).

    python -m bench.token_tax            # make bench runs it
    python -m bench.token_tax --quick    # a smoke run

Streams StreamText through the gateway of the demo stack one at a time for a
while and reads each process's CPU time (user + system) before and after:
gateway, text-generation, tritonserver and the gpt2 model's python stub.
CPU per generated token is the serving tax on two shared cores; beside it,
the same decode loop run in this process (the model's own work per token)
and the messages each stream needed (fewer than its tokens when a hop
coalesced). Writes ``token-tax.json`` and ``token-tax.png``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import DEMO_WEIGHTS, bench_stack, figure_bench_arguments, publish
from bench.inprocess import InProcessModels
from bench.resources import service_pids, triton_pids
from bench.workloads import Addresses, Clients, Workloads, run_with_clients
from genmedia.v1 import text_generation_pb2 as text_pb
from services.common.registry import GATEWAY, TEXT_GENERATION
from tools.figures import pyplot, save_figure

TOKENS = 64
PROCESSES = (GATEWAY.name, TEXT_GENERATION.name, "tritonserver", "stub gpt2")


def _cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    seconds = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        seconds[name] = times.user + times.system
    return seconds


async def _streams(clients: Clients, work: Workloads, seconds: float) -> dict[str, float]:
    stub, metadata = clients.text("gateway")
    tokens = messages = streams = 0
    gaps: list[float] = []
    until = time.monotonic() + seconds
    seed = 1
    while time.monotonic() < until:
        request = text_pb.GenerateTextRequest(
            prompt="Returns the", max_new_tokens=TOKENS, seed=seed, temperature=1.0
        )
        last = time.perf_counter()
        async for message in stub.StreamText(request, metadata=metadata, timeout=600):
            now = time.perf_counter()
            if messages:
                gaps.append(now - last)
            last = now
            messages += 1
            tokens += message.usage.generated_tokens  # set on the last message only
        streams += 1
        seed += 1
    gaps.sort()
    return {
        "tokens": tokens,
        "messages": messages,
        "streams": streams,
        "gap_p50_ms": 1000 * gaps[len(gaps) // 2] if gaps else float("nan"),
    }


def measure(seconds: float) -> dict[str, Any]:
    models = InProcessModels(DEMO_WEIGHTS)
    work = Workloads.for_weights(DEMO_WEIGHTS, text_tokens=TOKENS)
    models.stream(work.text, 0)  # warm
    started, cpu = time.perf_counter(), time.process_time()
    in_process_tokens = 0
    for seed in range(1, 21):
        in_process_tokens += models.stream(work.text, seed).tokens
    in_process_ms = 1000 * (time.process_time() - cpu) / in_process_tokens
    in_process_wall_ms = 1000 * (time.perf_counter() - started) / in_process_tokens
    with bench_stack(DEMO_WEIGHTS) as running:
        pids = {**service_pids(running.stack), **triton_pids(running.stack)}
        pids = {name: pid for name, pid in pids.items() if name in PROCESSES}
        addresses = Addresses.of(running)

        async def body(clients: Clients) -> dict[str, Any]:
            await clients.ready()
            await _streams(clients, work, 1.0)  # warm
            before = _cpu_seconds(pids)
            traffic = await _streams(clients, work, seconds)
            after = _cpu_seconds(pids)
            return {"traffic": traffic, "cpu_s": {n: after[n] - before[n] for n in pids}}

        measured = run_with_clients(addresses, body)
    tokens = measured["traffic"]["tokens"]
    return {
        "seconds": seconds,
        "traffic": measured["traffic"],
        "cpu_ms_per_token": {n: 1000 * s / tokens for n, s in measured["cpu_s"].items()},
        "in_process_cpu_ms_per_token": in_process_ms,
        "in_process_wall_ms_per_token": in_process_wall_ms,
    }


def report(results: dict[str, Any]) -> str:
    traffic = results["traffic"]
    lines = [
        f"one stream at a time through the gateway for {results['seconds']:g} s: "
        f"{traffic['streams']} streams, {traffic['tokens']} tokens in {traffic['messages']} "
        f"messages, gap between messages p50 {traffic['gap_p50_ms']:.2f} ms",
        f"{'process':16s}{'CPU ms per token':>18s}",
    ]
    for name in PROCESSES:
        lines.append(f"{name:16s}{results['cpu_ms_per_token'][name]:18.3f}")
    lines.append(
        f"{'in-process loop':16s}{results['in_process_cpu_ms_per_token']:18.3f}"
        f"   (the model's own work; {results['in_process_wall_ms_per_token']:.3f} ms wall)"
    )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 3.5))
    names = [*PROCESSES, "in-process loop"]
    values = [results["cpu_ms_per_token"][n] for n in PROCESSES]
    values.append(results["in_process_cpu_ms_per_token"])
    axis.barh(names, values, color=["#3b5aa0", "#5b8fd1", "#e8a33d", "#c66", "#999"])
    axis.invert_yaxis()
    axis.set_xlabel("CPU ms per generated token")
    axis.set_title("One stream through the gateway: CPU per token of each process", fontsize=10)
    save_figure(figure, path)


def main() -> None:
    args = figure_bench_arguments(__doc__).parse_args()
    publish(measure(2.0 if args.quick else 10.0), "token-tax", report, plot, args.out)


if __name__ == "__main__":
    main()
