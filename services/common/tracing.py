"""OpenTelemetry traces across gateway -> service -> Triton, off unless configured.

With ``GENMEDIA_OTLP_ENDPOINT`` set, each process exports spans over
OTLP/gRPC: the gRPC server span of every call (OpenTelemetry's grpc
instrumentation), the gateway's client span for each attempt on a backend
replica, and each service's span around its Triton call. The
W3C ``traceparent`` travels in gRPC metadata, to Triton too (which joins the
trace when its own OpenTelemetry tracing is on). With no endpoint nothing is
installed: no interceptor, no span, no header.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span

_provider: TracerProvider | None = None


def enabled() -> bool:
    return _provider is not None


def setup(
    process_name: str, otlp_endpoint: str | None, processor: SpanProcessor | None = None
) -> bool:
    """Starts exporting spans if an endpoint (or, in tests, a processor) is given."""
    global _provider
    if otlp_endpoint is None and processor is None:
        return False
    if processor is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True))
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"genmedia-{process_name}"}))
    provider.add_span_processor(processor)
    _provider = provider
    return True


def shutdown() -> None:
    """Flushes and stops the exporter (at process exit)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def server_interceptors() -> list[Any]:
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    # The public API only: health's Watch writes with context.write(), which
    # the instrumentation's stream wrapper does not support.
    return [
        aio_server_interceptor(
            tracer_provider=_provider, filter_=filters.service_prefix("genmedia.v1")
        )
    ]


def start_client_span(
    name: str, attributes: dict[str, str]
) -> tuple[Span | None, tuple[tuple[str, str], ...]]:
    """A client span for one outgoing call (child of the call being served), and
    the metadata that carries it on; (None, ()) when tracing is off.

    The span is not made current: a stream's span outlives the code that
    starts it, so the caller ends it with ``span.end()``.
    """
    if _provider is None:
        return None, ()
    span = _provider.get_tracer("genmedia").start_span(
        name, kind=trace.SpanKind.CLIENT, attributes=attributes
    )
    headers: dict[str, str] = {}
    propagate.inject(headers, context=trace.set_span_in_context(span))
    return span, tuple(headers.items())


def end_span(span: Span | None, status_code: str) -> None:
    """Ends a span from :func:`start_client_span`, recording the call's gRPC status."""
    if span is not None:
        span.set_attribute("rpc.grpc.status_code", status_code)
        if status_code != "OK":
            span.set_status(trace.Status(trace.StatusCode.ERROR, status_code))
        span.end()
