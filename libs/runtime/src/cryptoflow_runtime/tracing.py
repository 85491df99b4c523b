"""OpenTelemetry: a tracer provider per service, OTLP export when configured, one trace per event path.

Spans come from FastStream's NATS telemetry middleware: a PRODUCER span around every publish (its
W3C `traceparent` goes into the NATS headers) and a CONSUMER span around every handler, child of
the context in the consumed message's headers. So one candle's path — extractor publish,
lake-writer, transformer, warehouse-loader — is one trace.

`NatsTelemetryMiddleware` here is FastStream's, with two additions (docs/decisions/0030):

* a batch (the lake-writer's pull batches) gets the first traced message's context as its
  parent instead of starting a new trace; every message of the batch stays linked (span links);
* the consumed event id (`Nats-Msg-Id`) is bound to the handler's log lines (`event_id`, or
  `event_ids` for a batch) and set on the span as `cryptoflow.event_id(s)`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from faststream._internal.basic_types import AsyncFuncAny
from faststream._internal.context.repository import ContextRepo
from faststream.message import StreamMessage
from faststream.nats.opentelemetry import NatsTelemetryMiddleware as _FastStreamNatsTelemetryMiddleware
from faststream.nats.response import NatsPublishCommand
from faststream.opentelemetry.middleware import BaseTelemetryMiddleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .logs import log_context
from .settings import ConfigError

OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"
TRACES_PATH = "/v1/traces"
# A batch's log lines name at most this many of its event ids (`batch_messages` gives the count).
MAX_LOGGED_EVENT_IDS = 20

_PROPAGATOR = TraceContextTextMapPropagator()
_injected: TracerProvider | None = None


def configure_tracing(service: str, otlp_endpoint: str | None) -> TracerProvider:
    """The service's tracer provider (also made the global one); OTLP/HTTP export when an endpoint is set.

    Under `injected_tracer_provider` (tests), that provider is returned instead and nothing global
    changes, so several services in one process can share it.
    """
    if _injected is not None:
        return _injected
    provider = TracerProvider(resource=Resource.create({"service.name": f"cryptoflow-{service}"}))
    if otlp_endpoint:
        provider.add_span_processor(otlp_span_processor(otlp_endpoint))
    trace.set_tracer_provider(provider)
    return provider


@contextmanager
def injected_tracer_provider(provider: TracerProvider) -> Iterator[TracerProvider]:
    """Every Service built inside the block uses `provider` (e.g. with an InMemorySpanExporter)."""
    global _injected
    previous, _injected = _injected, provider
    try:
        yield provider
    finally:
        _injected = previous


def with_trace_context(headers: dict[str, str]) -> dict[str, str]:
    """`headers` plus the current span's W3C `traceparent` (and `tracestate`), as FastStream's
    middleware adds them to every publish it makes."""
    carrier = dict(headers)
    _PROPAGATOR.inject(carrier)
    return carrier


def otlp_traces_endpoint(endpoint: str) -> str:
    """`OTEL_EXPORTER_OTLP_ENDPOINT` is the collector's base URL; traces go to `<base>/v1/traces`."""
    base = endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def otlp_span_processor(endpoint: str) -> SpanProcessor:
    try:
        # Imported lazily: the exporter is an optional dependency, and export is off by default.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set ({endpoint}) but the OTLP exporter is not installed "
            f"({exc.name or exc}): install the Python package {OTLP_PACKAGE}, or unset the variable"
        ) from None
    return BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_traces_endpoint(endpoint)))


class NatsTelemetryMiddleware(_FastStreamNatsTelemetryMiddleware):
    """FastStream's NATS telemetry, keeping batches in their messages' trace and logging event ids."""

    def __call__(self, msg: Any | None, /, *, context: ContextRepo) -> BaseTelemetryMiddleware[NatsPublishCommand]:
        return _TelemetryScope(
            msg,
            tracer=self._tracer,
            settings_provider_factory=self._settings_provider_factory,
            metrics_container=self._metrics,
            context=context,
        )


class _TelemetryScope(BaseTelemetryMiddleware[NatsPublishCommand]):
    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> Any:
        fields = consumed_event_fields(msg)
        parent = batch_parent(msg.batch_headers) if msg.batch_headers else None
        token = otel_context.attach(parent) if parent is not None else None
        try:
            with log_context(**fields):
                return await super().consume_scope(_annotated(call_next, fields), msg)
        finally:
            if token is not None:
                otel_context.detach(token)


def _annotated(call_next: AsyncFuncAny, fields: dict[str, Any]) -> AsyncFuncAny:
    """Put the event id(s) on the CONSUMER span (current once FastStream has started it)."""

    async def call(msg: StreamMessage[Any]) -> Any:
        span = trace.get_current_span()
        for key, value in fields.items():
            if key in ("event_id", "event_ids"):
                span.set_attribute(f"cryptoflow.{key}", value)
        return await call_next(msg)

    return call


def batch_parent(batch_headers: Sequence[dict[str, Any]]) -> otel_context.Context | None:
    """The trace context of the batch's first message that carries one.

    FastStream starts a batch in a new trace, linked to its messages; with this as the current
    context the batch's span is a child of the first message's publish instead (the links stay),
    so a one-message batch — the common case of a live pipeline — continues its message's trace.
    """
    for headers in batch_headers:
        extracted = _PROPAGATOR.extract(headers)
        if trace.get_current_span(extracted).get_span_context().is_valid:
            return extracted
    return None


def consumed_event_fields(msg: StreamMessage[Any]) -> dict[str, Any]:
    """`event_id` of a consumed message (its `Nats-Msg-Id`), or `event_ids` of a batch."""
    if msg.batch_headers:
        ids = [h["Nats-Msg-Id"] for h in msg.batch_headers if h.get("Nats-Msg-Id")]
        if not ids:
            return {}
        return {"event_ids": ids[:MAX_LOGGED_EVENT_IDS], "batch_messages": len(msg.batch_headers)}
    event_id = (msg.headers or {}).get("Nats-Msg-Id")
    return {"event_id": event_id} if event_id else {}
