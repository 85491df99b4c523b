"""Lake-writer service: RAW batches → immutable bronze objects → ObjectWritten on LAKE."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from cryptoflow_contracts import STREAM_SUBJECTS, ObjectWritten, RawSnapshot, Stage, Stream, lake_subject
from cryptoflow_runtime import Lake, PoisonMessageError, Service, msg_id_headers, settle_failure
from cryptoflow_runtime.lake import sha256_hex
from cryptoflow_runtime.metrics import BATCH_SIZE, HANDLER_SECONDS, MESSAGES_PROCESSED
from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.aio.msg import Msg
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy
from prometheus_client import Counter
from pydantic import ValidationError

from .config import LakeWriterSettings
from .objects import build_objects

log = logging.getLogger(__name__)

NAME = "lake-writer"
OBJECTS_WRITTEN = Counter("cryptoflow_lake_objects_written_total", "Bronze objects written", ["dataset"])
BYTES_WRITTEN = Counter("cryptoflow_lake_bytes_written_total", "Bronze bytes written", ["dataset"])


async def build(settings: LakeWriterSettings) -> Service:
    service = Service(NAME, settings)
    service.watch_consumer(Stream.RAW.value, settings.durable)
    lake = service.use_lake(settings)

    @service.broker.subscriber(
        STREAM_SUBJECTS[Stream.RAW],
        stream=JStream(name=Stream.RAW.value, declare=False),
        durable=settings.durable,
        pull_sub=PullSub(batch_size=settings.batch_size, timeout=settings.batch_timeout_s, batch=True),
        ack_policy=AckPolicy.MANUAL,
        config=ConsumerConfig(
            durable_name=settings.durable,
            ack_policy=JsAckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=settings.ack_wait_s,
            max_deliver=settings.max_deliver + 1,
            max_ack_pending=settings.batch_size * 4,
        ),
        title="lake-writer/raw",
        description="RawSnapshot batches, stored as bronze objects",
    )
    async def on_raw(body: Any, message: Annotated[NatsBatchMessage, Context("message")]) -> None:
        await write_batch(service, lake.lake, settings, message.raw_message)

    return service


async def write_batch(service: Service, lake: Lake, settings: LakeWriterSettings, msgs: list[Msg]) -> None:
    started = time.perf_counter()
    BATCH_SIZE.labels(NAME).observe(len(msgs))
    good: list[tuple[Msg, RawSnapshot]] = []
    for msg in msgs:
        try:
            good.append((msg, RawSnapshot.model_validate_json(msg.data)))
        except ValidationError as exc:
            poison = PoisonMessageError(f"not a RawSnapshot: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}")
            await settle_failure(
                service.broker,
                msg,
                stage=Stage.LAKE_WRITER,
                dataset=None,
                error=poison,
                max_deliver=settings.max_deliver,
            )
    if not good:
        return
    try:
        for obj in build_objects([snapshot for _, snapshot in good], settings.zstd_level):
            await lake.put(obj.key, obj.data)
            event = ObjectWritten(
                dataset=obj.dataset,
                exchange=obj.exchange,
                lake_url=lake.url,
                key=obj.key,
                sha256=sha256_hex(obj.data),
                bytes=len(obj.data),
                records=len(obj.event_ids),
                source_event_ids=obj.event_ids,
            )
            await service.broker.publish(
                event.to_json(),
                subject=lake_subject(obj.dataset, obj.exchange),
                headers=msg_id_headers(event.event_id),
                stream=Stream.LAKE.value,
            )
            OBJECTS_WRITTEN.labels(obj.dataset.value).inc()
            BYTES_WRITTEN.labels(obj.dataset.value).inc(len(obj.data))
            log.info(
                "bronze object written", extra={"key": obj.key, "bytes": len(obj.data), "records": len(obj.event_ids)}
            )
    except Exception as exc:
        log.exception("bronze write failed")
        for msg, snapshot in good:
            await settle_failure(
                service.broker,
                msg,
                stage=Stage.LAKE_WRITER,
                dataset=snapshot.dataset,
                error=exc,
                max_deliver=settings.max_deliver,
                source_event_id=snapshot.event_id,
            )
        return
    # Ack only now: every object of the batch is durable and announced.
    for msg, snapshot in good:
        await msg.ack()
        MESSAGES_PROCESSED.labels(NAME, snapshot.dataset.value).inc()
    HANDLER_SECONDS.labels(NAME).observe(time.perf_counter() - started)
