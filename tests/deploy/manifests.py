"""Rendering the Kubernetes manifests and finding the static checkers (make deploy-tools)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "k8s"
DOCKER = REPO_ROOT / "deploy" / "docker"
DEPLOY_TOOLS_BIN = REPO_ROOT / ".venv-deploy" / "bin"
OVERLAYS = ("gpu", "cpu")
COMPONENTS = ("monitoring", "custom-metrics", "ingress")
"""Every component, rendered together over the base in `render_all_components`."""

Obj = dict[str, Any]


def tool(name: str) -> str:
    """A checker from .venv-deploy; fails (never skips) when it is missing."""
    path = DEPLOY_TOOLS_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make deploy-tools` (make test does it)")
    return str(path)


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl (with kustomize) is missing; it comes with the machine (docs/TESTING.md)"
        )
    return found


@functools.cache
def render_text(directory: Path) -> str:
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {directory}:\n{done.stderr}"
    return done.stdout


def render(directory: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(render_text(directory)) if doc]


def all_components_kustomization(into: Path) -> Path:
    """A kustomization of the base with every optional component (directories may lie outside)."""
    into.mkdir(parents=True, exist_ok=True)

    def relative(path: Path) -> str:
        return os.path.relpath(path, into)

    (into / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "genmedia",
                "resources": [relative(K8S / "base")],
                "components": [relative(K8S / "components" / c) for c in COMPONENTS],
            }
        )
    )
    return into


@functools.cache
def rendered_sets() -> dict[str, list[Obj]]:
    """Every overlay, the load test, and the base with all components."""
    sets = {name: render(K8S / "overlays" / name) for name in OVERLAYS}
    sets["loadtest"] = render(K8S / "loadtest")
    with tempfile.TemporaryDirectory() as scratch:
        sets["all-components"] = render(all_components_kustomization(Path(scratch)))
    return sets


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_templates(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) for every Deployment, StatefulSet and Job."""
    for workload in objects:
        if workload["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield workload, workload["spec"]["template"]


def containers(template: Obj, init: bool = True) -> list[Obj]:
    spec = template["spec"]
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())
