"""Transformer service: ObjectWritten → validated silver Parquet → BatchReady on SILVER.

OHLCV batches also feed the derived series (resampled candles, indicators: BatchReady on SILVER;
anomalies: Anomaly on ANOMALIES) when enabled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

from cryptoflow_contracts import (
    STREAM_SUBJECTS,
    Anomaly,
    BatchReady,
    Dataset,
    DeadLetter,
    ObjectWritten,
    Stage,
    Stream,
    anomaly_subject,
    silver_subject,
)
from cryptoflow_runtime import (
    Lake,
    ObjectConflictError,
    PoisonMessageError,
    Service,
    ensure_kv,
    msg_id_headers,
    publish_dead_letter,
    settle_failure,
)
from cryptoflow_runtime.metrics import HANDLER_SECONDS, MESSAGES_PROCESSED
from faststream import Context
from faststream.nats import NatsBroker
from faststream.nats.message import NatsMessage
from nats.aio.msg import Msg
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

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


async def build(settings: TransformerSettings) -> Service:
    service = Service(NAME, settings)
    service.watch_consumer(Stream.LAKE.value, settings.durable)
    lake = service.use_lake(settings)
    derivation = DerivationHandle(service, settings)
    service.app.on_startup(derivation.open)

    @service.durable_subscriber(
        STREAM_SUBJECTS[Stream.LAKE],
        Stream.LAKE.value,
        settings.durable,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        batch_size=settings.concurrency,
        title="transformer/lake",
        description="ObjectWritten events; each bronze object becomes a silver batch",
    )
    async def on_object(body: Any, message: Annotated[NatsMessage, Context("message")]) -> None:
        await handle(service.broker, lake.lake, settings, message.raw_message, derivation.derivation)

    return service


async def handle(
    broker: NatsBroker, lake: Lake, settings: TransformerSettings, msg: Msg, derivation: Derivation | None = None
) -> None:
    started = time.perf_counter()
    written: ObjectWritten | None = None
    try:
        try:
            written = ObjectWritten.model_validate_json(msg.data)
        except ValidationError as exc:
            raise PoisonMessageError(f"not an ObjectWritten: {exc.errors()[0]['msg']}") from exc
        result = await transform_object(lake, written)
        if result.quarantine is not None:
            await publish_dead_letter(broker, result.quarantine)
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
                await publish_anomaly(broker, anomaly)
    except ObjectConflictError as conflict:
        # A silver key is derived from its bronze key: different bytes there mean the transform of
        # this object changed. No retry can store it: report and dead-letter at once.
        assert written is not None
        await dead_letter_conflict(broker, msg, written, conflict)
        await msg.ack()
        return
    except Exception as exc:
        if not isinstance(exc, PoisonMessageError):
            log.exception("transform failed")
        await settle_failure(
            broker,
            msg,
            stage=Stage.TRANSFORMER,
            dataset=written.dataset if written else None,
            error=exc,
            max_deliver=settings.max_deliver,
            source_event_id=written.event_id if written else None,
        )
        return
    await msg.ack()
    MESSAGES_PROCESSED.labels(NAME, written.dataset.value).inc()
    HANDLER_SECONDS.labels(NAME).observe(time.perf_counter() - started)


async def publish_batch(broker: NatsBroker, batch: BatchReady) -> None:
    await broker.publish(
        batch.to_json(),
        subject=silver_subject(batch.dataset, batch.exchange),
        headers=msg_id_headers(batch.event_id),
        stream=Stream.SILVER.value,
    )
    log.info(
        "silver batch written",
        extra={"key": batch.key, "table": batch.table, "rows": batch.rows, "event_id": batch.event_id},
    )


async def publish_anomaly(broker: NatsBroker, anomaly: Anomaly) -> None:
    await broker.publish(
        anomaly.to_json(),
        subject=anomaly_subject(anomaly.exchange, anomaly.symbol),
        headers=msg_id_headers(anomaly.event_id),
        stream=Stream.ANOMALIES.value,
    )
    ANOMALIES.labels(anomaly.kind).inc()


async def dead_letter_conflict(
    broker: NatsBroker, msg: Msg, written: ObjectWritten, conflict: ObjectConflictError
) -> None:
    await publish_dead_letter(
        broker,
        DeadLetter(
            stage=Stage.TRANSFORMER,
            dataset=written.dataset,
            reason=f"silver object conflict: {conflict.key} exists with different bytes",
            error_type="ObjectConflictError",
            source_subject=msg.subject,
            source_event_id=written.event_id,
            deliveries=msg.metadata.num_delivered if msg.metadata else None,
            details={
                "key": conflict.key,
                "lake_url": conflict.url,
                "existing_sha256": conflict.existing_sha256,
                "new_sha256": conflict.new_sha256,
                "source_key": written.key,
            },
        ),
    )
