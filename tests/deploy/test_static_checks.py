"""The images, compose file and manifests pass the checkers a platform team runs.

No docker engine or cluster here: Dockerfiles go through hadolint and
checkov, the compose files through Docker Compose's own `config`, every
rendered Kubernetes object through the 1.30 schemas (kubernetes-validate,
strict: unknown fields fail) and checkov. Each checker is also shown a
broken input, so a checker that passes everything would fail these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import DOCKER, K8S, REPO_ROOT, rendered_sets, tool

KUBERNETES_VERSION = "1.30.0"
CRD_GROUPS = ("monitoring.coreos.com/",)
"""Custom resources the schemas do not cover; tests/deploy/test_consistency.py checks them."""
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def run(
    *command: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return run(
        tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", "--quiet", str(path)
    )


def write_all(objects: list[dict], path: Path) -> Path:
    path.write_text(yaml.safe_dump_all(objects))
    return path


@pytest.mark.parametrize("name", ["gpu", "cpu", "loadtest", "all-components"])
def test_every_rendered_object_validates_against_the_kubernetes_schemas(
    name: str, tmp_path: Path
) -> None:
    objects = rendered_sets()[name]
    assert objects
    checked = validate(write_all(objects, tmp_path / f"{name}.yaml"))
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    for line in output.splitlines():
        # The only thing it may not know: the Prometheus Operator's kinds.
        assert "Couldn't find schema" not in line or any(g in line for g in CRD_GROUPS), line


def test_the_secret_template_validates(tmp_path: Path) -> None:
    checked = validate(K8S / "base" / "secret.template.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_rejects_an_unknown_field(tmp_path: Path) -> None:
    deployment = next(o for o in rendered_sets()["cpu"] if o["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    checked = validate(write_all([broken], tmp_path / "broken.yaml"))
    assert checked.returncode != 0
    assert "livenessProbes" in checked.stdout + checked.stderr


def checkov(*arguments: str) -> dict:
    done = run(
        tool("checkov"), *arguments, "--output", "json", "--compact",
        "--skip-download",  # offline: no guidelines or policies from the vendor's API
        env=os.environ | {"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


def assert_clean(report: dict) -> None:
    results = report["results"]
    failed = [
        f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in results["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    assert report["summary"]["passed"] > 50
    assert report["summary"]["parsing_errors"] == 0
    for skipped in results["skipped_checks"]:
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 30, f"{skipped['check_id']} skipped without a reason: {reason!r}"


def test_policy_scan_of_every_rendered_manifest_passes(tmp_path: Path) -> None:
    for name, objects in rendered_sets().items():
        write_all(objects, tmp_path / f"{name}.yaml")
    assert_clean(checkov("--directory", str(tmp_path), "--framework", "kubernetes"))


def test_policy_scan_catches_a_privileged_container(tmp_path: Path) -> None:
    deployment = next(o for o in rendered_sets()["cpu"] if o["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    write_all([broken], tmp_path / "broken.yaml")
    report = checkov("--directory", str(tmp_path), "--framework", "kubernetes")
    assert "CKV_K8S_16" in {c["check_id"] for c in report["results"]["failed_checks"]}


def test_policy_scan_of_the_dockerfiles_passes() -> None:
    assert_clean(checkov("--directory", str(DOCKER), "--framework", "dockerfile"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    linted = run(tool("hadolint"), str(dockerfile))
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_hadolint_catches_an_unpinned_base_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    linted = run(tool("hadolint"), str(bad))
    assert linted.returncode != 0 and "DL3007" in linted.stdout


def compose(*files: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    arguments = [a for f in files for a in ("-f", f)]
    keys = {"GENMEDIA_API_KEYS_FILE": str(DOCKER / "api-keys.example.json")}
    return run(
        tool("docker-compose"), *arguments, "config", "--format", "json",
        cwd=DOCKER, env=os.environ | keys | (env or {}),
    )  # fmt: skip


def test_compose_files_are_valid_and_gpu_adds_a_device_to_triton_only() -> None:
    cpu = compose("compose.yaml")
    assert cpu.returncode == 0, cpu.stderr
    gpu = compose("compose.yaml", "compose.gpu.yaml")
    assert gpu.returncode == 0, gpu.stderr
    services = json.loads(gpu.stdout)["services"]
    devices = {
        name: service.get("deploy", {}).get("resources", {}).get("reservations", {})
        for name, service in services.items()
    }
    assert devices["triton"]["devices"][0]["capabilities"] == ["gpu"]
    assert all(not reservation for name, reservation in devices.items() if name != "triton")
    assert "devices" not in json.dumps(json.loads(cpu.stdout)["services"]["triton"])


def test_compose_config_rejects_an_unknown_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    document = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    document["services"]["gateway"]["portz"] = ["1:1"]
    broken.write_text(yaml.safe_dump(document))
    checked = compose(str(broken))
    assert checked.returncode != 0 and "portz" in checked.stderr
