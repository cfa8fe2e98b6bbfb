"""The Prometheus configuration, recording rules and alerts, checked by promtool itself."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

# Imported for their metrics, registered in REGISTRY: every process's and the gateway's.
import services.common.metrics
import services.gateway.metrics  # noqa: F401

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULE_FILES = ("recording.yml", "alerts.yml")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: run `make prometheus-tools` (make test does it)")
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )


def test_config_and_rule_files_are_valid() -> None:
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 2 rule files found" in checked.stdout


def test_rules_pass_promtools_linter() -> None:
    checked = promtool("check", "rules", *(f"rules/{f}" for f in RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alerts_fire_and_stay_quiet_as_the_fixtures_expect() -> None:
    tested = promtool("test", "rules", "tests/alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_rules_read_only_genmedia_metrics_the_processes_export() -> None:
    exported = set()
    for family in REGISTRY.collect():
        exported.add(family.name)
        if family.type == "counter":
            exported.add(family.name + "_total")
    rules = "".join((PROMETHEUS_DIR / "rules" / f).read_text() for f in RULE_FILES)
    # genmedia_... are exported names; genmedia:... are recorded ones.
    read = set(re.findall(r"\bgenmedia_[a-z_]+", rules))
    assert "genmedia_gateway_quota_store_up" in read
    assert read <= exported, sorted(read - exported)


def test_committed_dashboard_is_the_generated_one() -> None:
    import importlib.util

    script = PROMETHEUS_DIR.parent / "grafana" / "dashboard.py"
    spec = importlib.util.spec_from_file_location("genmedia_dashboard", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (PROMETHEUS_DIR.parent / "grafana" / "dashboards" / "genmedia.json").read_text()
    assert committed == module.render(), "run `python deploy/grafana/dashboard.py`"
