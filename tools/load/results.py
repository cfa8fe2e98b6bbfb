"""Reading what locust writes with ``--csv PREFIX --csv-full-history``.

``PREFIX_stats.csv``: one row per request name and an ``Aggregated`` row, totals
of the whole run. ``PREFIX_failures.csv``: one row per (name, error) with its
occurrences. ``PREFIX_stats_history.csv``: a row per name and per second, with
the *current* throughput (locust's last ~12 s) and response-time percentiles
(its last ~10 s). Response times are in milliseconds; locust rounds them to two
significant digits in its percentile columns and writes ``N/A`` where a
window holds no request.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

AGGREGATED = "Aggregated"
PERCENTILES = ("50%", "95%", "99%")
# The locustfile reports a failed call as StatusError('<CODE>: <details>').
STATUS_ERROR = re.compile(r"""^StatusError\(['"]([A-Z_]+):""")
OTHER_ERROR = re.compile(r"^(\w+)\(")


@dataclass(frozen=True)
class LocustFiles:
    """The files of one run, all under one folder."""

    out_dir: Path

    @property
    def csv_prefix(self) -> Path:
        return self.out_dir / "locust"

    @property
    def stats(self) -> Path:
        return self.out_dir / "locust_stats.csv"

    @property
    def history(self) -> Path:
        return self.out_dir / "locust_stats_history.csv"

    @property
    def failures(self) -> Path:
        return self.out_dir / "locust_failures.csv"

    @property
    def exceptions(self) -> Path:
        return self.out_dir / "locust_exceptions.csv"

    @property
    def html(self) -> Path:
        return self.out_dir / "report.html"

    @property
    def plot(self) -> Path:
        return self.out_dir / "load.png"

    @property
    def log(self) -> Path:
        return self.out_dir / "locust.log"

    def all(self) -> tuple[Path, ...]:
        return (
            self.stats,
            self.history,
            self.failures,
            self.exceptions,
            self.html,
            self.plot,
            self.log,
        )


def number(text: str) -> float:
    """A locust CSV cell as a float; ``N/A`` and empty cells are NaN."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@dataclass(frozen=True)
class RequestStats:
    """Totals of one request name over the whole run (a row of ``_stats.csv``)."""

    name: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests_per_s: float
    failures_per_s: float

    @property
    def failure_percent(self) -> float:
        return 100.0 * self.failures / self.requests if self.requests else 0.0


def read_stats(path: Path) -> list[RequestStats]:
    """Every request name in the file's order, ``Aggregated`` last as locust writes it."""
    return [
        RequestStats(
            name=row["Name"],
            requests=int(row["Request Count"]),
            failures=int(row["Failure Count"]),
            p50_ms=number(row["50%"]),
            p95_ms=number(row["95%"]),
            p99_ms=number(row["99%"]),
            requests_per_s=number(row["Requests/s"]),
            failures_per_s=number(row["Failures/s"]),
        )
        for row in _rows(path)
    ]


@dataclass(frozen=True)
class Failure:
    """One (request name, error) row of ``_failures.csv``."""

    name: str
    error: str
    occurrences: int

    @property
    def code(self) -> str:
        """The gRPC status code's name; for anything else the exception's class or text."""
        if match := STATUS_ERROR.match(self.error):
            return match.group(1)
        if match := OTHER_ERROR.match(self.error):
            return match.group(1)
        return self.error


def read_failures(path: Path) -> list[Failure]:
    return [
        Failure(name=row["Name"], error=row["Error"], occurrences=int(row["Occurrences"]))
        for row in _rows(path)
    ]


@dataclass(frozen=True)
class FailuresByCode:
    code: str
    occurrences: int
    names: tuple[str, ...]


def failures_by_code(failures: list[Failure]) -> list[FailuresByCode]:
    """Occurrences per status code, most frequent first, with the request names it hit."""
    counts: dict[str, int] = {}
    names: dict[str, set[str]] = {}
    for failure in failures:
        counts[failure.code] = counts.get(failure.code, 0) + failure.occurrences
        names.setdefault(failure.code, set()).add(failure.name)
    return [
        FailuresByCode(code, counts[code], tuple(sorted(names[code])))
        for code in sorted(counts, key=lambda code: (-counts[code], code))
    ]


def count_exceptions(path: Path) -> int:
    """Exceptions the locustfile's own code raised (a broken test, not a failed call)."""
    if not path.exists():
        return 0
    return sum(int(row["Count"]) for row in _rows(path))


@dataclass
class Series:
    """One request name's history: one value per row, seconds since the first row."""

    seconds: list[float] = field(default_factory=list)
    users: list[float] = field(default_factory=list)
    requests_per_s: list[float] = field(default_factory=list)
    failures_per_s: list[float] = field(default_factory=list)
    percentiles_ms: dict[str, list[float]] = field(
        default_factory=lambda: {p: [] for p in PERCENTILES}
    )


def read_history(path: Path) -> dict[str, Series]:
    """Per request name (``Aggregated`` included), its values over time."""
    rows = _rows(path)
    if not rows:
        return {}
    start = min(int(row["Timestamp"]) for row in rows)
    history: dict[str, Series] = {}
    for row in rows:
        series = history.setdefault(row["Name"], Series())
        series.seconds.append(float(int(row["Timestamp"]) - start))
        series.users.append(number(row["User Count"]))
        series.requests_per_s.append(number(row["Requests/s"]))
        series.failures_per_s.append(number(row["Failures/s"]))
        for percentile in PERCENTILES:
            value = number(row[percentile])
            # Locust writes 0 (or N/A) when its window holds no response yet; a real
            # call through the gateway never rounds to 0 ms.
            series.percentiles_ms[percentile].append(value if value > 0 else math.nan)
    return history


def latest_aggregated(path: Path, tail_bytes: int = 8192) -> dict[str, str] | None:
    """The newest ``Aggregated`` row of a history CSV locust is still writing, if any.

    Reads the header and the file's tail only: the file grows by a row per name
    each second, and progress asks for it every second.
    """
    try:
        with path.open("rb") as file:
            header = file.readline().decode()
            start = max(file.tell(), path.stat().st_size - tail_bytes)
            cut = start > file.tell()
            file.seek(start)
            tail = file.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    # Whole rows only: the tail may begin inside one, and the piece after the last
    # newline may be a row locust is halfway through writing.
    lines = tail.split("\n")[1 if cut else 0 : -1]
    lines = [line for line in lines if f",{AGGREGATED}," in line]
    if not header or not lines:
        return None
    row = next(csv.DictReader([header, lines[-1]]))
    return dict(row)
