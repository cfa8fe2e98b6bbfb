"""The deploy files agree with the code they run and with each other.

Ports, probes, environment variable names, the model repository path and
image tags are read from the rendered manifests, the Dockerfiles and the
compose file, and compared with what the processes actually read: their
settings classes, the registry of processes, the fetch command and the
repository builder, the tritonserver binary's own --help.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from genmedia_models.gpt2.watermark import KEY_FILE_ENV as WATERMARK_KEY_FILE_ENV
from services.client.fetch import INTO_ENV, MIRROR_ENV, MODELS_ENV
from services.common.registry import ALL_PROCESSES, ProcessSpec
from services.common.server import LIVENESS_SERVICE
from services.common.settings import ENV_PREFIX
from services.gateway.keys import load_keys
from services.gateway.settings import GatewaySettings
from services.image_generation.settings import ImageGenerationSettings
from services.image_translation.settings import ImageTranslationSettings
from services.launcher.repository import INSTANCE_COUNT_ENV, INSTANCE_KIND_ENV
from services.launcher.triton import TritonInstall
from services.text_generation.settings import TextGenerationSettings
from tests.deploy.manifests import (
    DOCKER,
    K8S,
    REPO_ROOT,
    Obj,
    containers,
    named,
    of_kind,
    pod_templates,
    rendered_sets,
    selects,
)

SETTINGS = {
    "gateway": GatewaySettings,
    "image-generation": ImageGenerationSettings,
    "image-translation": ImageTranslationSettings,
    "text-generation": TextGenerationSettings,
}
PROCESSES: dict[str, ProcessSpec] = {p.name: p for p in ALL_PROCESSES}
# models/genmedia_models/weights.py and text_watermark.py
MODEL_CODE_ENV = {"GENMEDIA_WEIGHTS_DIR", WATERMARK_KEY_FILE_ENV}
LOCUSTFILE = REPO_ROOT / "tools" / "load" / "locustfile.py"
SETS = ["gpu", "cpu", "loadtest", "all-components"]
CLUSTER_SETS = ["gpu", "cpu", "all-components"]
"""The sets that deploy genmedia itself (the load test deploys only locust)."""
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def settings_env(process: str) -> set[str]:
    return {ENV_PREFIX + name.upper() for name in SETTINGS[process].model_fields}


@functools.cache
def locust_env() -> frozenset[str]:
    """LOCUST_* for each of locust's options, and the variables the locustfile reads."""
    done = subprocess.run(
        [sys.executable, "-m", "locust", "--help"], capture_output=True, text=True, timeout=60
    )
    options = set(re.findall(r"--([a-z][a-z0-9-]+)", done.stdout))
    assert "expect-workers" in options, done.stdout[-2000:]
    own = set(re.findall(r'"(GENMEDIA_[A-Z_]+)"', LOCUSTFILE.read_text()))
    return frozenset({"LOCUST_" + o.upper().replace("-", "_") for o in options} | own)


def reads(container: Obj) -> set[str]:
    """The environment variables the program in this container reads."""
    command = [*container.get("command", []), *container.get("args", [])]
    image = container["image"].split(":")[0].rsplit("/", 1)[-1]
    if image == "services" and command and command[0] in SETTINGS:
        return settings_env(command[0])
    if command[:3] == ["genmedia", "models", "fetch"]:
        return {INTO_ENV, MIRROR_ENV, MODELS_ENV}
    if "services.launcher.repository" in command:
        return {INSTANCE_KIND_ENV, INSTANCE_COUNT_ENV}
    if command[:1] == ["tritonserver"]:
        return MODEL_CODE_ENV
    if image == "loadtest":
        return set(locust_env())
    if command[:2] == ["sh", "-c"]:
        return set(re.findall(r"\$\{?([A-Z_]+)", command[2]))
    if command[:1] == ["cp"]:
        return set()
    raise AssertionError(f"unknown program in container {container['name']}: {command}")


def config_maps(objects: list[Obj]) -> dict[str, dict[str, str]]:
    return {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(objects, "ConfigMap")}


def config_map(objects: list[Obj], base_name: str) -> dict[str, str]:
    """The ConfigMap kustomize generated as `base_name` (its name carries a content hash)."""
    found = [
        data
        for name, data in config_maps(objects).items()
        if re.fullmatch(re.escape(base_name) + r"-[a-z0-9]{10}", name)
    ]
    assert len(found) == 1, f"{base_name}: {len(found)} ConfigMaps"
    return found[0]


def environment(container: Obj, maps: dict[str, dict[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= maps[source["configMapRef"]["name"]]
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", "")
    return env


@pytest.fixture(scope="module", params=SETS)
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    return rendered_sets()[request.param]


@pytest.fixture(scope="module", params=CLUSTER_SETS)
def cluster(request: pytest.FixtureRequest) -> list[Obj]:
    return rendered_sets()[request.param]


# --- selectors and ports -------------------------------------------------------------------


def test_service_selectors_match_exactly_one_workload_and_its_named_ports(
    objects: list[Obj],
) -> None:
    for service in of_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        matched = [
            t for _, t in pod_templates(objects) if selects(selector, t["metadata"]["labels"])
        ]
        assert len(matched) == 1, f"Service {service['metadata']['name']} selects {len(matched)}"
        ports = {
            p["name"]: p["containerPort"]
            for c in containers(matched[0])
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: {port}"


def test_pod_disruption_budgets_and_autoscalers_point_at_workloads(cluster: list[Obj]) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(cluster, "Deployment")}
    for budget in of_kind(cluster, "PodDisruptionBudget"):
        labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
        selector = budget["spec"]["selector"]["matchLabels"]
        assert sum(selects(selector, lab) for lab in labels) == 1, budget["metadata"]["name"]
    for scaler in of_kind(cluster, "HorizontalPodAutoscaler"):
        assert scaler["spec"]["scaleTargetRef"]["name"] in deployments
    assert set(deployments) == {
        h["metadata"]["name"] for h in of_kind(cluster, "HorizontalPodAutoscaler")
    }
    assert set(deployments) == {
        b["metadata"]["name"] for b in of_kind(cluster, "PodDisruptionBudget")
    }


def test_container_and_probe_ports_are_the_ones_the_processes_listen_on(
    cluster: list[Obj],
) -> None:
    maps = config_maps(cluster)
    checked = 0
    for _, template in pod_templates(cluster):
        for container in containers(template, init=False):
            args = container.get("args", [])
            if not args or args[0] not in SETTINGS:
                continue
            process = PROCESSES[args[0]]
            env = environment(container, maps)
            grpc_port = int(env.get("GENMEDIA_GRPC_PORT", process.grpc_port))
            metrics_port = int(env.get("GENMEDIA_METRICS_PORT", process.metrics_port))
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports == {"grpc": grpc_port, "metrics": metrics_port}, process.name
            probes = {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
            for kind, probe in probes.items():
                assert probe["grpc"]["port"] == grpc_port, f"{process.name} {kind}"
            assert probes["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
            checked += 1
    assert checked == len(PROCESSES)


def test_triton_ports_probes_and_flags_match_the_binary(cluster: list[Obj]) -> None:
    triton = named(cluster, "Deployment", "triton")["spec"]["template"]
    server = next(c for c in triton["spec"]["containers"] if c["name"] == "triton")
    flags = dict(
        a.removeprefix("--").split("=", 1) if "=" in a else (a[2:], "") for a in server["args"]
    )
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {
        "http": int(flags["http-port"]),
        "grpc": int(flags["grpc-port"]),
        "metrics": int(flags["metrics-port"]),
    }
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[kind]["httpGet"]["port"] == "http"
        assert server[kind]["httpGet"]["path"].startswith("/v2/health/")
    # Every flag is one the real tritonserver knows.
    help_text = subprocess.run(
        [str(TritonInstall.find().binary), "--help"], capture_output=True, text=True, timeout=60
    )
    known = set(re.findall(r"--([a-z][a-z0-9-]+)", help_text.stdout + help_text.stderr))
    assert "model-repository" in known
    assert set(flags) <= known, sorted(set(flags) - known)
    host, port = config_map(cluster, "genmedia-model-services")["GENMEDIA_TRITON_URL"].split(":")
    assert (host, int(port)) == ("triton", ports["grpc"])


def test_the_gateway_reaches_each_backend_at_its_service_and_port(cluster: list[Obj]) -> None:
    services = {s["metadata"]["name"]: s for s in of_kind(cluster, "Service")}
    for process in ALL_PROCESSES:
        if process.name == "gateway":
            continue
        host, port = config_map(cluster, "genmedia-gateway")[process.addr_setting].split(":")
        service = services[host]
        assert service["spec"]["clusterIP"] == "None", "headless: the gateway balances per call"
        grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        assert int(port) == grpc_port["port"] == process.grpc_port


# --- environment variables -----------------------------------------------------------------


def test_every_variable_a_container_gets_is_read_by_it(objects: list[Obj]) -> None:
    maps = config_maps(objects)
    for _, template in pod_templates(objects):
        for container in containers(template):
            unread = set(environment(container, maps)) - reads(container)
            shared = {
                name
                for source in container.get("envFrom", [])
                for name in maps[source["configMapRef"]["name"]]
            }
            # A ConfigMap shared by several containers must be read by at least one of them.
            readers = [
                reads(other)
                for _, t in pod_templates(objects)
                for other in containers(t)
                if any(s in other.get("envFrom", []) for s in container.get("envFrom", []))
            ]
            for name in unread:
                assert name in shared and any(name in r for r in readers), (
                    f"{container['name']} gets {name}, which nothing reads"
                )


def required_env(process: str) -> set[str]:
    fields = SETTINGS[process].model_fields
    return {ENV_PREFIX + name.upper() for name, field in fields.items() if field.is_required()}


def test_every_process_gets_its_required_settings(cluster: list[Obj]) -> None:
    maps = config_maps(cluster)
    for _, template in pod_templates(cluster):
        for container in containers(template, init=False):
            args = container.get("args", [])
            if args and args[0] in SETTINGS:
                missing = required_env(args[0]) - set(environment(container, maps))
                assert not missing, f"{args[0]} lacks {missing}"


def test_compose_sets_only_variables_the_processes_read_and_all_they_need() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        command = service.get("command", [])
        if command and command[0] in SETTINGS:
            environment_names = set(service.get("environment", {}))
            assert environment_names <= settings_env(command[0]), name
            assert required_env(command[0]) <= environment_names, name
            assert service["healthcheck"]["test"][1:4] == [
                "genmedia-serve",
                "healthcheck",
                command[0],
            ]
    assert set(compose["services"]["triton"]["environment"]) <= MODEL_CODE_ENV


# --- model repository, weights and the Triton image ----------------------------------------


def mounts(container: Obj) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def volume_of(path: str, container: Obj) -> str:
    for mount_path, volume in mounts(container).items():
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            return volume
    raise AssertionError(f"{path} is on no volume of {container['name']}")


def test_the_repository_triton_serves_is_the_one_the_init_step_builds(cluster: list[Obj]) -> None:
    spec = named(cluster, "Deployment", "triton")["spec"]["template"]["spec"]
    init = {c["name"]: c for c in spec["initContainers"]}
    build, server = init["build-repository"], spec["containers"][0]
    built = dict(a[2:].split("=", 1) for a in build["command"] if a.startswith("--"))
    served = next(a.split("=", 1)[1] for a in server["args"] if a.startswith("--model-repository="))
    assert built["out"] == served
    assert volume_of(built["out"], build) == volume_of(served, server)
    weights = config_map(cluster, "genmedia-triton")["GENMEDIA_WEIGHTS_DIR"]
    assert built["weights"] == weights
    installer = spec["initContainers"][0]  # fetch (gpu) or the demo pack (cpu)
    assert installer["name"] in ("fetch-weights", "install-demo-weights")
    for container in (installer, build, server):
        assert volume_of(weights, container) == "weights", container["name"]
    if installer["name"] == "fetch-weights":
        assert config_map(cluster, "genmedia-fetch")["GENMEDIA_WEIGHTS_DIR"] == weights
    else:
        assert installer["command"][-1].rstrip("/") == weights
    # The builder runs where the Triton image puts the sources.
    assert build["workingDir"] == "/opt/genmedia"
    dockerfile = (DOCKER / "triton.Dockerfile").read_text()
    assert "COPY models/repository/ /opt/genmedia/models/repository/" in dockerfile
    assert "COPY models/genmedia_models/ /opt/genmedia/models/genmedia_models/" in dockerfile
    assert re.search(
        r"services/launcher/repository\.py .*\n?.*/opt/genmedia/services/launcher/", dockerfile
    )
    # Text generation reads the tokenizer from the same volume.
    text = named(cluster, "Deployment", "text-generation")["spec"]["template"]["spec"]
    tokenizer = config_map(cluster, "genmedia-text-generation")["GENMEDIA_TOKENIZER_DIR"]
    assert volume_of(tokenizer, text["containers"][0]) == "weights"
    claim = {v["name"]: v for v in text["volumes"]}["weights"]["persistentVolumeClaim"]
    assert (
        claim["claimName"]
        == {v["name"]: v for v in spec["volumes"]}["weights"]["persistentVolumeClaim"]["claimName"]
    )


def test_the_triton_image_copies_what_exists_and_the_build_context_lets_through() -> None:
    ignore = (REPO_ROOT / ".dockerignore").read_text().split()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile.read_text(), re.MULTILINE):
            *sources, _ = line.replace("\\", " ").split()
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: {source} does not exist"
                assert any(source.rstrip("/").startswith(a) for a in allowed), (
                    f"{dockerfile.name}: {source} is excluded by .dockerignore"
                )


def test_requirements_the_images_install_are_the_pinned_ones() -> None:
    services = (DOCKER / "services.Dockerfile").read_text()
    dev_pins = (REPO_ROOT / "requirements" / "dev.txt").read_text()
    tools_pin = re.search(r"grpcio-tools==\S+", services)
    assert tools_pin and tools_pin.group(0) in dev_pins
    assert "pip install -r requirements/services.txt" in services
    models = (REPO_ROOT / "requirements" / "models.txt").read_text()
    assert "-r triton.txt" in models, "the local Triton must run what the image installs"
    for line in (REPO_ROOT / "requirements" / "triton.txt").read_text().splitlines():
        requirement = line.split("#")[0].strip()
        assert not requirement or "==" in requirement, f"unpinned: {requirement}"


# --- images --------------------------------------------------------------------------------


def test_every_image_is_pinned_to_a_version() -> None:
    images = {
        c["image"]
        for objects in rendered_sets().values()
        for _, template in pod_templates(objects)
        for c in containers(template)
    }
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    images |= {s["image"] for s in compose["services"].values()}
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        images |= {
            ref
            for ref in re.findall(r"^FROM (\S+)", dockerfile.read_text(), re.MULTILINE)
            if ":" in ref or "/" in ref or "." in ref  # not a stage name
        }
    stages = {"build", "loadtest-build", "protos", "services", "loadtest"}
    for image in images - stages:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), image
    ours = {i for i in images if i.startswith("genmedia/")}
    assert ours == {f"genmedia/{n}:{VERSION}" for n in ("services", "triton", "loadtest")}


def test_image_labels_carry_the_project_version() -> None:
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        labels = re.findall(
            r'org\.opencontainers\.image\.version="([^"]+)"', dockerfile.read_text()
        )
        assert labels and set(labels) == {VERSION}, dockerfile.name


# --- monitoring, autoscaling, network policies, secrets ------------------------------------


def test_service_monitors_scrape_every_process_under_the_prometheus_job_names() -> None:
    objects = rendered_sets()["all-components"]
    prometheus = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    services = of_kind(objects, "Service")
    scraped = set()
    for monitor in of_kind(objects, "ServiceMonitor"):
        spec = monitor["spec"]
        matched = [
            s for s in services if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(matched) == 1, monitor["metadata"]["name"]
        service = matched[0]
        assert {e["port"] for e in spec["endpoints"]} <= {
            p["name"] for p in service["spec"]["ports"]
        }
        scraped.add(service["metadata"]["labels"][spec["jobLabel"]])
    assert scraped == jobs


def test_custom_metrics_of_the_autoscalers_are_served_by_the_adapter_rules() -> None:
    objects = rendered_sets()["all-components"]
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    served = {rule["name"]["as"] for rule in values["rules"]["custom"]}
    wanted = {
        metric["pods"]["metric"]["name"]
        for scaler in of_kind(objects, "HorizontalPodAutoscaler")
        for metric in scaler["spec"]["metrics"]
        if metric["type"] == "Pods"
    }
    assert wanted == served


def test_network_policies_let_only_the_gateway_reach_services_and_only_services_reach_triton(
    cluster: list[Obj],
) -> None:
    policies = of_kind(cluster, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies)
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in of_kind(cluster, "Deployment")}

    def allowed_sources(target: str, port_name: str) -> list[Any]:
        labels = pods[target]["metadata"]["labels"]
        sources = []
        for policy in policies:
            selector = policy["spec"]["podSelector"].get("matchLabels", {})
            if not selects(selector, labels):  # an empty selector selects every pod
                continue
            for rule in policy["spec"].get("ingress", []):
                # A rule without ports admits every port.
                if not rule.get("ports") or any(p["port"] == port_name for p in rule["ports"]):
                    sources.append(rule.get("from", "anyone"))
        return sources

    assert allowed_sources("gateway", "grpc") == ["anyone"]
    for backend in ("image-generation", "image-translation", "text-generation"):
        (only,) = allowed_sources(backend, "grpc")
        assert [s["podSelector"]["matchLabels"] for s in only] == [
            {"app.kubernetes.io/name": "gateway"}
        ]
    (only,) = allowed_sources("triton", "grpc")
    (selector,) = [s["podSelector"]["matchLabels"] for s in only]
    reaching = {n for n, t in pods.items() if selects(selector, t["metadata"]["labels"])}
    assert reaching == {"image-generation", "image-translation", "text-generation"}


def test_secret_template_is_the_secret_the_gateway_mounts_and_its_keys_file_loads(
    tmp_path: Path,
) -> None:
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    gateway = named(rendered_sets()["gpu"], "Deployment", "gateway")["spec"]["template"]["spec"]
    volume = {v["name"]: v for v in gateway["volumes"]}["api-keys"]["secret"]
    assert volume["secretName"] == template["metadata"]["name"]
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(template["stringData"]["keys.json"])
    assert len(load_keys(keys_file)) == 1
    mount = {m["name"]: m["mountPath"] for m in gateway["containers"][0]["volumeMounts"]}[
        "api-keys"
    ]
    configured = config_map(rendered_sets()["gpu"], "genmedia-gateway")["GENMEDIA_API_KEYS_FILE"]
    assert configured == f"{mount}/{volume['items'][0]['path']}"
    assert len(load_keys(DOCKER / "api-keys.example.json")) == 0
