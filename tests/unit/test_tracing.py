"""Tracing is off, and installs nothing, unless an endpoint is set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common import tracing


@pytest.fixture(autouse=True)
def _tracing_off_afterwards() -> Iterator[None]:
    yield
    tracing.shutdown()


def test_without_an_endpoint_nothing_is_installed() -> None:
    assert tracing.setup("gateway", None) is False
    assert not tracing.enabled()
    assert tracing.server_interceptors() == []
    assert tracing.start_client_span("/x/y", {}) == (None, ())


def test_a_client_span_carries_its_context_in_w3c_metadata() -> None:
    exporter = InMemorySpanExporter()
    assert tracing.setup("gateway", None, SimpleSpanProcessor(exporter))
    assert len(tracing.server_interceptors()) == 1
    span, metadata = tracing.start_client_span("triton biggan", {"triton.model": "biggan"})
    assert span is not None
    ((name, value),) = metadata
    trace_id = format(span.get_span_context().trace_id, "032x")
    span_id = format(span.get_span_context().span_id, "016x")
    assert name == "traceparent"
    assert value.startswith(f"00-{trace_id}-{span_id}-")  # then the trace flags (sampled)
    tracing.end_span(span, "OK")
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "triton biggan"
    assert finished.attributes["rpc.grpc.status_code"] == "OK"
    assert finished.resource.attributes["service.name"] == "genmedia-gateway"
