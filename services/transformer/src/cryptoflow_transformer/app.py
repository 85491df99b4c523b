"""Transformer service: ObjectWritten → validated silver Parquet → BatchReady on SILVER."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from cryptoflow_contracts import STREAM_SUBJECTS, ObjectWritten, Stage, Stream, silver_subject
from cryptoflow_runtime import (
    Lake,
    PoisonMessageError,
    Service,
    msg_id_headers,
    publish_dead_letter,
    settle_failure,
)
from cryptoflow_runtime.metrics import HANDLER_SECONDS, MESSAGES_PROCESSED
from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, PullSub
from faststream.nats.message import NatsMessage
from nats.aio.msg import Msg
from nats.js.api import AckPolicy as JsAckPolicy
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from .batches import transform_object
from .config import TransformerSettings

log = logging.getLogger(__name__)

NAME = "transformer"
QUARANTINED_ROWS = Counter(
    "cryptoflow_transformer_quarantined_rows_total", "Rows moved to quarantine, by failed check", ["dataset", "reason"]
)
SILVER_ROWS = Counter("cryptoflow_transformer_silver_rows_total", "Rows written to silver", ["dataset"])
QUALITY_SCORE = Histogram(
    "cryptoflow_transformer_quality_score",
    "Share of a batch's rows that passed every check",
    ["dataset"],
    buckets=(0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0),
)


async def build(settings: TransformerSettings) -> Service:
    service = Service(NAME, settings)
    service.watch_consumer(Stream.LAKE.value, settings.durable)
    lake = service.use_lake(settings)

    @service.broker.subscriber(
        STREAM_SUBJECTS[Stream.LAKE],
        stream=JStream(name=Stream.LAKE.value, declare=False),
        durable=settings.durable,
        pull_sub=PullSub(batch_size=settings.concurrency, timeout=1.0),
        ack_policy=AckPolicy.MANUAL,
        config=ConsumerConfig(
            durable_name=settings.durable,
            ack_policy=JsAckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait_s,
            max_deliver=settings.max_deliver + 1,
        ),
        title="transformer/lake",
        description="ObjectWritten events; each bronze object becomes a silver batch",
    )
    async def on_object(body: Any, message: Annotated[NatsMessage, Context("message")]) -> None:
        await handle(service, lake.lake, settings, message.raw_message)

    return service


async def handle(service: Service, lake: Lake, settings: TransformerSettings, msg: Msg) -> None:
    started = time.perf_counter()
    written: ObjectWritten | None = None
    try:
        try:
            written = ObjectWritten.model_validate_json(msg.data)
        except ValidationError as exc:
            raise PoisonMessageError(f"not an ObjectWritten: {exc.errors()[0]['msg']}") from exc
        result = await transform_object(lake, written)
        if result.quarantine is not None:
            await publish_dead_letter(service.broker, result.quarantine)
            for reason, count in result.reasons.items():
                QUARANTINED_ROWS.labels(written.dataset.value, reason.split(":")[0]).inc(count)
        if result.batch is not None:
            await service.broker.publish(
                result.batch.to_json(),
                subject=silver_subject(result.batch.dataset, result.batch.exchange),
                headers=msg_id_headers(result.batch.event_id),
                stream=Stream.SILVER.value,
            )
            SILVER_ROWS.labels(written.dataset.value).inc(result.batch.rows)
            QUALITY_SCORE.labels(written.dataset.value).observe(result.batch.quality_score)
            log.info(
                "silver batch written",
                extra={"key": result.batch.key, "rows": result.batch.rows, "event_id": result.batch.event_id},
            )
    except Exception as exc:
        if not isinstance(exc, PoisonMessageError):
            log.exception("transform failed")
        await settle_failure(
            service.broker,
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
