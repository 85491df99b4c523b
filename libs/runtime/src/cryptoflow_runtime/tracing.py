"""OpenTelemetry: a tracer provider per service; OTLP export only when configured."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure_tracing(service: str, otlp_endpoint: str | None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": f"cryptoflow-{service}"}))
    if otlp_endpoint:
        # Imported lazily: the exporter is an optional extra, off by default.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    return provider
