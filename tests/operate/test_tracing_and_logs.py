"""Tracing setup and JSON log fields: OTLP export off by default, clear when missing, event ids bound."""

from __future__ import annotations

import importlib.util
import logging

import orjson
import pytest
from cryptoflow_runtime import ConfigError
from cryptoflow_runtime.logs import JsonFormatter, log_context
from cryptoflow_runtime.tracing import (
    OTLP_PACKAGE,
    batch_parent,
    configure_tracing,
    injected_tracer_provider,
    otlp_span_processor,
    otlp_traces_endpoint,
)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


OTLP_INSTALLED = _installed("opentelemetry.exporter.otlp.proto.http.trace_exporter")


def line(record_msg: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("cryptoflow.test", logging.INFO, __file__, 1, record_msg, (), None)
    record.__dict__.update(extra)
    return dict(orjson.loads(JsonFormatter("test").format(record)))


def test_bound_event_ids_are_on_every_line_and_an_explicit_one_wins() -> None:
    assert "event_id" not in line("outside")
    with log_context(event_id="ObjectWritten-1"):
        assert line("inside")["event_id"] == "ObjectWritten-1"
        assert line("explicit", event_id="BatchReady-2")["event_id"] == "BatchReady-2"
        with log_context(table="ohlcv"):
            assert {k: v for k, v in line("nested").items() if k in ("event_id", "table")} == {
                "event_id": "ObjectWritten-1",
                "table": "ohlcv",
            }
    assert "event_id" not in line("after")


def test_lines_carry_the_trace_id_while_a_span_is_active() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("handler") as span:
        logged = line("in a span")
    assert logged["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in line("no span")


def test_an_injected_provider_is_every_service_s_and_the_global_one_is_left_alone() -> None:
    before = trace.get_tracer_provider()
    with injected_tracer_provider(TracerProvider()) as injected:
        assert configure_tracing("probe", None) is injected
        assert configure_tracing("other", "http://127.0.0.1:4318") is injected
    assert trace.get_tracer_provider() is before


def test_the_endpoint_is_the_collector_base_url() -> None:
    assert otlp_traces_endpoint("http://collector:4318") == "http://collector:4318/v1/traces"
    assert otlp_traces_endpoint("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert otlp_traces_endpoint("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


@pytest.mark.skipif(OTLP_INSTALLED, reason=f"{OTLP_PACKAGE} is installed")
def test_an_endpoint_without_the_exporter_package_is_a_config_error_saying_what_to_install() -> None:
    with pytest.raises(ConfigError, match=f"OTEL_EXPORTER_OTLP_ENDPOINT.*{OTLP_PACKAGE}"):
        configure_tracing("probe", "http://127.0.0.1:4318")


@pytest.mark.skipif(not OTLP_INSTALLED, reason=f"{OTLP_PACKAGE} is not installed")
def test_an_endpoint_adds_an_otlp_exporter() -> None:
    processor = otlp_span_processor("http://127.0.0.1:4318")
    assert processor.span_exporter._endpoint == "http://127.0.0.1:4318/v1/traces"  # type: ignore[attr-defined]


def test_a_batch_continues_the_trace_of_its_first_traced_message() -> None:
    tracer = TracerProvider().get_tracer("test")
    headers: list[dict[str, str]] = [{"Nats-Msg-Id": "untraced"}]
    spans = []
    for name in ("first", "second"):
        with tracer.start_as_current_span(name) as span:
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
            headers.append(carrier)
            spans.append(span)
    parent = batch_parent(headers)
    assert parent is not None
    assert trace.get_current_span(parent).get_span_context().span_id == spans[0].get_span_context().span_id
    assert batch_parent([{"Nats-Msg-Id": "x"}]) is None
