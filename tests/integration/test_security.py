"""Triton stays behind the services: the gateway does not route to it, and its
model repository cannot be changed over its API."""

from __future__ import annotations

import grpc
import pytest
import tritonclient.grpc as triton_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

TRITON_METHODS = [
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/RepositoryModelLoad",
]


@pytest.mark.parametrize("method", TRITON_METHODS)
def test_the_gateway_does_not_route_to_triton(gateway: grpc.Channel, method: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        gateway.unary_unary(method)(b"", timeout=10)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_gateway_lists_no_triton_service(gateway: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {service.name for service in answer.list_services_response.service}
    assert "genmedia.v1.TextGenerationService" in names
    assert not [name for name in names if name.startswith("inference.")]


def test_triton_refuses_to_load_or_unload_models_over_its_api(stack) -> None:
    client = triton_grpc.InferenceServerClient(stack.triton.grpc_url)
    try:
        for change in (client.unload_model, client.load_model):
            with pytest.raises(InferenceServerException) as error:
                change("gpt2")
            assert "not allowed" in str(error.value).lower()
        assert client.is_model_ready("gpt2")
    finally:
        client.close()
