"""``make bench``: where serving time and memory go, as figures side by side and ratios.

    python -m bench                # about 10 minutes on 2 cores
    python -m bench --quick        # a smoke run (make test runs one)

1. The demo stack (``models/demo``, API keys on, as in production):
   cold start to all-healthy; the cost of each hop per call (``bench.serving``);
   token streams against the in-process generate loop (``bench.text``);
   1, 4 and 16 concurrent streams, what in-flight batching buys (``bench.streams``);
   dynamic batching at concurrency 1, 4 and 16 (``bench.batching``);
   resident memory of every process after that traffic (``bench.resources``).
2. The full-size architectures with random weights (``bench.full_size``:
   BigGAN-deep-128, CycleGAN at 256x256): cold start and the cost of each hop.

Each part writes JSON and a PNG into ``bench/results/`` (or ``--out``);
``summary.json`` holds the figures docs/PERFORMANCE.md quotes and each target's verdict.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench import batching, resources, serving, streams, text
from bench.common import DEMO_WEIGHTS, RESULTS_DIR, bench_stack, machine, median
from bench.full_size import FullSizeSet, write_full_size
from bench.gateway import passthrough_beside
from bench.inprocess import InProcessModels
from bench.service_work import ServiceWork
from bench.workloads import Addresses, Workloads
from genmedia_shared.paths import REPO_ROOT
from tools.figures import write_json

FULL_SIZE_WEIGHTS = REPO_ROOT / "var" / "bench-weights" / "cpu"
# Tiny stand-ins of the full-size set: the quick run checks the code path, not the figures.
QUICK_FULL_SIZE = FullSizeSet(biggan_channel_width=4, cyclegan_ngf=8)
OVERHEAD_LIMIT_MS = 5.0
OVERHEAD_LIMIT_PERCENT = 5.0
FULL_SIZE_RUNS = 3
BATCHING_MIN_GAIN = 1.5
PER_TOKEN_LIMIT_MS = 0.25
"""Issue #18: GenerateText's serving overhead per generated token, through the gateway."""
INTER_TOKEN_LIMIT = 1.3
"""Issue #18: StreamText's inter-token p50 through the gateway against the in-process loop."""
TEXT_TOKENS, QUICK_TEXT_TOKENS = 64, 8


def run_demo(weights: Path, quick: bool, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with (
        bench_stack(weights, floors=True) as running,
        passthrough_beside(running.stack) as passthrough,
    ):
        addresses = Addresses.of(running, passthrough)
        work = Workloads.for_weights(weights, QUICK_TEXT_TOKENS if quick else TEXT_TOKENS)
        models = InProcessModels(weights)
        sizes = serving.ServingSizes.quick() if quick else serving.ServingSizes()
        results["serving"] = serving.measure(
            addresses, models, work, sizes, service_work=ServiceWork(work, models)
        )
        print(serving.report(results["serving"], "demo models"))
        text_sizes = text.TextSizes.quick() if quick else text.TextSizes()
        results["text"] = text.measure(addresses, models, work, text_sizes)
        print(text.report(results["text"]))
        stream_sizes = streams.StreamSizes.quick() if quick else streams.StreamSizes()
        results["streams"] = streams.measure(addresses, work, stream_sizes)
        print(streams.report(results["streams"]))
        batch_sizes = batching.BatchingSizes.quick() if quick else batching.BatchingSizes()
        results["batching"] = batching.measure(addresses, work, batch_sizes)
        print(batching.report(results["batching"]))
        results["memory"] = resources.memory(running.stack)
        results["cold_start"] = resources.cold_start(running.cold_start)
    serving.plot(results["serving"], out / "serving-demo.png", "demo models, p50 per call")
    text.plot(results["text"], out / "text.png", "token streams (demo GPT-2)")
    streams.plot(results["streams"], out / "streams.png", "concurrent token streams (demo GPT-2)")
    batching.plot(results["batching"], out / "batching.png", "dynamic batching (demo models)")
    return results


def run_full_size(weights: Path, quick: bool, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with (
        bench_stack(weights, floors=True) as running,
        passthrough_beside(running.stack) as passthrough,
    ):
        # Text stays on the demo model here; the GPU bench runs GPT-2 124M.
        sizes = serving.ServingSizes(
            rounds=1 if quick else 4, calls=3 if quick else 6, cheap=False,
            model_calls=("GenerateImages", "TranslateImage"),
        )  # fmt: skip
        models, work = InProcessModels(weights), Workloads.for_weights(weights)
        # Issue #18 judges the median of 3 runs: one run's hops move by milliseconds here.
        runs = []
        for run in range(1 if quick else FULL_SIZE_RUNS):
            runs.append(
                serving.measure(
                    Addresses.of(running, passthrough), models, work, sizes,
                    service_work=ServiceWork(work, models),
                )
            )  # fmt: skip
            print(serving.report(runs[-1], f"full-size, random weights, run {run + 1}"))
        results["serving"] = {**runs[-1], "overhead_percent_runs": overhead_runs(runs)}
        results["memory"] = resources.memory(running.stack)
        results["cold_start"] = resources.cold_start(running.cold_start)
    serving.plot(
        results["serving"], out / "serving-full-size.png",
        "full-size architectures (random weights), p50 per call",
    )  # fmt: skip
    return results


def overhead_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each call's serving overhead (% of the model time) in every run, and their median."""
    calls = runs[0]["calls"]
    per_call = {c: [run["calls"][c]["overhead_percent"] for run in runs] for c in calls}
    return {c: {"runs": values, "median": median(values)} for c, values in per_call.items()}


def verdicts(demo: dict[str, Any], full: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each target of issues #7 and #8 with the measured figure and whether it is met."""
    calls = demo["serving"]["calls"]
    # Text is judged per generated token (hop_verdicts): a call's total grows with its length.
    worst_demo = max(
        (calls[c]["overhead_ms"], c)
        for c in ("GenerateImages", "TranslateImage")
        if "overhead_ms" in calls.get(c, {})
    )
    gain = demo["batching"]["rpcs"]["GenerateImages"]["levels"]["16"]["vs_concurrency_1"]
    largest = max(demo["memory"]["services"].items(), key=lambda item: item[1]["peak_mb"])
    rows = [
        {
            "target": f"serving overhead p50 < {OVERHEAD_LIMIT_MS:g} ms per image call "
            "(demo models)",
            "figure": f"{worst_demo[0]:.2f} ms ({worst_demo[1]}, the largest)",
            "met": worst_demo[0] < OVERHEAD_LIMIT_MS,
        },
        {
            "target": f"GenerateImages at c=16 >= {BATCHING_MIN_GAIN:g}x c=1 throughput",
            "figure": f"{gain:.2f}x",
            "met": gain >= BATCHING_MIN_GAIN,
        },
        {
            "target": f"each service process < {resources.SERVICE_LIMIT_MB:g} MB resident",
            "figure": f"{largest[1]['peak_mb']:.1f} MB peak ({largest[0]}, the largest)",
            "met": largest[1]["peak_mb"] < resources.SERVICE_LIMIT_MB,
        },
    ]
    rows += hop_verdicts(demo)
    rows += streams.verdicts(demo["streams"])
    if full is not None:
        medians = full["serving"]["overhead_percent_runs"]
        worst_full = max((figures["median"], c) for c, figures in medians.items())
        runs = ", ".join(f"{v:.2f}" for v in medians[worst_full[1]]["runs"])
        rows.insert(
            1,
            {
                "target": f"serving overhead < {OVERHEAD_LIMIT_PERCENT:g}% of the model time "
                "(full-size, random weights, median of runs)",
                "figure": f"{worst_full[0]:.2f}% ({worst_full[1]}, the largest; runs: {runs}%)",
                "met": worst_full[0] < OVERHEAD_LIMIT_PERCENT,
            },
        )
    return rows


def hop_verdicts(demo: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #18's targets: each hop within 1.5x of its floor, the per-token tax, one stream."""
    calls = demo["serving"]["calls"]
    rows = []
    for hop, floor in (
        ("gateway", "the bare pass-through floor"),
        ("service", "the pass-through floor, its own work taken out"),
        ("triton", "the Triton floor model"),
    ):
        ratios = [(f["vs_floor"][hop], c) for c, f in calls.items() if hop in f.get("vs_floor", {})]
        worst = max(ratios)
        rows.append(
            {
                "target": f"{hop} hop <= {serving.HOP_LIMIT:g}x {floor} (each call)",
                "figure": f"{worst[0]:.2f}x ({worst[1]}, the largest)",
                "met": worst[0] <= serving.HOP_LIMIT,
            }
        )
    text = calls["GenerateText"]
    per_token = text["overhead_ms"] / demo["serving"]["text_tokens"]
    rows.append(
        {
            "target": f"GenerateText serving overhead <= {PER_TOKEN_LIMIT_MS:g} ms per generated "
            "token (gateway)",
            "figure": f"{per_token:.3f} ms ({text['overhead_ms']:.2f} ms over "
            f"{demo['serving']['text_tokens']} tokens)",
            "met": per_token <= PER_TOKEN_LIMIT_MS,
        }
    )
    inter = demo["text"]["inter_token_vs_in_process"]["gateway"]
    rows.append(
        {
            "target": f"StreamText inter-token p50 <= {INTER_TOKEN_LIMIT:g}x in-process "
            "(one stream, gateway)",
            "figure": f"{inter:.2f}x ({demo['text']['inter_token_p50_ms']['gateway']:.2f} ms)",
            "met": inter <= INTER_TOKEN_LIMIT,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--weights", type=Path, default=DEMO_WEIGHTS, help="the demo stack's")
    parser.add_argument(
        "--full-size-weights", type=Path, default=FULL_SIZE_WEIGHTS,
        help="where the full-size random set is written (once) and served from",
    )  # fmt: skip
    parser.add_argument("--skip-full-size", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    demo = run_demo(args.weights, args.quick, args.out)
    full = None
    if not args.skip_full_size:
        spec = QUICK_FULL_SIZE if args.quick else FullSizeSet()
        full = run_full_size(write_full_size(args.full_size_weights, spec), args.quick, args.out)
    cold_starts = {"demo models": demo["cold_start"]}
    if full is not None:
        cold_starts["full-size"] = full["cold_start"]
    memory = {"memory": demo["memory"], "cold_start": cold_starts}
    print(resources.report(memory))
    resources.plot(memory, args.out / "resources.png", "resident memory and cold start")

    summary = {
        "machine": machine(),
        "quick": args.quick,
        "full_size_set": (QUICK_FULL_SIZE if args.quick else FullSizeSet()).describe(),
        "targets": verdicts(demo, full),
    }
    write_json(summary, args.out / "summary.json")
    write_json(
        {
            "demo": _without_raw(demo["serving"]),
            "full_size": full and _without_raw(full["serving"]),
        },
        args.out / "serving.json",
    )
    write_json(demo["text"], args.out / "text.json")
    write_json(demo["streams"], args.out / "streams.json")
    write_json(demo["batching"], args.out / "batching.json")
    write_json({**memory, "full_size_memory": full and full["memory"]}, args.out / "resources.json")
    print(f"\nmachine: {summary['machine']['cpu']}, {summary['machine']['cpus']} CPUs")
    for row in summary["targets"]:
        print(f"{'met    ' if row['met'] else 'NOT MET'}  {row['target']}: {row['figure']}")
    print(f"written: {', '.join(sorted(p.name for p in args.out.iterdir()))} in {args.out}")


def _without_raw(results: dict[str, Any]) -> dict[str, Any]:
    # The raw samples feed the plots; the JSON keeps the figures (small enough for git).
    return {key: value for key, value in results.items() if key != "raw_ms"}


if __name__ == "__main__":
    main()
