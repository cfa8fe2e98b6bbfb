"""What every process offers besides the API: health, reflection, metrics, no torch."""

import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from services.common.registry import ALL_PROCESSES, GATEWAY, ProcessSpec
from tests.integration.conftest import channel_to, metric_samples, metric_value, scrape

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=lambda p: p.name)
def test_health_is_serving_overall_and_per_service(stack, process: ProcessSpec) -> None:
    with channel_to(stack, process) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", *process.grpc_services):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == SERVING, service
        with pytest.raises(grpc.RpcError) as error:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=lambda p: p.name)
def test_reflection_lists_services_and_describes_them(stack, process: ProcessSpec) -> None:
    with channel_to(stack, process) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=process.grpc_services[0]),
        ]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
        names = {s.name for s in listed.list_services_response.service}
        assert set(process.grpc_services) <= names
        assert "grpc.health.v1.Health" in names
        assert described.file_descriptor_response.file_descriptor_proto


def test_metrics_count_calls_by_method_and_code(stack, gateway) -> None:
    stub = gen_grpc.ImageGenerationServiceStub(gateway)
    stub.ListClasses(gen_pb.ListClassesRequest(query="goldfish"), timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.GenerateImages(
            gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="nonexistent")]),
            timeout=10,
        )
    for process in (GATEWAY, *[p for p in ALL_PROCESSES if p.name == "image-generation"]):
        text = scrape(f"http://127.0.0.1:{stack.ports.processes[process.name].metrics}/metrics")
        labels = {"grpc_service": "genmedia.v1.ImageGenerationService"}
        ok = metric_value(
            text, "grpc_server_handled_total", grpc_method="ListClasses", grpc_code="OK", **labels
        )
        invalid = metric_value(
            text,
            "grpc_server_handled_total",
            grpc_method="GenerateImages",
            grpc_code="INVALID_ARGUMENT",
            **labels,
        )
        assert ok >= 1 and invalid >= 1, process.name
        assert "grpc_server_handling_seconds_bucket" in text


def test_triton_metrics_are_served(stack, gateway) -> None:
    def biggan_successes() -> list[float]:
        text = scrape(stack.triton.metrics_url)
        return metric_samples(text, "nv_inference_request_success", model="biggan")

    before = biggan_successes()
    assert before, "Triton's metrics have no nv_inference_request_success for biggan"
    gen_grpc.ImageGenerationServiceStub(gateway).GenerateImages(
        gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="goldfish")], count=1),
        timeout=60,
    )
    # The call's request is counted (within Triton's metrics interval at most).
    deadline = time.monotonic() + 5
    while sum(biggan_successes()) < sum(before) + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sum(biggan_successes()) >= sum(before) + 1


def _mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=lambda p: p.name)
def test_running_service_processes_have_not_loaded_torch(stack, process: ProcessSpec) -> None:
    pid = stack.pid_of(process)
    maps = _mapped_files(pid)
    assert "grpc" in maps, "sanity: the map of a gRPC server names grpc's library"
    assert "libtorch" not in maps and "/torch/" not in maps
