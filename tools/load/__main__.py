"""python -m tools.load: a bounded locust run against the gateway, then its report.

Starts the local stack unless GENMEDIA_LOAD_TARGET names a running gateway,
runs tools/load/locustfile.py headless, writes locust's CSVs and HTML report
and load.png under GENMEDIA_LOAD_OUT_DIR, and prints a summary table.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from tools.load.plot import plot_history
from tools.load.report import INTERRUPTED, NOT_RUN, exit_status, summary
from tools.load.results import (
    AGGREGATED,
    LocustFiles,
    count_exceptions,
    failures_by_code,
    read_failures,
    read_history,
    read_stats,
)
from tools.load.run import run_locust
from tools.load.settings import LoadSettings, load_settings
from tools.load.target import TargetError, gateway_to_load


def report(settings: LoadSettings, address: str, files: LocustFiles, interrupted: bool) -> int:
    stats = read_stats(files.stats)
    exceptions = count_exceptions(files.exceptions)
    history = read_history(files.history) if files.history.exists() else {}
    if AGGREGATED in history:
        title = f"{settings.users} users for {settings.run_time_s} s against {address}"
        plot_history(history, files.plot, title)
    else:
        print("no plot: locust wrote no history (a run stopped within its first second?)")
    print(summary(stats, failures_by_code(read_failures(files.failures)), exceptions))
    written = ", ".join(path.name for path in files.all() if path.exists())
    print(f"\nwritten under {files.out_dir}: {written}")
    totals = next((s for s in stats if s.name == AGGREGATED), None)
    status, verdict = exit_status(totals, exceptions, settings.max_failure_percent, interrupted)
    print(verdict)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings(argv)
    files = LocustFiles(settings.out_dir)
    # SIGTERM (a CI timeout, kill) ends the run like Ctrl-C: stop, report, clean up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with gateway_to_load(settings) as target:
            print(
                f"{settings.users} users (spawning {settings.spawn_rate}/s) for "
                f"{settings.run_time_s} s against {target.address}; locust's log: {files.log}",
                flush=True,
            )
            run = run_locust(settings, target, files)
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return NOT_RUN
    except KeyboardInterrupt:
        return INTERRUPTED
    if run.exit_code != 0 or not files.stats.exists():
        log = files.log.read_text(errors="replace")[-3000:]
        print(f"locust failed (exit {run.exit_code}); end of {files.log}:\n{log}", file=sys.stderr)
        return INTERRUPTED if run.interrupted else NOT_RUN
    return report(settings, target.address, files, run.interrupted)


if __name__ == "__main__":
    sys.exit(main())
