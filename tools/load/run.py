"""Runs locust headless as a child process for the configured time, showing progress."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from genmedia_shared.paths import REPO_ROOT
from tools.load.results import LocustFiles, latest_aggregated
from tools.load.settings import LoadSettings
from tools.load.target import Target

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
STOP_WAIT_S = 60.0
"""How long locust gets to stop its users and write its reports after Ctrl-C."""


@dataclass(frozen=True)
class LocustRun:
    exit_code: int
    interrupted: bool


def locust_command(settings: LoadSettings, target: Target, files: LocustFiles) -> list[str]:
    return [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--host", target.address,
        "--headless",
        "--users", str(settings.users),
        "--spawn-rate", str(settings.spawn_rate),
        "--run-time", f"{settings.run_time_s}s",
        "--csv", str(files.csv_prefix),
        "--csv-full-history",
        "--html", str(files.html),
        # The runner prints its own summary; locust's (and its log) go to locust.log.
        "--only-summary",
        # Failed calls are results, not a crash: a non-zero exit then means locust broke.
        "--exit-code-on-error", "0",
        *settings.extra_locust_args(),
    ]  # fmt: skip


def locust_env(target: Target) -> dict[str, str]:
    # The locustfile imports the generated genmedia.v1 code from the repository root.
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return os.environ | {"PYTHONPATH": python_path} | target.env


def _postfix(files: LocustFiles, over: bool) -> str:
    """Locust's latest totals (its history is flushed every few seconds, so they lag)."""
    row = latest_aggregated(files.history)
    if row is None:
        return "starting"
    figures = (
        f"{row['User Count']} users, {float(row['Requests/s']):.1f} req/s, "
        f"{float(row['Failures/s']):.1f} fail/s, p95 {row['95%']} ms"
    )
    return f"{figures}; stopping" if over else figures


def run_locust(
    settings: LoadSettings, target: Target, files: LocustFiles, progress: bool = True
) -> LocustRun:
    """Locust until its run time is over, or until Ctrl-C/SIGTERM, then its exit code."""
    files.out_dir.mkdir(parents=True, exist_ok=True)
    for stale in files.all():
        # A report left by an earlier run must never pass for this one's.
        stale.unlink(missing_ok=True)
    interrupted = False
    with files.log.open("wb") as log:
        started = time.monotonic()
        # Its own session: a Ctrl-C in the terminal reaches only the runner, which
        # forwards exactly one SIGINT (a second one would cut locust's report writing).
        popen = subprocess.Popen(
            locust_command(settings, target, files),
            env=locust_env(target),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            with tqdm(
                total=settings.run_time_s,
                desc="load",
                unit="s",
                bar_format="{desc}: {bar} {n:.0f}/{total} s{postfix}",
                disable=not progress,
            ) as bar:
                while popen.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        popen.wait(timeout=1.0)
                    elapsed = time.monotonic() - started
                    bar.n = min(elapsed, settings.run_time_s)
                    over = elapsed > settings.run_time_s
                    bar.set_postfix_str(_postfix(files, over), refresh=False)
                    bar.refresh()
        except KeyboardInterrupt:
            interrupted = True
            # Locust stops its users and still writes its CSVs and HTML.
            popen.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=STOP_WAIT_S)
        finally:
            if popen.poll() is None:
                popen.kill()
            popen.wait()
    return LocustRun(exit_code=popen.returncode, interrupted=interrupted)
