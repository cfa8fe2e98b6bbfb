"""The load runner's reading, summary, plot and verdict, on CSVs in locust 2.47's own format."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from PIL import Image

from genmedia_shared.paths import REPO_ROOT
from services.launcher.stack import free_port
from tools.load.plot import plot_history
from tools.load.report import (
    INTERRUPTED,
    NOT_RUN,
    OK,
    TOO_MANY_FAILURES,
    exit_status,
    failures_table,
    stats_table,
    summary,
)
from tools.load.results import (
    AGGREGATED,
    Failure,
    LocustFiles,
    RequestStats,
    count_exceptions,
    failures_by_code,
    latest_aggregated,
    read_failures,
    read_history,
    read_stats,
)
from tools.load.run import locust_command, locust_env
from tools.load.settings import LoadSettings, load_settings, markdown
from tools.load.target import Target, TargetError, wait_reachable

# Header lines exactly as locust 2.47 writes them (--csv PREFIX --csv-full-history).
STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)
HISTORY_HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,"
    "Total Request Count,Total Failure Count,Total Median Response Time,"
    "Total Average Response Time,Total Min Response Time,Total Max Response Time,"
    "Total Average Content Size"
)
FAILURES_HEADER = "Method,Name,Error,Occurrences,First Seen,Last Seen"
EXCEPTIONS_HEADER = "Count,Message,Traceback,Nodes"

STATS = f"""{STATS_HEADER}
grpc,GenerateImages,5,5,302.7,304.8,302.7,310.6,0.0,1.27,1.27,300,300,300,310,310,310,310,310,310,310,310
grpc,ListModels,2,0,51,33.1,15.0,51.2,352.0,0.509,0.0,51,51,51,51,51,51,51,51,51,51,51
grpc,StreamText (first token),40,0,57,113.9,21.1,345.0,4.5,0.59,0.0,57,57,350,350,350,400,400,420,420,420,420
,Aggregated,47,5,300,229.2,15.0,328.4,3390.3,5.85,4.07,300,300,300,300,310,310,330,330,330,330,330
"""  # noqa: E501 (rows as locust writes them)
NO_REQUESTS = f"""{STATS_HEADER}
,Aggregated,0,0,0,0.0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A
"""
FAILURES = f"""{FAILURES_HEADER}
grpc,StreamText,StatusError('DEADLINE_EXCEEDED: Stream removed (Deadline Exceeded)'),2,2026-11-27T19:52:29Z,2026-11-27T19:52:31Z
grpc,GenerateImages,StatusError('DEADLINE_EXCEEDED: Deadline Exceeded'),5,2026-11-27T19:52:28Z,2026-11-27T19:52:31Z
grpc,GenerateImages,"StatusError(""RESOURCE_EXHAUSTED: key 'load' is over its rate"")",9,2026-11-27T19:52:28Z,2026-11-27T19:52:31Z
grpc,ListModels,"ConnectionResetError(104, 'Connection reset by peer')",1,2026-11-27T19:52:28Z,2026-11-27T19:52:28Z
"""  # noqa: E501 (rows as locust writes them)
HISTORY = f"""{HISTORY_HEADER}
1795809122,0,,Aggregated,0.000000,0.000000,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,0,0,0,0.0,0,0,0
1795809123,6,grpc,GenerateImages,0.000000,0.000000,0,0,0,0,0,0,0,0,0,0,0,1,0,560.2,560.2,560.2,560.2,17039.0
1795809123,6,,Aggregated,0.000000,0.000000,0,0,0,0,0,0,0,0,0,0,0,11,0,350,377.0,55.4,599.7,9136.5
1795809124,6,grpc,GenerateImages,2.000000,0.500000,560,560,560,560,560,560,560,560,560,560,560,2,0,560,325.1,90.0,560.2,12036.0
1795809124,6,,Aggregated,5.333333,0.500000,340,360,520,550,560,600,600,610,600,600,600,15,0,340,315.9,33.0,599.7,7351.6
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_stats_are_read_per_name_with_the_run_totals_last(tmp_path: Path) -> None:
    stats = read_stats(write(tmp_path / "s.csv", STATS))
    assert [s.name for s in stats] == [
        "GenerateImages",
        "ListModels",
        "StreamText (first token)",
        AGGREGATED,
    ]
    first_token = stats[2]
    assert (first_token.requests, first_token.failures) == (40, 0)
    assert (first_token.p50_ms, first_token.p95_ms, first_token.p99_ms) == (57, 400, 420)
    assert first_token.requests_per_s == pytest.approx(0.59)
    assert stats[0].failure_percent == 100.0
    assert stats[3].failure_percent == pytest.approx(100 * 5 / 47)


def test_percentiles_of_a_run_without_requests_are_missing_not_zero(tmp_path: Path) -> None:
    (totals,) = read_stats(write(tmp_path / "s.csv", NO_REQUESTS))
    assert totals.requests == 0 and totals.failure_percent == 0.0
    assert math.isnan(totals.p95_ms)
    assert "-" in stats_table([totals]).splitlines()[-1].split()


def test_summary_table_has_a_line_per_request_and_the_totals_after_a_rule(
    tmp_path: Path,
) -> None:
    table = stats_table(read_stats(write(tmp_path / "s.csv", STATS))).splitlines()
    header = ["request", "requests", "failures", "fail", "%", "p50", "ms", "p95", "ms", "p99", "ms"]
    assert table[0].split() == [*header, "req/s"]
    assert table[3].startswith("StreamText (first token) ")
    assert table[3].split()[3:] == ["40", "0", "0.0", "57", "400", "420", "0.59"]
    assert set(table[4]) == {"-"}
    assert table[5].split() == ["all", "requests", "47", "5", "10.6", "300", "310", "330", "5.85"]
    # Columns line up: every line is as long as the header.
    assert {len(line) for line in table} == {len(table[0])}


def test_failures_are_grouped_by_status_code_most_frequent_first(tmp_path: Path) -> None:
    failures = read_failures(write(tmp_path / "f.csv", FAILURES))
    assert [f.code for f in failures] == [
        "DEADLINE_EXCEEDED",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "ConnectionResetError",
    ]
    grouped = failures_by_code(failures)
    assert [(g.code, g.occurrences, g.names) for g in grouped] == [
        ("RESOURCE_EXHAUSTED", 9, ("GenerateImages",)),
        ("DEADLINE_EXCEEDED", 7, ("GenerateImages", "StreamText")),
        ("ConnectionResetError", 1, ("ListModels",)),
    ]
    table = failures_table(grouped).splitlines()
    assert table[1].split() == ["RESOURCE_EXHAUSTED", "9", "GenerateImages"]
    assert table[2].split() == ["DEADLINE_EXCEEDED", "7", "GenerateImages,", "StreamText"]


def test_an_error_that_is_no_exception_repr_is_its_own_code() -> None:
    assert Failure("ListModels", "timed out", 1).code == "timed out"


def test_summary_says_when_nothing_failed_and_when_the_locustfile_raised(
    tmp_path: Path,
) -> None:
    stats = read_stats(write(tmp_path / "s.csv", STATS))
    assert "no failures" in summary(stats, [], exceptions=0)
    assert "exception" not in summary(stats, [], exceptions=0)
    assert "raised 2 exception(s)" in summary(stats, [], exceptions=2)


def test_exceptions_are_counted_over_their_rows(tmp_path: Path) -> None:
    text = f'{EXCEPTIONS_HEADER}\n2,boom,"Traceback...",local\n3,bang,"Traceback...",local\n'
    assert count_exceptions(write(tmp_path / "e.csv", text)) == 5
    assert count_exceptions(write(tmp_path / "empty.csv", EXCEPTIONS_HEADER + "\n")) == 0
    assert count_exceptions(tmp_path / "missing.csv") == 0


def test_history_is_per_name_in_seconds_with_empty_windows_missing(tmp_path: Path) -> None:
    history = read_history(write(tmp_path / "h.csv", HISTORY))
    assert set(history) == {"GenerateImages", AGGREGATED}
    total = history[AGGREGATED]
    assert total.seconds == [0.0, 1.0, 2.0]
    assert total.users == [0, 6, 6]
    assert total.requests_per_s == [0.0, 0.0, pytest.approx(5.333333)]
    assert total.failures_per_s == [0.0, 0.0, 0.5]
    p99 = total.percentiles_ms["99%"]
    assert math.isnan(p99[0]) and math.isnan(p99[1]) and p99[2] == 610
    assert history["GenerateImages"].seconds == [1.0, 2.0]
    assert read_history(write(tmp_path / "empty.csv", HISTORY_HEADER + "\n")) == {}


def test_plot_is_a_png_with_three_panels_worth_of_pixels(tmp_path: Path) -> None:
    history = read_history(write(tmp_path / "h.csv", HISTORY))
    plot_history(history, tmp_path / "out" / "load.png", "6 users for 3 s")
    with Image.open(tmp_path / "out" / "load.png") as image:
        assert image.format == "PNG"
        assert image.size == (1100, 1000)
        # Not a blank canvas: lines and text in several colours.
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 50


def test_plot_refuses_a_history_without_totals(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Aggregated"):
        plot_history({}, tmp_path / "load.png", "nothing")
    assert not (tmp_path / "load.png").exists()


def test_latest_totals_skip_a_row_locust_is_still_writing(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    assert latest_aggregated(path) is None
    write(path, HISTORY_HEADER + "\n")
    assert latest_aggregated(path) is None
    halfway = "1795809125,6,,Aggregated,9.0"
    write(path, HISTORY + halfway)
    row = latest_aggregated(path)
    assert row is not None
    assert (row["Timestamp"], row["Requests/s"], row["95%"]) == ("1795809124", "5.333333", "600")
    # Only the tail is read: the header still names the columns, and a row the
    # tail begins inside of is not taken for a whole one.
    from_newline_before_row = len("\n" + HISTORY.splitlines()[-1] + "\n" + halfway)
    assert latest_aggregated(path, tail_bytes=from_newline_before_row) == row
    assert latest_aggregated(path, tail_bytes=from_newline_before_row - 2) is None


@pytest.mark.parametrize(
    ("requests", "failures", "exceptions", "max_percent", "interrupted", "status"),
    [
        (100, 0, 0, None, False, OK),
        (100, 60, 0, None, False, OK),  # failures are reported, not judged, by default
        (100, 5, 0, 5.0, False, OK),
        (100, 6, 0, 5.0, False, TOO_MANY_FAILURES),
        (100, 1, 0, 0.0, False, TOO_MANY_FAILURES),
        (100, 0, 1, None, False, NOT_RUN),  # the locustfile is broken
        (0, 0, 0, None, False, NOT_RUN),
        (100, 60, 0, 5.0, True, INTERRUPTED),
    ],
)
def test_exit_status(
    requests: int,
    failures: int,
    exceptions: int,
    max_percent: float | None,
    interrupted: bool,
    status: int,
) -> None:
    totals = RequestStats(AGGREGATED, requests, failures, 1.0, 2.0, 3.0, 4.0, 0.0)
    assert exit_status(totals, exceptions, max_percent, interrupted)[0] == status


def test_exit_status_without_a_totals_row_is_not_run() -> None:
    status, verdict = exit_status(None, 0, None, interrupted=False)
    assert status == NOT_RUN and "no request" in verdict


def test_settings_come_from_flags_over_environment_over_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in LoadSettings.model_fields:
        monkeypatch.delenv(f"GENMEDIA_LOAD_{name.upper()}", raising=False)
    assert load_settings([]) == LoadSettings()
    assert LoadSettings().out_dir == REPO_ROOT / "out" / "load"
    assert LoadSettings().weights_dir == REPO_ROOT / "models" / "demo"
    monkeypatch.setenv("GENMEDIA_LOAD_USERS", "7")
    monkeypatch.setenv("GENMEDIA_LOAD_RUN_TIME_S", "9")
    settings = load_settings(["--run-time-s", "30", "--locust-args=--processes 2 -L INFO"])
    assert (settings.users, settings.run_time_s) == (7, 30)
    assert settings.extra_locust_args() == ["--processes", "2", "-L", "INFO"]


def test_bad_settings_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GENMEDIA_LOAD_USERS", "0")
    with pytest.raises(SystemExit) as exited:
        load_settings(["--max-failure-percent", "150"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "GENMEDIA_LOAD_USERS" in error and "GENMEDIA_LOAD_MAX_FAILURE_PERCENT" in error


def test_locust_runs_headless_for_the_settings_and_writes_every_report(tmp_path: Path) -> None:
    settings = LoadSettings(
        users=3, spawn_rate=1.5, run_time_s=8, out_dir=tmp_path, locust_args="--processes 2"
    )
    files = LocustFiles(tmp_path)
    command = locust_command(settings, Target("gw:50051"), files)
    options = dict(itertools.pairwise(command))
    assert options["--host"] == "gw:50051"
    assert (options["--users"], options["--spawn-rate"], options["--run-time"]) == (
        "3",
        "1.5",
        "8s",
    )
    assert options["--csv"] == str(tmp_path / "locust")
    assert options["--html"] == str(files.html)
    assert "--headless" in command and "--csv-full-history" in command
    assert options["--exit-code-on-error"] == "0"
    assert command[-2:] == ["--processes", "2"]  # last, so they can override ours
    # The names the reader expects are the ones locust derives from --csv.
    assert files.stats == Path(options["--csv"] + "_stats.csv")
    assert files.history == Path(options["--csv"] + "_stats_history.csv")
    assert files.failures == Path(options["--csv"] + "_failures.csv")


def test_locust_gets_the_repository_on_its_path_and_the_targets_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("GENMEDIA_API_KEY_FILE", "/secret")
    env = locust_env(Target("gw:1", {"GENMEDIA_API_KEY": "gm_x", "GENMEDIA_API_KEY_FILE": ""}))
    assert env["PYTHONPATH"].split(":") == [str(REPO_ROOT), "/elsewhere"]
    assert (env["GENMEDIA_API_KEY"], env["GENMEDIA_API_KEY_FILE"]) == ("gm_x", "")


def test_a_target_nobody_listens_on_fails_fast() -> None:
    with pytest.raises(TargetError, match="no gateway answers"):
        wait_reachable(f"127.0.0.1:{free_port()}", timeout_s=0.5)


def test_testing_doc_lists_the_load_settings_table() -> None:
    testing = (REPO_ROOT / "docs" / "TESTING.md").read_text()
    assert markdown() in testing, (
        "docs/TESTING.md's load settings are stale: paste `python -m tools.load.settings`"
    )
