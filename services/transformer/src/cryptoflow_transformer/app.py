"""Transformer service: ObjectWritten → validated silver Parquet → BatchReady on SILVER.

OHLCV batches also feed the derived series (resampled candles, indicators: BatchReady on SILVER;
anomalies: Anomaly on ANOMALIES) when enabled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cryptoflow_contracts import BatchReady, Dataset, ObjectWritten, Stage
from cryptoflow_runtime import Consumer, Lake, Service, ensure_kv, publish, publish_dead_letter
from faststream.nats import NatsBroker
from prometheus_client import Counter, Histogram

from . import bounds
from .batches import transform_object
from .config import TransformerSettings
from .derived import DerivedConfig, derive
from .quality import check_code
from .state_store import KvStateStore, StateStore

log = logging.getLogger(__name__)

NAME = "transformer"
QUARANTINED_ROWS = Counter(
    "cryptoflow_transformer_quarantined_rows_total", "Rows moved to quarantine, by failed check", ["dataset", "reason"]
)
SILVER_ROWS = Counter("cryptoflow_transformer_silver_rows_total", "Rows written to silver", ["dataset"])
DUPLICATE_ROWS = Counter(
    "cryptoflow_transformer_duplicate_rows_total", "Rows dropped as another copy of a silver key", ["dataset"]
)
QUALITY_SCORE = Histogram(
    "cryptoflow_transformer_quality_score",
    "Share of a batch's rows that passed every check",
    ["dataset"],
    buckets=(0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0),
)
DERIVED_ROWS = Counter("cryptoflow_transformer_derived_rows_total", "Derived silver rows written", ["table"])
ANOMALIES = Counter("cryptoflow_transformer_anomalies_total", "Anomaly events published", ["kind"])


@dataclass(frozen=True)
class Derivation:
    """The derived-series step: what to derive, and where series checkpoints are kept."""

    config: DerivedConfig
    store: StateStore


class DerivationHandle:
    """Opens the checkpoint store at start (JetStream KV), when any derived series is enabled."""

    def __init__(self, service: Service, settings: TransformerSettings) -> None:
        self.config = settings.derived()
        self.bucket = settings.state_bucket
        self._service = service
        self.derivation: Derivation | None = None

    async def open(self) -> None:
        if self.config.enabled:
            kv = await ensure_kv(self._service.jetstream, self.bucket)
            self.derivation = Derivation(self.config, KvStateStore(kv))


def consumer(settings: TransformerSettings) -> Consumer[ObjectWritten]:
    return Consumer(
        ObjectWritten,
        Stage.TRANSFORMER,
        settings.durable,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        batch_size=settings.concurrency,
        title="transformer/lake",
        description="ObjectWritten events; each bronze object becomes a silver batch",
    )


async def build(settings: TransformerSettings) -> Service:
    service = Service(NAME, settings)
    bounds.configure(settings.bounds())
    lake = service.use_lake(settings)
    derivation = DerivationHandle(service, settings)
    service.resource(derivation.open)

    @service.consume(consumer(settings))
    async def on_object(written: ObjectWritten) -> None:
        await transform(service.broker, lake.lake, written, derivation.derivation)

    return service


async def transform(broker: NatsBroker, lake: Lake, written: ObjectWritten, derivation: Derivation | None) -> None:
    """One bronze object → its silver batch (+ quarantine letter, derived batches, anomalies)."""
    result = await transform_object(lake, written)
    if result.quarantine is not None:
        await publish_dead_letter(broker, result.quarantine, lake)
        for reason, count in result.reasons.items():
            QUARANTINED_ROWS.labels(written.dataset.value, check_code(reason)).inc(count)
    DUPLICATE_ROWS.labels(written.dataset.value).inc(result.duplicates)
    if result.batch is not None:
        await publish_batch(broker, result.batch)
        SILVER_ROWS.labels(written.dataset.value).inc(result.batch.rows)
        QUALITY_SCORE.labels(written.dataset.value).observe(result.batch.quality_score)
    if derivation is not None and written.dataset is Dataset.OHLCV and result.silver is not None:
        outputs = await derive(lake, derivation.store, derivation.config, result.silver, written)
        for batch in outputs.batches:
            await publish_batch(broker, batch)
            DERIVED_ROWS.labels(batch.table).inc(batch.rows)
        for anomaly in outputs.anomalies:
            await publish(broker, anomaly)
            ANOMALIES.labels(anomaly.kind).inc()


async def publish_batch(broker: NatsBroker, batch: BatchReady) -> None:
    await publish(broker, batch)
    log.info(
        "silver batch written",
        extra={"key": batch.key, "table": batch.table, "rows": batch.rows, "event_id": batch.event_id},
    )
