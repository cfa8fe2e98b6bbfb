"""The deploy files agree with the code they run and with each other.

Ports, probes, environment variable names, the model repository path and
image tags are read from the rendered manifests, the Dockerfiles and the
compose file, and compared with what the processes actually read: their
settings classes, the registry of processes, the fetch command and the
repository builder, the tritonserver binary's own --help.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from genmedia_models.gpt2.watermark import KEY_FILE_ENV as WATERMARK_KEY_FILE_ENV
from services.client.fetch import INTO_ENV, MIRROR_ENV, MODELS_ENV
from services.common.registry import ALL_PROCESSES, BACKENDS, ProcessSpec
from services.common.server import LIVENESS_SERVICE
from services.common.settings import ENV_PREFIX
from services.gateway.keys import load_keys
from services.gateway.settings import QuotaStoreSettings
from services.launcher.repository import INSTANCE_COUNT_ENV, INSTANCE_KIND_ENV
from services.launcher.triton import TritonInstall
from tests.deploy.manifests import (
    DOCKER,
    K8S,
    REPO_ROOT,
    Obj,
    containers,
    named,
    of_kind,
    pod_templates,
    render,
    rendered_sets,
    selects,
)

SETTINGS = {process.name: process.settings_class() for process in ALL_PROCESSES}
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
            expected = {"grpc": grpc_port, "metrics": metrics_port}
            if process.http_port:
                expected["http"] = int(env.get("GENMEDIA_HTTP_PORT", process.http_port))
            assert ports == expected, process.name
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


def test_network_policies_let_only_the_gateway_reach_services_and_redis_only_services_triton(
    cluster: list[Obj],
) -> None:
    policies = of_kind(cluster, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies)
    pods = {w["metadata"]["name"]: t for w, t in pod_templates(cluster)}

    def ingress_rules(target: str) -> list[Obj]:
        labels = pods[target]["metadata"]["labels"]
        return [
            rule
            for policy in policies
            # An empty selector selects every pod.
            if selects(policy["spec"]["podSelector"].get("matchLabels", {}), labels)
            for rule in policy["spec"].get("ingress", [])
        ]

    def allowed_sources(target: str, port_name: str) -> list[Any]:
        return [
            rule.get("from", "anyone")
            for rule in ingress_rules(target)
            # A rule without ports admits every port.
            if not rule.get("ports") or any(p["port"] == port_name for p in rule["ports"])
        ]

    def reached_by(source: Obj) -> set[str]:
        selector = source["podSelector"]["matchLabels"]
        return {n for n, t in pods.items() if selects(selector, t["metadata"]["labels"])}

    assert allowed_sources("gateway", "grpc") == ["anyone"]
    for backend in BACKENDS:
        (only,) = allowed_sources(backend.name, "grpc")
        assert [s["podSelector"]["matchLabels"] for s in only] == [
            {"app.kubernetes.io/name": "gateway"}
        ]
    (only,) = allowed_sources("triton", "grpc")
    (source,) = only
    assert reached_by(source) == {backend.name for backend in BACKENDS}
    # The quota store: one rule in all, from the gateway pods only, to its Redis port only.
    (rule,) = ingress_rules("redis")
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}, "not a namespaceSelector: this namespace only"
    assert reached_by(source) == {"gateway"}
    (container,) = pods["redis"]["spec"]["containers"]
    assert [p["port"] for p in rule["ports"]] == [p["name"] for p in container["ports"]]


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


# --- the quota store (Redis) and pod hardening ---------------------------------------------

REDIS_MIN_VERSION = (6, 2)
"""The oldest Redis the gateway's quota store supports (deploy/README.md)."""
REDIS_PASSWORD_FILE_SETTING = "GENMEDIA_QUOTA_STORE_PASSWORD_FILE"


def secret_template() -> Obj:
    return yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())


def redis_container(objects: list[Obj]) -> Obj:
    (container,) = named(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"]
    return container


def redis_start_script(container: Obj) -> str:
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:2] == ["sh", "-c"], command
    return command[2]


def redis_flags(container: Obj) -> dict[str, str]:
    """The `--name value` options the start script gives redis-server."""
    script = redis_start_script(container)
    (line,) = [
        line for line in script.splitlines() if line.strip().startswith("exec redis-server ")
    ]
    words = shlex.split(line.split("<<")[0])[2:]
    assert words[0] == "-", "the configuration (the password) comes on stdin"
    options = words[1:]
    assert all(o.startswith("--") for o in options[::2]), options
    return {name[2:]: value for name, value in zip(options[::2], options[1::2], strict=True)}


def mounted_secret_files(objects: list[Obj], kind: str, name: str) -> dict[str, str]:
    """The files a workload's first container reads from genmedia-secrets: path -> key."""
    spec = named(objects, kind, name)["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}
    files = {}
    for mount in spec["containers"][0]["volumeMounts"]:
        secret = secrets.get(mount["name"])
        if secret is not None:
            assert secret["secretName"] == secret_template()["metadata"]["name"]
            for item in secret["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = item["key"]
    return files


def redis_password_file(objects: list[Obj]) -> tuple[str, str]:
    """(the Secret key, the file the redis container reads it from)."""
    ((path, key),) = mounted_secret_files(objects, "StatefulSet", "redis").items()
    return key, path


def memory_bytes(quantity: str) -> int:
    """A Kubernetes quantity (Mi, Gi) or a Redis size (mb, gb: powers of 1024 too)."""
    units = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "kb": 2**10, "mb": 2**20, "gb": 2**30}
    match = re.fullmatch(r"(\d+)([a-zA-Z]{2})?", quantity)
    assert match, quantity
    return int(match.group(1)) * (units[match.group(2).lower()] if match.group(2) else 1)


def test_the_quota_store_is_one_redis_pod_behind_its_service(cluster: list[Obj]) -> None:
    statefulset = named(cluster, "StatefulSet", "redis")
    service = named(cluster, "Service", statefulset["spec"]["serviceName"])
    assert statefulset["spec"]["replicas"] == 1, "one standalone Redis: no Sentinel, no Cluster"
    selected = [
        workload
        for workload, template in pod_templates(cluster)
        if selects(service["spec"]["selector"], template["metadata"]["labels"])
    ]
    assert selected == [statefulset]
    container = redis_container(cluster)
    listening = int(redis_flags(container)["port"])
    (port,) = service["spec"]["ports"]
    (container_port,) = container["ports"]
    assert port["targetPort"] == container_port["name"]
    assert container_port["containerPort"] == listening
    assert container["livenessProbe"]["tcpSocket"]["port"] == container_port["name"]
    readiness = container["readinessProbe"]["exec"]["command"][-1]
    assert f"redis-cli -p {listening} ping" in readiness and "REDISCLI_AUTH=" in readiness
    # A version the gateway's Lua scripts and commands run on.
    version = re.match(r"(\d+)\.(\d+)", container["image"].rpartition(":")[2])
    assert version, container["image"]
    assert tuple(map(int, version.groups())) >= REDIS_MIN_VERSION, container["image"]
    # One pod: a disruption budget would block every drain (0 unavailable) or
    # allow the one pod anyway; the gateways' fallback covers the restart.
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for budget in of_kind(cluster, "PodDisruptionBudget"):
        assert not selects(budget["spec"]["selector"]["matchLabels"], labels), budget
    assert all(
        h["spec"]["scaleTargetRef"]["kind"] != "StatefulSet"
        for h in of_kind(cluster, "HorizontalPodAutoscaler")
    )


def test_the_gateways_share_quotas_in_that_redis_and_assume_their_autoscalers_maximum(
    cluster: list[Obj],
) -> None:
    config = config_map(cluster, "genmedia-gateway")
    url = config["GENMEDIA_QUOTA_STORE"]
    settings = QuotaStoreSettings(
        quota_store=url, quota_fallback_replicas=config["GENMEDIA_QUOTA_FALLBACK_REPLICAS"]
    )
    address = urlsplit(url)
    assert address.scheme == "redis"
    service = named(cluster, "Service", address.hostname or "")
    (port,) = service["spec"]["ports"]
    assert address.port == port["port"]
    assert selects(
        service["spec"]["selector"],
        named(cluster, "StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"],
    )
    assert re.fullmatch(r"/\d+", address.path), f"{url}: a database number"
    # The password comes from the Secret, never from the ConfigMap.
    assert address.username is None and address.password is None, url
    assert "GENMEDIA_QUOTA_STORE_PASSWORD" not in config
    gateway_scaler = named(cluster, "HorizontalPodAutoscaler", "gateway")
    assert settings.quota_fallback_replicas == gateway_scaler["spec"]["maxReplicas"]


def test_redis_and_the_gateways_get_the_same_password_from_the_secret_template(
    cluster: list[Obj],
) -> None:
    template = secret_template()
    # The gateway reads the password from the file its setting names, mounted from the Secret.
    password_file = config_map(cluster, "genmedia-gateway")[REDIS_PASSWORD_FILE_SETTING]
    gateway_files = mounted_secret_files(cluster, "Deployment", "gateway")
    assert password_file in gateway_files, f"{password_file} is not mounted in the gateway"
    secret_key = gateway_files[password_file]
    assert secret_key in template["stringData"]
    # Redis reads the same key from a mounted file, not from its environment.
    container = redis_container(cluster)
    assert "env" not in container and "envFrom" not in container
    key, read = redis_password_file(cluster)
    assert key == secret_key
    assert f'"$(cat {read})"' in redis_start_script(container)
    assert f'"$(cat {read})"' in container["readinessProbe"]["exec"]["command"][-1]


def run_redis_start_script(
    password: str | None, scratch: Path
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The redis container's start script under sh, its password file in `scratch`
    (absent for None), with a stand-in redis-server that records its arguments and stdin."""
    objects = rendered_sets()["gpu"]
    _, password_file = redis_password_file(objects)
    if password is not None:
        (scratch / "redis-password").write_text(password)
    bin_dir = scratch / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "redis-server"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$OUT/argv"\ncat > "$OUT/stdin"\n')
    stand_in.chmod(0o755)
    script = redis_start_script(redis_container(objects))
    assert password_file in script
    script = script.replace(password_file, str(scratch / "redis-password"))
    done = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(scratch)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done, scratch


@pytest.mark.parametrize(
    "password", ["", None, "template"], ids=["empty", "missing", "template-placeholder"]
)
def test_redis_refuses_to_start_without_a_real_password(
    password: str | None, tmp_path: Path
) -> None:
    if password == "template":
        password = secret_template()["stringData"]["redis-password"]
    done, scratch = run_redis_start_script(password, tmp_path)
    assert done.returncode != 0
    assert not (scratch / "argv").exists(), "redis-server must not start without a password"


def test_redis_gets_its_password_on_stdin_not_on_its_command_line(tmp_path: Path) -> None:
    password = "0f" * 32  # what `openssl rand -hex 32` gives
    done, scratch = run_redis_start_script(password, tmp_path)
    assert done.returncode == 0, done.stderr
    arguments = (scratch / "argv").read_text()
    assert password not in arguments
    assert arguments.startswith("-\n")
    assert (scratch / "stdin").read_text() == f'requirepass "{password}"\n'


def test_redis_keeps_its_data_on_a_volume_claim_and_refuses_writes_when_full(
    cluster: list[Obj],
) -> None:
    statefulset = named(cluster, "StatefulSet", "redis")
    container = redis_container(cluster)
    flags = redis_flags(container)
    assert flags["appendonly"] == "yes"
    assert flags["appendfsync"] in ("everysec", "always")
    (claim,) = [
        c
        for c in statefulset["spec"]["volumeClaimTemplates"]
        if c["metadata"]["name"] == volume_of(flags["dir"], container)
    ]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert memory_bytes(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30
    pod_volumes = {v["name"] for v in statefulset["spec"]["template"]["spec"].get("volumes", [])}
    assert claim["metadata"]["name"] not in pod_volumes, "a pod volume would shadow the claim"
    # Never evict a key's budget or lease to make room; a full Redis refuses the
    # write and the gateways admit by their fallback. The memory limit leaves
    # room over maxmemory for the AOF rewrite's fork and the client buffers.
    assert flags["maxmemory-policy"] == "noeviction"
    limit = memory_bytes(container["resources"]["limits"]["memory"])
    assert 0 < memory_bytes(flags["maxmemory"]) <= limit // 2


def test_every_pod_is_hardened(cluster: list[Obj]) -> None:
    accounts = {a["metadata"]["name"]: a for a in of_kind(cluster, "ServiceAccount")}
    checked = set()
    for workload, template in pod_templates(cluster):
        name, spec = workload["metadata"]["name"], template["spec"]
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] >= 10000 and context["runAsGroup"] >= 10000, name
        assert context["fsGroup"] == context["runAsGroup"], name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert accounts[spec["serviceAccountName"]]["automountServiceAccountToken"] is False
        for container in containers(template):
            where = f"{name}/{container['name']}"
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, where
            assert own["readOnlyRootFilesystem"] is True, where
            assert own["capabilities"] == {"drop": ["ALL"]}, where
            assert not own.get("privileged"), where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), where
        for container in containers(template, init=False):
            assert "livenessProbe" in container and "readinessProbe" in container, name
        checked.add(name)
    assert {"gateway", "triton", "redis"} <= checked


def test_the_external_quota_store_component_removes_the_cluster_redis_and_nothing_else(
    tmp_path: Path,
) -> None:
    url = "rediss://genmedia@redis.example.com:6380/0"
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / "gpu", tmp_path)],
                "components": [
                    os.path.relpath(K8S / "components" / "external-quota-store", tmp_path)
                ],
                "configMapGenerator": [
                    {
                        "name": "genmedia-gateway",
                        "behavior": "merge",
                        "literals": [f"GENMEDIA_QUOTA_STORE={url}"],
                    }
                ],
            }
        )
    )
    objects = render(tmp_path)

    def identities(objects: list[Obj]) -> set[tuple[str, str]]:
        # Generated ConfigMaps are renamed by their content's hash.
        return {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] != "ConfigMap"}

    removed = identities(rendered_sets()["gpu"]) - identities(objects)
    assert removed == {
        (kind, "redis") for kind in ("StatefulSet", "Service", "NetworkPolicy", "ServiceAccount")
    }
    assert identities(objects) < identities(rendered_sets()["gpu"])
    config = config_map(objects, "genmedia-gateway")
    assert config["GENMEDIA_QUOTA_STORE"] == url
    assert QuotaStoreSettings(quota_store=url).quota_store == url
    password_file = config["GENMEDIA_QUOTA_STORE_PASSWORD_FILE"]
    assert password_file in mounted_secret_files(objects, "Deployment", "gateway")
