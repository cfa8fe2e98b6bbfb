"""The summary a load run prints: per request name, then failures by status code."""

from __future__ import annotations

import math

from tools.load.results import AGGREGATED, FailuresByCode, RequestStats

COLUMNS = ("requests", "failures", "fail %", "p50 ms", "p95 ms", "p99 ms", "req/s")


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _cells(stats: RequestStats) -> list[str]:
    return [
        str(stats.requests),
        str(stats.failures),
        f"{stats.failure_percent:.1f}",
        _ms(stats.p50_ms),
        _ms(stats.p95_ms),
        _ms(stats.p99_ms),
        "-" if math.isnan(stats.requests_per_s) else f"{stats.requests_per_s:.2f}",
    ]


def stats_table(stats: list[RequestStats]) -> str:
    """One line per request name, then a rule and the run's totals."""
    rows = [s for s in stats if s.name != AGGREGATED]
    totals = [s for s in stats if s.name == AGGREGATED]
    width = max([len("request"), *(len(s.name) for s in stats)])
    cells = [_cells(s) for s in stats]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]

    def line(name: str, values: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            [name.ljust(width), *(v.rjust(w) for v, w in zip(values, widths, strict=True))]
        )

    lines = [line("request", COLUMNS)]
    lines += [line(s.name, _cells(s)) for s in rows]
    if totals:
        lines.append("-" * len(lines[0]))
        lines.append(line("all requests", _cells(totals[0])))
    return "\n".join(lines)


def failures_table(by_code: list[FailuresByCode]) -> str:
    if not by_code:
        return "no failures"
    width = max(len("status code"), *(len(f.code) for f in by_code))
    count_width = max(len("count"), *(len(str(f.occurrences)) for f in by_code))
    lines = [f"{'status code'.ljust(width)}  {'count'.rjust(count_width)}  requests"]
    lines += [
        f"{f.code.ljust(width)}  {str(f.occurrences).rjust(count_width)}  {', '.join(f.names)}"
        for f in by_code
    ]
    return "\n".join(lines)


def summary(stats: list[RequestStats], by_code: list[FailuresByCode], exceptions: int) -> str:
    parts = [
        "Response times over the whole run (locust's percentiles, 2 significant digits):",
        stats_table(stats),
        "",
        "Failures by status code:",
        failures_table(by_code),
    ]
    if exceptions:
        parts += ["", f"The locustfile itself raised {exceptions} exception(s): see the report."]
    return "\n".join(parts)


OK = 0
NOT_RUN = 1
"""Locust did not run, completed no request, or the locustfile's own code raised."""
TOO_MANY_FAILURES = 3
INTERRUPTED = 130
"""Ctrl-C or SIGTERM, as a shell reports SIGINT; the partial run is still reported."""


def exit_status(
    totals: RequestStats | None,
    exceptions: int,
    max_failure_percent: float | None,
    interrupted: bool,
) -> tuple[int, str]:
    """The runner's exit status and a line saying why.

    Failed calls are measurements (overload shedding, deadlines): they are
    reported, and judged only when a maximum share is set.
    """
    if interrupted:
        return INTERRUPTED, "interrupted: the figures cover the run until then"
    if exceptions:
        return NOT_RUN, f"the locustfile raised {exceptions} exception(s): the test is broken"
    if totals is None or totals.requests == 0:
        return NOT_RUN, "no request completed: nothing was measured"
    share = f"{totals.failure_percent:.1f}% of {totals.requests} requests failed"
    if max_failure_percent is None:
        return OK, f"{share} (not judged: GENMEDIA_LOAD_MAX_FAILURE_PERCENT is unset)"
    if totals.failure_percent > max_failure_percent:
        return TOO_MANY_FAILURES, f"FAILED: {share}, more than the {max_failure_percent:g}% allowed"
    return OK, f"{share}, within the {max_failure_percent:g}% allowed"
