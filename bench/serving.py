"""What serving costs per call: each call in-process, through Triton, the service and the gateway,
each hop beside its floor.

One call at a time (concurrency 1), the same inputs on every side: each
seed is sent to every side back to back, so the samples pair up and a hop's
cost is the median of the paired differences (slow drift of a noisy machine
cancels out). The hops:

- Triton hop: triton - in-process (gRPC to Triton, its scheduler, the python
  backend's shared memory, the tensors back);
- service hop: service - triton (gRPC, validation, noise or decoding, image
  encoding with provenance, detokenizing);
- gateway hop: gateway - service (auth, quotas, routing, one more gRPC hop);
- serving overhead: gateway - in-process, also as a share of the model time.

And the floors, measured in the same rounds with the same payload sizes
(issue #18):

- Triton floor: the ``floor`` model (bench/triton), which answers with as
  many bytes as the call's real response and computes nothing, through the
  same Triton client the service uses (``floor_stream`` for a text call);
- Python gRPC floor: the bare pass-through proxy (``bench.passthrough``) in
  front of the service: passthrough - service;
- the service's own work (noise, decoding, resizing, encoding, signing,
  watermarking, detokenizing) run in this process with the service's own
  functions, so a hop's transport and its necessary work are told apart.

ListModels (a call that never reaches a model) is the cheap call; its Triton
side is a model readiness check, which has no floor of its own.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.common import median, percentile
from bench.inprocess import InProcessModels
from bench.service_work import ServiceWork
from bench.workloads import SIDES, Addresses, Clients, Workloads, run_with_clients
from genmedia.v1 import image_translation_pb2 as trans_pb
from tools.figures import pyplot

CHEAP = "ListModels"
MODEL_CALLS = ("GenerateImages", "TranslateImage", "GenerateText")
FLOOR_SIDES = ("work", "floor", "passthrough")
"""Measured beside the chain when the bench has them: the service's own work in-process, the
Triton floor model, the service through the bare pass-through proxy."""
HOP_LIMIT = 1.5
"""Issue #18: every hop within 1.5x of its floor (its necessary work taken out)."""


@dataclass(frozen=True)
class ServingSizes:
    rounds: int = 5
    calls: int = 30
    """Per model call, side and round."""
    cheap_calls: int = 100
    """ListModels calls per side and round."""
    text_tokens: int = 16
    cheap: bool = True
    """Measure ListModels too (the full-size run skips it: it does not touch a model)."""
    model_calls: tuple[str, ...] = MODEL_CALLS

    @classmethod
    def quick(cls) -> ServingSizes:
        return cls(rounds=1, calls=3, cheap_calls=10, text_tokens=4)


@dataclass
class ServingBench:
    clients: Clients
    models: InProcessModels
    work: Workloads
    sizes: ServingSizes
    service_work: ServiceWork | None = None
    """The services' own work, in-process; None: no floors measured."""
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    inside_triton: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per image call: Triton's own mean ms per stage (queue, compute_input, compute_infer,
    compute_output) over the run, to tell the model's time in its stub from transport."""

    def _runner(self, call: str, side: str) -> Callable[[int], Awaitable[Any]] | None:
        """The coroutine that makes ``call`` on ``side`` with a seed; None where it has no side."""
        if side in FLOOR_SIDES:
            return self._floor_runner(call, side)
        clients, work, models = self.clients, self.work, self.models
        if call == CHEAP:
            if side == "in-process":
                return None
            if side == "triton":
                return lambda _: clients.triton.is_model_ready(work.translate.triton_model)
            stub, metadata = clients.translation(side)
            return lambda _: stub.ListModels(trans_pb.ListModelsRequest(), metadata=metadata)
        if call == "GenerateImages":
            if side == "in-process":
                return _sync(lambda seed: models.generate_images(work.images, seed))
            if side == "triton":
                return lambda seed: clients.triton.infer(
                    "biggan", work.images.tensors(seed), ["image"], "bench", 600
                )
            stub, metadata = clients.images(side)
            return lambda seed: stub.GenerateImages(
                work.images.request(seed), metadata=metadata, timeout=600
            )
        if call == "TranslateImage":
            if side == "in-process":
                return _sync(lambda _: models.translate(work.translate))
            if side == "triton":
                return lambda _: clients.triton.infer(
                    work.translate.triton_model, {"image": work.translate.pixels}, ["image"],
                    "bench", 600,
                )  # fmt: skip
            stub, metadata = clients.translation(side)
            return lambda _: stub.TranslateImage(
                work.translate.request(), metadata=metadata, timeout=600
            )
        if call == "GenerateText":
            if side == "in-process":
                return _sync(lambda seed: models.stream(work.text, seed))
            if side == "triton":  # as the service asks it: every token in one response
                return lambda seed: clients.stream("triton", work.text, seed, single=True)
            stub, metadata = clients.text(side)
            return lambda seed: stub.GenerateText(
                work.text.request(seed), metadata=metadata, timeout=600
            )
        raise ValueError(f"unknown call {call!r}")

    def _floor_runner(self, call: str, side: str) -> Callable[[int], Awaitable[Any]] | None:
        """The floors of ``call``'s hops and the service's own work (see the module docstring)."""
        work = self.service_work
        if work is None:
            return None
        if side == "passthrough":
            return self._service_call(call, "passthrough")
        if call == CHEAP:
            return None  # no model work, and a readiness check has no floor but itself
        if side == "work":
            return _sync(lambda seed: work.run(call, seed))
        if call == "GenerateText":
            return lambda _: self.clients.floor_stream(1)  # one response, as the service asks
        sent, received = work.triton_bytes(call)
        return lambda _: self.clients.floor(sent, received)

    def _service_call(self, call: str, side: str) -> Callable[[int], Awaitable[Any]]:
        clients, work = self.clients, self.work
        if call == CHEAP:
            stub, metadata = clients.translation(side)
            return lambda _: stub.ListModels(trans_pb.ListModelsRequest(), metadata=metadata)
        if call == "GenerateImages":
            stub, metadata = clients.images(side)
            return lambda seed: stub.GenerateImages(
                work.images.request(seed), metadata=metadata, timeout=600
            )
        if call == "TranslateImage":
            stub, metadata = clients.translation(side)
            return lambda _: stub.TranslateImage(
                work.translate.request(), metadata=metadata, timeout=600
            )
        stub, metadata = clients.text(side)
        return lambda seed: stub.GenerateText(
            work.text.request(seed), metadata=metadata, timeout=600
        )

    def sides(self) -> tuple[str, ...]:
        return SIDES + (FLOOR_SIDES if self.service_work is not None else ())

    def calls(self) -> tuple[str, ...]:
        return ((CHEAP,) if self.sizes.cheap else ()) + self.sizes.model_calls

    async def _stats(self) -> dict[str, dict[str, tuple[int, int]]]:
        """Triton's own per-stage counts and nanoseconds for the image models, so far."""
        models = {"GenerateImages": "biggan", "TranslateImage": self.work.translate.triton_model}
        stats: dict[str, dict[str, tuple[int, int]]] = {}
        for call, model in models.items():
            if call not in self.sizes.model_calls:
                continue
            answer = await self.clients.triton_statistics(model)
            inference = answer["model_stats"][0]["inference_stats"]
            stats[call] = {
                stage: (int(inference[stage].get("count", 0)), int(inference[stage].get("ns", 0)))
                for stage in ("queue", "compute_input", "compute_infer", "compute_output")
            }
        return stats

    async def run(self, progress: bool = True) -> dict[str, Any]:
        await self.clients.ready()
        before = await self._stats()
        plan = [
            (call, side, runner)
            for call in self.calls()
            for side in self.sides()
            if (runner := self._runner(call, side)) is not None
        ]
        for call, side, runner in plan:
            await runner(0)  # warm: connections, caches, lazy model loads
            self.samples.setdefault(call, {})[side] = []
        calls = self.calls()
        runners = {(call, side): runner for call, side, runner in plan}
        with tqdm(
            total=self.sizes.rounds * len(calls), desc="serving", disable=not progress
        ) as bar:
            for round_number in range(self.sizes.rounds):
                for call in calls if round_number % 2 == 0 else calls[::-1]:
                    bar.set_postfix_str(call)
                    sides = [side for side in self.sides() if (call, side) in runners]
                    count = self.sizes.cheap_calls if call == CHEAP else self.sizes.calls
                    for number in range(count):
                        seed = 1 + round_number * count + number
                        # Every side makes the same call back to back, in alternating
                        # order: the samples pair up, so drift cancels out of each hop.
                        for side in sides if number % 2 == 0 else sides[::-1]:
                            started = time.perf_counter()
                            await runners[call, side](seed)
                            elapsed = (time.perf_counter() - started) * 1000
                            self.samples[call][side].append(elapsed)
                    bar.update()
        after = await self._stats()
        self.inside_triton = {
            call: {
                stage: (after[call][stage][1] - before[call][stage][1])
                / max(after[call][stage][0] - before[call][stage][0], 1)
                / 1e6
                for stage in after[call]
            }
            for call in after
        }
        return self.summary()

    def summary(self) -> dict[str, Any]:
        calls: dict[str, Any] = {}
        for call, by_side in self.samples.items():
            p50 = {side: median(values) for side, values in by_side.items()}
            p90 = {side: percentile(values, 90) for side, values in by_side.items()}
            figures: dict[str, Any] = {"p50_ms": p50, "p90_ms": p90, "hops_ms": {}}
            chain = [side for side in SIDES if side in p50]
            for before, after in itertools.pairwise(chain):
                figures["hops_ms"][after] = _paired_median(by_side[after], by_side[before])
            if "in-process" in p50:
                model_ms = p50["in-process"]
                overhead = _paired_median(by_side["gateway"], by_side["in-process"])
                figures["overhead_ms"] = overhead
                figures["overhead_percent"] = 100 * overhead / model_ms
                figures["triton_vs_in_process"] = p50["triton"] / model_ms
            if "passthrough" in by_side:
                figures.update(_floors(figures["hops_ms"], by_side, p50))
            if call in self.inside_triton:
                figures["inside_triton_ms"] = self.inside_triton[call]
            calls[call] = figures
        return {
            "calls": calls,
            "sizes": asdict(self.sizes),
            "image_side": self.work.translate.side,
            "text_tokens": self.work.text.max_new_tokens,
            "raw_ms": self.samples,
        }


def _floors(
    hops: dict[str, float], by_side: dict[str, list[float]], p50: dict[str, float]
) -> dict[str, Any]:
    """Each hop beside its floor: transport alone, the service's own work taken out."""
    python_floor = _paired_median(by_side["passthrough"], by_side["service"])
    work = p50.get("work", 0.0)
    floors: dict[str, Any] = {
        "floors_ms": {"python_hop": python_floor},
        "work_ms": {"service": work},
        "vs_floor": {
            "service": (hops["service"] - work) / python_floor,
            "gateway": hops["gateway"] / python_floor,
        },
    }
    if "floor" in p50:
        floors["floors_ms"]["triton_hop"] = p50["floor"]
        floors["vs_floor"]["triton"] = hops["triton"] / p50["floor"]
    return floors


def _paired_median(after: list[float], before: list[float]) -> float:
    """Median of the differences of samples taken back to back (same call, same seed)."""
    return median([a - b for a, b in zip(after, before, strict=True)])


def _sync(function: Callable[[int], Any]) -> Callable[[int], Awaitable[Any]]:
    """An in-process call as a coroutine; it runs on the loop's thread, alone, like the others."""

    async def call(seed: int) -> Any:
        return function(seed)

    return call


def measure(
    addresses: Addresses,
    models: InProcessModels,
    work: Workloads,
    sizes: ServingSizes,
    progress: bool = True,
    service_work: ServiceWork | None = None,
) -> dict[str, Any]:
    """Runs the bench against a running stack; returns its figures (with floors when the
    stack serves the floor models and ``addresses`` has a pass-through)."""
    return run_with_clients(
        addresses,
        lambda clients: ServingBench(clients, models, work, sizes, service_work).run(progress),
    )


def report(results: dict[str, Any], title: str) -> str:
    lines = [
        f"{title}: p50 ms per call, one at a time",
        f"{'':16s}" + "".join(f"{side:>12s}" for side in SIDES)
        + f"{'Triton hop':>12s}{'service':>10s}{'gateway':>10s}{'overhead':>12s}{'share':>9s}",
    ]  # fmt: skip
    for call, figures in results["calls"].items():
        p50, hops = figures["p50_ms"], figures["hops_ms"]
        line = f"{call:16s}" + "".join(
            f"{p50[side]:12.2f}" if side in p50 else f"{'-':>12s}" for side in SIDES
        )
        line += f"{hops['triton']:12.2f}" if "triton" in hops else f"{'-':>12s}"
        line += f"{hops['service']:10.2f}{hops['gateway']:10.2f}"
        if "overhead_ms" in figures:
            line += f"{figures['overhead_ms']:12.2f}{figures['overhead_percent']:8.1f}%"
        lines.append(line)
    if any("vs_floor" in figures for figures in results["calls"].values()):
        lines.append(floor_report(results))
    for call, figures in results["calls"].items():
        inside = figures.get("inside_triton_ms")
        if inside and "in-process" in figures["p50_ms"]:
            moving = inside["queue"] + inside["compute_input"] + inside["compute_output"]
            lines.append(
                f"{call}: inside Triton the model ran {inside['compute_infer']:.2f} ms a call "
                f"(in-process p50 {figures['p50_ms']['in-process']:.2f}); queue, inputs and "
                f"outputs {moving:.2f}"
            )
    return "\n".join(lines)


def floor_report(results: dict[str, Any]) -> str:
    """Each hop beside its floor (p50 ms): the ratio is hop (minus the service's own work)
    over floor; issue #18's target is <= 1.5x."""
    lines = [
        "each hop beside its floor, p50 ms (ratio = hop, its own work taken out, / floor)",
        f"{'':16s}{'Triton hop':>11s}{'floor':>7s}{'ratio':>7s}{'service':>10s}{'work':>7s}"
        f"{'floor':>7s}{'ratio':>7s}{'gateway':>10s}{'floor':>7s}{'ratio':>7s}",
    ]
    for call, figures in results["calls"].items():
        if "vs_floor" not in figures:
            continue
        hops, floors, ratio = figures["hops_ms"], figures["floors_ms"], figures["vs_floor"]
        triton = (
            f"{hops['triton']:11.2f}{floors['triton_hop']:7.2f}{ratio['triton']:6.1f}x"
            if "triton" in ratio
            else f"{'-':>11s}{'-':>7s}{'-':>7s}"
        )
        python = floors["python_hop"]
        lines.append(
            f"{call:16s}{triton}{hops['service']:10.2f}{figures['work_ms']['service']:7.2f}"
            f"{python:7.2f}{ratio['service']:6.1f}x{hops['gateway']:10.2f}{python:7.2f}"
            f"{ratio['gateway']:6.1f}x"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    """One stacked bar per call: model time, then what each hop adds (p50)."""
    plt = pyplot()
    calls = [c for c in results["calls"] if "in-process" in results["calls"][c]["p50_ms"]]
    parts = [
        ("model (in-process)", "#999", lambda f: f["p50_ms"]["in-process"]),
        ("Triton hop", "#e8a33d", lambda f: f["hops_ms"]["triton"]),
        ("service hop", "#5b8fd1", lambda f: f["hops_ms"]["service"]),
        ("gateway hop", "#3b5aa0", lambda f: f["hops_ms"]["gateway"]),
    ]
    figure, axes = plt.subplots(len(calls), 1, figsize=(10, 1.3 + 1.1 * len(calls)), squeeze=False)
    for axis, call in zip(axes[:, 0], calls, strict=True):
        figures = results["calls"][call]
        left = 0.0
        for label, colour, value in parts:
            width = max(value(figures), 0.0)
            axis.barh([0], [width], left=left, color=colour, label=label)
            left += width
        axis.set_yticks([0], [call])
        axis.set_xlabel("ms (p50)")
        axis.set_title(
            f"{call}: overhead {figures['overhead_ms']:.2f} ms "
            f"({figures['overhead_percent']:.1f}% of the model time)",
            fontsize=9,
        )
    axes[0, 0].legend(loc="lower right", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    """``python -m bench.serving [--quick]``: this part alone, on the demo pack."""
    import argparse

    from bench.common import DEMO_WEIGHTS, bench_stack
    from bench.gateway import passthrough_beside

    parser = argparse.ArgumentParser(description="the cost of each hop per call, beside floors")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--weights", type=Path, default=DEMO_WEIGHTS)
    args = parser.parse_args()
    with (
        bench_stack(args.weights, floors=True) as running,
        passthrough_beside(running.stack) as passthrough,
    ):
        models, work = InProcessModels(args.weights), Workloads.for_weights(args.weights)
        sizes = ServingSizes.quick() if args.quick else ServingSizes()
        results = measure(
            Addresses.of(running, passthrough), models, work, sizes,
            service_work=ServiceWork(work, models),
        )  # fmt: skip
    print(report(results, str(args.weights)))


if __name__ == "__main__":
    main()
