"""The soak's judgement of its samples: flat, grown, leaking fds, dead."""

from __future__ import annotations

import pytest

from tools.runner_settings import markdown
from tools.soak.sampler import Sample
from tools.soak.settings import SoakSettings, soak_settings
from tools.soak.verdict import judge

SETTINGS = SoakSettings(warmup_s=10, rss_margin_percent=5, rss_margin_mib=16, fd_margin=2)


def samples(rss: dict[str, list[float]], fds: dict[str, list[int]]) -> list[Sample]:
    count = len(next(iter(rss.values())))
    return [
        Sample(
            seconds=float(i),
            rss_mib={name: values[i] for name, values in rss.items() if i < len(values)},
            fds={name: values[i] for name, values in fds.items() if i < len(values)},
        )
        for i in range(count)
    ]


def by_name(verdicts: list) -> dict:
    return {v.name: v for v in verdicts}


def test_flat_processes_pass_and_growth_beyond_the_margin_fails() -> None:
    n = 40
    rss = {
        # Grows a lot in the warm-up, then steady with noise: flat.
        "warming": [10 * min(i, 10) + (i % 3) for i in range(n)],
        # 1 GiB process gaining 40 MiB: within 5 %.
        "large": [1024 + i for i in range(n)],
        # Small process gaining 1 MiB per sample: 30 MiB over the judged part.
        "leaking": [50 + i for i in range(n)],
    }
    fds = {name: [10] * n for name in rss}
    verdicts = by_name(judge(samples(rss, fds), SETTINGS))

    assert verdicts["warming"].flat
    assert verdicts["large"].flat
    assert verdicts["large"].rss_allowed_mib == pytest.approx(1036.5 * 0.05)
    assert not verdicts["leaking"].flat
    assert verdicts["leaking"].rss_growth_mib == pytest.approx(24.0)
    assert verdicts["leaking"].rss_slope_mib_per_min == pytest.approx(60.0)


def test_file_descriptors_that_keep_growing_fail() -> None:
    n = 40
    rss = {"steady": [100.0] * n, "fd-leak": [100.0] * n}
    fds = {"steady": [20 + (i % 2) for i in range(n)], "fd-leak": [20 + i // 5 for i in range(n)]}
    verdicts = by_name(judge(samples(rss, fds), SETTINGS))
    assert verdicts["steady"].flat
    assert not verdicts["fd-leak"].flat
    assert verdicts["fd-leak"].fds_end - verdicts["fd-leak"].fds_start > SETTINGS.fd_margin


def test_a_process_that_died_is_not_flat() -> None:
    rss = {"alive": [100.0] * 40, "died": [100.0] * 30}
    fds = {"alive": [20] * 40, "died": [20] * 30}
    verdicts = by_name(judge(samples(rss, fds), SETTINGS))
    assert verdicts["alive"].flat
    assert not verdicts["died"].flat


def test_too_few_samples_after_the_warm_up_is_an_error_not_a_pass() -> None:
    with pytest.raises(ValueError, match="samples after the warm-up"):
        judge(samples({"a": [1.0] * 14}, {"a": [1] * 14}), SETTINGS)


def test_soak_settings_come_from_flags_over_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GENMEDIA_SOAK_CALLERS", "7")
    monkeypatch.setenv("GENMEDIA_SOAK_DURATION_S", "90")
    settings = soak_settings(["--duration-s", "30"])
    assert (settings.callers, settings.duration_s) == (7, 30.0)
    with pytest.raises(SystemExit) as exit_info:
        soak_settings(["--callers", "0"])
    assert exit_info.value.code == 2
    assert "GENMEDIA_SOAK_CALLERS" in capsys.readouterr().err


def test_testing_doc_lists_the_soak_settings() -> None:
    from tests.unit.test_readme import REPO_ROOT

    assert markdown(SoakSettings) in (REPO_ROOT / "docs" / "TESTING.md").read_text(), (
        "docs/TESTING.md's soak settings table is stale: paste `python -m tools.soak.settings`"
    )
