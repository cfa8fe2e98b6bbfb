"""Steady traffic through a running stack's gateway while its processes are sampled."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from tqdm import tqdm

from services.common.registry import GATEWAY
from services.launcher.stack import Stack
from tools.api_calls import PerWorker, generate, stream, translate, write
from tools.processes import service_pids, triton_pids
from tools.soak.sampler import ResourceSampler, Sample
from tools.soak.settings import SoakSettings
from tools.soak.verdict import ProcessVerdict, judge
from tools.traffic import Call, Traffic

# Every RPC that generates something, one per caller in turn.
MIX = [generate, translate, stream, write]


@dataclass(frozen=True)
class SoakResult:
    calls: list[Call]
    samples: list[Sample]
    verdicts: list[ProcessVerdict]

    def failed_calls(self) -> list[Call]:
        return [c for c in self.calls if c.code != "OK"]

    @property
    def passed(self) -> bool:
        return bool(self.calls) and not self.failed_calls() and all(v.flat for v in self.verdicts)


def soak(stack: Stack, settings: SoakSettings, show_progress: bool = True) -> SoakResult:
    pids = service_pids(stack) | triton_pids(stack)
    call = PerWorker(stack.ports.address(GATEWAY), MIX)
    total_s = settings.warmup_s + settings.duration_s
    try:
        with (
            ResourceSampler(pids, settings.sample_every_s) as sampler,
            Traffic(call, workers=settings.callers) as traffic,
            tqdm(
                total=round(total_s),
                unit="s",
                desc="soak",
                disable=not show_progress,
                mininterval=5 if show_progress and not sys.stderr.isatty() else 0.1,
            ) as progress,
        ):
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < total_s:
                time.sleep(min(1.0, total_s - elapsed))
                progress.update(round(time.monotonic() - started) - progress.n)
                codes = traffic.codes()
                progress.set_postfix(
                    phase="warm-up" if elapsed < settings.warmup_s else "judged",
                    calls=sum(codes.values()),
                    failed=sum(n for code, n in codes.items() if code != "OK"),
                    refresh=False,
                )
    finally:
        call.close()
    samples = list(sampler.samples)
    return SoakResult(traffic.snapshot(), samples, judge(samples, settings))
