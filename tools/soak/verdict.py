"""Did every process stay flat? The soak's judgement of its samples.

Memory: the median resident memory of the last fifth of the judged samples
against that of the first fifth (medians shrug off a garbage collection or a
large reply in flight), within the allowed margin. File descriptors: the most
open in the last fifth against the most in the first.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from tools.soak.sampler import Sample
from tools.soak.settings import SoakSettings

WINDOW_SHARE = 0.2
MIN_WINDOW = 3


@dataclass(frozen=True)
class ProcessVerdict:
    name: str
    rss_start_mib: float
    rss_end_mib: float
    rss_allowed_mib: float
    rss_slope_mib_per_min: float
    fds_start: int
    fds_end: int
    fds_allowed: int
    samples: int

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_end_mib - self.rss_start_mib

    @property
    def flat(self) -> bool:
        return (
            self.samples > 0
            and self.rss_growth_mib <= self.rss_allowed_mib
            and self.fds_end - self.fds_start <= self.fds_allowed
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rss_growth_mib": self.rss_growth_mib, "flat": self.flat}


def windows(judged: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    size = max(MIN_WINDOW, round(len(judged) * WINDOW_SHARE))
    return judged[:size], judged[-size:]


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute; 0 for fewer than two."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope * 60


def judge(samples: list[Sample], settings: SoakSettings) -> list[ProcessVerdict]:
    """One verdict per process, on the samples taken after the warm-up."""
    judged = [s for s in samples if s.seconds >= settings.warmup_s]
    if len(judged) < 2 * MIN_WINDOW:
        raise ValueError(
            f"{len(judged)} samples after the warm-up; a verdict needs {2 * MIN_WINDOW}: "
            "soak longer or sample more often"
        )
    first, last = windows(judged)
    names = sorted({name for s in samples for name in s.rss_mib})
    verdicts = []
    for name in names:
        present = [s for s in judged if name in s.rss_mib]
        # A process missing from the last samples died: that is not flat.
        if any(name not in s.rss_mib for s in last):
            verdicts.append(ProcessVerdict(name, 0, 0, 0, 0, 0, 0, 0, samples=0))
            continue
        start = statistics.median(s.rss_mib[name] for s in first if name in s.rss_mib)
        verdicts.append(
            ProcessVerdict(
                name=name,
                rss_start_mib=start,
                rss_end_mib=statistics.median(s.rss_mib[name] for s in last),
                rss_allowed_mib=max(
                    start * settings.rss_margin_percent / 100, settings.rss_margin_mib
                ),
                rss_slope_mib_per_min=slope_per_minute(
                    [(s.seconds, s.rss_mib[name]) for s in present]
                ),
                fds_start=max(s.fds[name] for s in first if name in s.fds),
                fds_end=max(s.fds[name] for s in last),
                fds_allowed=settings.fd_margin,
                samples=len(present),
            )
        )
    return verdicts
