"""One candle's path is one trace: extractor → lake-writer → transformer → warehouse-loader.

The four services run in this test's event loop (each `build(settings)` then `app.start()`),
sharing one TracerProvider with an in-memory exporter, against a real nats-server, a file://
lake, a real PostgreSQL and the exchange simulator. The extractor asks for one symbol and ten
candles, so one RawSnapshot → one bronze object → one silver batch → one Loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from cryptoflow_contracts import Dataset
from cryptoflow_exchange_sim import RandomWalkMarket, running_simulator
from cryptoflow_extractor.app import build as build_extractor
from cryptoflow_extractor.config import ExtractorSettings
from cryptoflow_lake_writer.app import build as build_lake_writer
from cryptoflow_lake_writer.config import LakeWriterSettings
from cryptoflow_runtime import Service
from cryptoflow_runtime.logs import JsonFormatter
from cryptoflow_runtime.tracing import injected_tracer_provider
from cryptoflow_transformer.app import build as build_transformer
from cryptoflow_transformer.config import TransformerSettings
from cryptoflow_warehouse_loader.app import build as build_loader
from cryptoflow_warehouse_loader.config import WarehouseLoaderSettings
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
MINUTE = 60_000
CANDLES = 10

RAW = "cryptoflow.raw.ohlcv.binance.BTC-USDT"
LAKE = "cryptoflow.lake.ohlcv.binance.BTC-USDT"
SILVER = "cryptoflow.silver.ohlcv.binance.BTC-USDT"
WAREHOUSE = "cryptoflow.warehouse.ohlcv"


class Captured(logging.Handler):
    """Log lines as the services' JSON formatter writes them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


@pytest.fixture
def captured_logs() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with injected_tracer_provider(provider):
        yield exporter
    provider.shutdown()


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    market = RandomWalkMarket(["BTC/USDT"], seed=7, start_ms=T0_MS, end_ms=T0_MS + CANDLES * MINUTE)
    async with running_simulator(market) as url:
        yield url


async def wait_for_messages(nats_url: str, stream: str, count: int, logs: Captured, timeout: float = 60) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (await js.stream_info(stream)).state.messages >= count:
                    return
            except nats.js.errors.NotFoundError:
                pass
            await asyncio.sleep(0.2)
        logged = "\n".join(
            f"{line['logger']}: {line['msg'].splitlines()[0]} {line.get('error', '')}" for line in logs.lines
        )
        raise AssertionError(f"timed out waiting for {count} message(s) on {stream}; logged:\n{logged}")
    finally:
        await nc.close()


def one(found: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    matching = [s for s in found if s.name == name and s.kind == kind]
    assert len(matching) == 1, f"expected one {kind.name} span {name!r}, got {[s.name for s in found]}"
    return matching[0]


async def test_one_candle_batch_is_one_trace_from_extractor_to_loader(
    fresh_nats_url: str,
    fresh_database_url: str,
    tmp_path: Path,
    simulator: str,
    spans: InMemorySpanExporter,
    captured_logs: Captured,
) -> None:
    lake_url = f"file://{tmp_path / 'lake'}"
    common: dict[str, Any] = {"nats_url": fresh_nats_url, "http_port": 0}
    settings = [
        (
            build_loader,
            WarehouseLoaderSettings(**common, lake_url=lake_url, database_url=fresh_database_url),
        ),
        (build_transformer, TransformerSettings(**common, lake_url=lake_url)),
        (build_lake_writer, LakeWriterSettings(**common, lake_url=lake_url, batch_timeout_s=0.3)),
        (
            build_extractor,
            ExtractorSettings(
                **common,
                exchange="binance",
                exchange_url=simulator,
                symbols=["BTC/USDT"],
                timeframes=["1m"],
                datasets=[Dataset.OHLCV],
                since=T0,
                until=datetime.fromtimestamp((T0_MS + (CANDLES - 1) * MINUTE) / 1000, UTC),
                poll_interval_s=0.5,
            ),
        ),
    ]
    services: list[Service] = []
    try:
        for build, config in settings:
            service = await build(config)  # type: ignore[operator]
            await service.app.start()
            services.append(service)
        await wait_for_messages(fresh_nats_url, "WAREHOUSE", 1, logs=captured_logs)
    finally:
        for service in reversed(services):
            await service.app.stop()

    found = list(spans.get_finished_spans())
    chain = {
        "extractor publish": one(found, f"{RAW} publish", SpanKind.PRODUCER),
        "lake-writer consume": one(found, f"{RAW} process", SpanKind.CONSUMER),
        "lake-writer publish": one(found, f"{LAKE} publish", SpanKind.PRODUCER),
        "transformer consume": one(found, f"{LAKE} process", SpanKind.CONSUMER),
        "transformer publish": one(found, f"{SILVER} publish", SpanKind.PRODUCER),
        "loader consume": one(found, f"{SILVER} process", SpanKind.CONSUMER),
        "loader publish": one(found, f"{WAREHOUSE} publish", SpanKind.PRODUCER),
    }
    trace_ids = {name: format(span.context.trace_id, "032x") for name, span in chain.items()}
    assert len(set(trace_ids.values())) == 1, trace_ids
    trace_id = chain["extractor publish"].context.trace_id

    # The trace has one root: the extractor's publish (FastStream's "create" span around it).
    in_trace = [s for s in found if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    roots = [s for s in in_trace if s.parent is None or s.parent.span_id not in by_id]
    assert [(r.name, r.kind) for r in roots] == [(f"{RAW} create", SpanKind.PRODUCER)]

    # Each stage's handler span descends from the previous stage's publish: FastStream injects the
    # publish's "create" span (the publish span's parent) into the headers.
    def ancestors(span: ReadableSpan) -> set[int]:
        seen: set[int] = set()
        while span.parent is not None and span.parent.span_id in by_id:
            seen.add(span.parent.span_id)
            span = by_id[span.parent.span_id]
        return seen

    for consumer, producer in (
        ("lake-writer consume", "extractor publish"),
        ("transformer consume", "lake-writer publish"),
        ("loader consume", "transformer publish"),
    ):
        created = chain[producer].parent
        assert created is not None and by_id[created.span_id].name.endswith(" create")
        assert created.span_id in ancestors(chain[consumer]), (consumer, producer)
    # The lake-writer's batch (FastStream's consumer "create" span, parent of its process span)
    # still links every message of the batch: here the one it was built from.
    batch = chain["lake-writer consume"]
    assert batch.parent is not None
    batch_created = by_id[batch.parent.span_id]
    assert (batch_created.name, batch_created.kind) == (f"{RAW} create", SpanKind.CONSUMER)
    extractor_create = chain["extractor publish"].parent
    assert extractor_create is not None
    assert [link.context.span_id for link in batch_created.links] == [extractor_create.span_id]

    # Handler spans name the event they consumed; the handlers' log lines carry trace and event ids.
    def attribute(span: ReadableSpan, name: str) -> Any:
        return (span.attributes or {})[name]

    raw_id = attribute(batch, "cryptoflow.event_ids")[0]
    assert str(raw_id).startswith("RawSnapshot-")
    assert str(attribute(chain["transformer consume"], "cryptoflow.event_id")).startswith("ObjectWritten-")
    # The loader pulls silver batches several at a time, like the lake-writer its snapshots.
    batch_ready_id = attribute(chain["loader consume"], "cryptoflow.event_ids")[0]
    assert str(batch_ready_id).startswith("BatchReady-")

    hex_id = format(trace_id, "032x")
    by_msg = {line["msg"]: line for line in captured_logs.lines if line.get("trace_id") == hex_id}
    assert by_msg["bronze object written"]["event_ids"] == [raw_id]
    assert by_msg["silver batch written"]["event_id"] == batch_ready_id
    assert by_msg["batch loaded"]["event_id"] == batch_ready_id
