"""One trace across gateway -> image-generation -> its Triton call, exported over OTLP.

A gateway and an image-generation replica are started with
GENMEDIA_OTLP_ENDPOINT pointing at an OTLP/gRPC collector run by this test,
which keeps the spans in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from services.common.registry import GATEWAY, IMAGE_GENERATION
from services.launcher.stack import Stack, free_port
from tests.integration.processes import open_channel, spawn

pytestmark = pytest.mark.integration


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every exported span with the name of the service that sent it."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def Export(self, request: object, context: object) -> object:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                )
                for scope in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, str]]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_one_trace_spans_gateway_service_and_triton_call(
    stack: Stack, collector: tuple[Collector, str], tmp_path: Path
) -> None:
    spans, endpoint = collector
    tracing = {"GENMEDIA_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    replica = spawn(stack, IMAGE_GENERATION, tmp_path, **tracing)
    gateway = spawn(
        stack, GATEWAY, tmp_path, GENMEDIA_IMAGE_GENERATION_ADDR=replica.address, **tracing
    )
    try:
        replica.wait_health()
        gateway.wait_health()
        with open_channel(gateway.address) as channel:
            gen_grpc.ImageGenerationServiceStub(channel).GenerateImages(
                gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(id=3)], seed=1),
                metadata=(("x-request-id", "traced-call"),),
                timeout=60,
            )
            # Streams pass through the traced gateway unharmed.
            chunks = list(
                text_grpc.TextGenerationServiceStub(channel).StreamText(
                    text_pb.GenerateTextRequest(prompt="Trace", max_new_tokens=8, seed=2),
                    timeout=60,
                )
            )
            assert chunks[-1].usage.generated_tokens > 0
        deadline = time.monotonic() + 20
        while not any(s.name == "triton biggan" for _, s in spans.spans):
            assert time.monotonic() < deadline, f"no Triton span in {len(spans.spans)} spans"
            time.sleep(0.2)
    finally:
        gateway.stop()
        replica.stop()

    method = "/genmedia.v1.ImageGenerationService/GenerateImages"
    (triton,) = [s for _, s in spans.spans if s.name == "triton biggan"]
    trace = [(service, s) for service, s in spans.spans if s.trace_id == triton.trace_id]
    by_id = {s.span_id: (service, s) for service, s in trace}
    # Walk up from the Triton call to the root: each hop is the parent of the next.
    chain = []
    span_id = triton.span_id
    while span_id in by_id:
        service, span = by_id[span_id]
        chain.append((service, span.name.lstrip("/"), span.kind))
        span_id = span.parent_span_id
    server, client = 2, 3  # SPAN_KIND_SERVER, SPAN_KIND_CLIENT
    assert chain == [
        ("genmedia-image-generation", "triton biggan", client),
        ("genmedia-image-generation", method.lstrip("/"), server),
        ("genmedia-gateway", method.lstrip("/"), client),
        ("genmedia-gateway", method.lstrip("/"), server),
    ]
