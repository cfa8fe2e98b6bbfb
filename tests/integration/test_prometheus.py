"""A real Prometheus server scrapes the running stack with deploy/prometheus's own config.

The config's static targets are pointed at the session stack's free ports and
scraped every second; PromQL over the HTTP API then has to see the calls
this test makes, counted by method and code, the tokens generated, Triton's
own series, and the recording rules' results.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from genmedia_shared.paths import REPO_ROOT
from services.common.registry import ALL_PROCESSES
from services.launcher.stack import Stack, free_port

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
JOBS = [process.name for process in ALL_PROCESSES] + ["triton"]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict]:
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(address, timeout=10) as reply:
            answer = json.load(reply)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for(
        self, promql: str, accept: Callable[[float | None], bool], timeout_s: float = 30.0
    ) -> float | None:
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.value(promql)
            if accept(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.5)


def scrape_config(stack: Stack, rules_dir: Path) -> dict:
    """deploy/prometheus/prometheus.yml, its targets moved to the stack's ports."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(rules_dir / Path(name).name) for name in config["rule_files"]]
    ports = {name: stack.ports.processes[name].metrics for name in stack.ports.processes}
    ports["triton"] = stack.ports.triton.metrics
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert sorted(jobs) == sorted(JOBS), "the config must scrape every process and Triton"
    for name, job in jobs.items():
        # The labels a ServiceMonitor gives every series in the cluster, which
        # prometheus-adapter's rules select on.
        labels = {"namespace": "genmedia", "pod": f"{name}-0"}
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[name]}"], "labels": labels}]
    return config


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run `make prometheus-tools` (make test does it)")
    work = tmp_path_factory.mktemp("prometheus")
    config_file = work / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(scrape_config(stack, PROMETHEUS_DIR / "rules")))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (work / "prometheus.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus never became ready"
            time.sleep(0.3)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_every_process_and_triton_is_scraped(prometheus: Prometheus) -> None:
    for job in JOBS:
        assert prometheus.wait_for(f'up{{job="{job}"}}', lambda v: v == 1) == 1, job


def test_calls_through_the_gateway_are_counted_by_method_and_code(
    prometheus: Prometheus, gateway: grpc.Channel
) -> None:
    ok = (
        'sum(grpc_server_handled_total{job="gateway", grpc_method="GenerateImages", '
        'grpc_code="OK"})'
    )
    bad = (
        'sum(grpc_server_handled_total{job="image-generation", grpc_method="GenerateImages", '
        'grpc_code="INVALID_ARGUMENT"}) or vector(0)'
    )
    ok_before = prometheus.wait_for(ok, lambda v: v is not None) or 0.0
    bad_before = prometheus.value(bad) or 0.0
    stub = gen_grpc.ImageGenerationServiceStub(gateway)
    for seed in range(3):
        stub.GenerateImages(
            gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(id=1)], seed=seed),
            timeout=60,
        )
    with pytest.raises(grpc.RpcError):
        stub.GenerateImages(
            gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="no such thing")]),
            timeout=60,
        )
    assert prometheus.wait_for(ok, lambda v: v == ok_before + 3) == ok_before + 3
    # The gateway's side of its calls to the backend (grpc_client_*) saw them too.
    client_ok = ok.replace("grpc_server_handled_total", "grpc_client_handled_total")
    assert (prometheus.wait_for(client_ok, lambda v: (v or 0) >= 3) or 0) >= 3
    assert prometheus.wait_for(bad, lambda v: v == bad_before + 1) == bad_before + 1


def test_generated_tokens_are_counted(prometheus: Prometheus, gateway: grpc.Channel) -> None:
    tokens = 'sum(genmedia_tokens_generated_total{job="text-generation"}) or vector(0)'
    before = prometheus.value(tokens) or 0.0
    stub = text_grpc.TextGenerationServiceStub(gateway)
    generated = sum(
        stub.GenerateText(
            text_pb.GenerateTextRequest(prompt="Count me", max_new_tokens=5, seed=seed),
            timeout=60,
        ).usage.generated_tokens
        for seed in range(2)
    )
    assert generated > 0
    assert prometheus.wait_for(tokens, lambda v: v == before + generated) == before + generated


def test_triton_series_and_recording_rules_are_there(
    prometheus: Prometheus, gateway: grpc.Channel
) -> None:
    gen_grpc.ImageGenerationServiceStub(gateway).GenerateImages(
        gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(id=2)], seed=9), timeout=60
    )
    success = 'sum(nv_inference_request_success{job="triton", model="biggan"})'
    assert (prometheus.wait_for(success, lambda v: bool(v)) or 0) > 0
    serving = prometheus.query("genmedia_serving")
    assert {s["metric"]["job"] for s in serving} == {p.name for p in ALL_PROCESSES}
    assert all(s["value"][1] == "1" for s in serving)
    rate = (
        'genmedia:grpc_requests:rate5m{job="gateway", '
        'grpc_service="genmedia.v1.ImageGenerationService"}'
    )
    assert (prometheus.wait_for(rate, lambda v: bool(v)) or 0) > 0


GPU_ONLY = {"nv_gpu_utilization"}
"""Triton exports these only where it sees a GPU."""


def declared_metric_names() -> set[str]:
    """Every series name the genmedia processes can export, observed or not yet."""
    from prometheus_client import REGISTRY

    import services.gateway.metrics
    import services.image_generation.generator
    import services.image_translation.translator
    import services.text_generation.generator  # noqa: F401

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        metric.name + suffix
        for metric in REGISTRY.collect()
        for suffix in suffixes.get(metric.type, ("",))
    }


def test_dashboard_queries_parse_and_name_only_metrics_the_stack_exports(
    prometheus: Prometheus, gateway: grpc.Channel
) -> None:
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/genmedia.json").read_text())
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ["Gateway", "Image generation", "Image translation", "Text generation", "Triton"]
    address = f"{prometheus.url}/api/v1/label/__name__/values"
    with urllib.request.urlopen(address, timeout=10) as reply:
        scraped = set(json.load(reply)["data"])
    recorded = {
        rule["record"]
        for group in yaml.safe_load((PROMETHEUS_DIR / "rules/recording.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    known = scraped | recorded | declared_metric_names() | GPU_ONLY
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(expressions) >= 20
    for expr in expressions:
        prometheus.query(expr.replace("$__rate_interval", "1m"))  # the real parser accepts it
        names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))
        assert names, expr
        assert names <= known, f"{expr} names {sorted(names - known)}"


def adapter_query(template: str, series: str) -> str:
    """A prometheus-adapter metricsQuery as the adapter fills it in for the genmedia namespace."""
    return (
        template.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", 'namespace="genmedia"')
        .replace("<<.GroupBy>>", "pod")
    )


def test_prometheus_adapter_rules_give_a_value_per_pod(
    prometheus: Prometheus, gateway: grpc.Channel
) -> None:
    values = yaml.safe_load((REPO_ROOT / "k8s/prometheus-adapter/values.yaml").read_text())
    rules = values["rules"]["custom"]
    assert len(rules) == 2
    gen_grpc.ImageGenerationServiceStub(gateway).GenerateImages(
        gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(id=3)], seed=11), timeout=60
    )
    for rule in rules:
        series = rule["name"]["matches"].strip("^$")
        assert prometheus.wait_for(f"count({rule['seriesQuery']})", lambda v: bool(v)), series
        query = adapter_query(rule["metricsQuery"], series)
        deadline = time.monotonic() + 30
        while not (result := prometheus.query(query)) and time.monotonic() < deadline:
            time.sleep(1)  # rate() needs two scrapes
        assert result, f"{rule['name']['as']}: {query} returned nothing"
        assert all(r["metric"].keys() == {"pod"} for r in result), result
        assert all(float(r["value"][1]) >= 0 for r in result), result
