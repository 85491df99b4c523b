"""Lake-writer service: RAW batches → immutable bronze objects → ObjectWritten on LAKE."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Annotated, Any

import zstandard
from cryptoflow_contracts import (
    STREAM_SUBJECTS,
    DeadLetter,
    ObjectWritten,
    RawSnapshot,
    Stage,
    Stream,
    lake_subject,
)
from cryptoflow_runtime import (
    Lake,
    ObjectConflictError,
    PoisonMessageError,
    Service,
    msg_id_headers,
    publish_dead_letter,
    settle_failure,
)
from cryptoflow_runtime.lake import sha256_hex
from cryptoflow_runtime.metrics import BATCH_SIZE, HANDLER_SECONDS, MESSAGES_PROCESSED
from faststream import Context
from faststream.nats import NatsBroker
from faststream.nats.message import NatsBatchMessage
from nats.aio.msg import Msg
from prometheus_client import Counter
from pydantic import ValidationError

from .config import LakeWriterSettings
from .objects import BronzeObject, build_objects, decompress

log = logging.getLogger(__name__)

NAME = "lake-writer"
OBJECTS_WRITTEN = Counter("cryptoflow_lake_objects_written_total", "Bronze objects written", ["dataset"])
BYTES_WRITTEN = Counter("cryptoflow_lake_bytes_written_total", "Bronze bytes written", ["dataset"])


async def build(settings: LakeWriterSettings) -> Service:
    service = Service(NAME, settings)
    service.watch_consumer(Stream.RAW.value, settings.durable)
    lake = service.use_lake(settings)

    @service.durable_subscriber(
        STREAM_SUBJECTS[Stream.RAW],
        Stream.RAW.value,
        settings.durable,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        batch_size=settings.batch_size,
        batch=True,
        fetch_timeout_s=settings.batch_timeout_s,
        max_ack_pending=settings.batch_size * 4,
        title="lake-writer/raw",
        description="RawSnapshot batches, stored as bronze objects",
    )
    async def on_raw(body: Any, message: Annotated[NatsBatchMessage, Context("message")]) -> None:
        await write_batch(service.broker, lake.lake, settings, message.raw_message)

    return service


Member = tuple[Msg, RawSnapshot]


async def write_batch(broker: NatsBroker, lake: Lake, settings: LakeWriterSettings, msgs: list[Msg]) -> None:
    """Store a fetched batch as bronze objects; settle each message by the fate of its object.

    A message is acked only once its object is durable and announced; an object that failed to
    store naks its messages (retried later); a conflicting object dead-letters them.
    """
    started = time.perf_counter()
    BATCH_SIZE.labels(NAME).observe(len(msgs))
    members: dict[str, list[Member]] = defaultdict(list)
    for msg in msgs:
        try:
            snapshot = RawSnapshot.model_validate_json(msg.data)
        except ValidationError as exc:
            poison = PoisonMessageError(f"not a RawSnapshot: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}")
            await settle_failure(
                broker, msg, stage=Stage.LAKE_WRITER, dataset=None, error=poison, max_deliver=settings.max_deliver
            )
            continue
        members[snapshot.event_id].append((msg, snapshot))
    if not members:
        return
    snapshots = [snapshot for pairs in members.values() for _, snapshot in pairs]
    for obj in build_objects(snapshots, settings.zstd_level, settings.max_object_bytes):
        group = [pair for event_id in obj.event_ids for pair in members[event_id]]
        try:
            await store_and_announce(broker, lake, obj)
        except ObjectConflictError as conflict:
            await dead_letter_conflict(broker, obj, conflict, group, settings)
            continue
        except Exception as exc:
            log.exception("bronze write failed", extra={"key": obj.key})
            for msg, snapshot in group:
                await settle_failure(
                    broker,
                    msg,
                    stage=Stage.LAKE_WRITER,
                    dataset=snapshot.dataset,
                    error=exc,
                    max_deliver=settings.max_deliver,
                    source_event_id=snapshot.event_id,
                )
            continue
        # Ack only now: the object holding these messages is durable and announced.
        for msg, snapshot in group:
            await msg.ack()
            MESSAGES_PROCESSED.labels(NAME, snapshot.dataset.value).inc()
    HANDLER_SECONDS.labels(NAME).observe(time.perf_counter() - started)


async def store_and_announce(broker: NatsBroker, lake: Lake, obj: BronzeObject) -> None:
    data = obj.data
    try:
        await lake.put(obj.key, data)
    except ObjectConflictError:
        # The key names the NDJSON's sha256: an object that decompresses to the same NDJSON is this
        # very content, compressed by another zstd level or version. Announce the stored bytes.
        existing = await lake.get(obj.key)
        if not same_content(existing, data):
            raise
        log.info("bronze object exists with the same content, other compression", extra={"key": obj.key})
        data = existing
    event = ObjectWritten(
        dataset=obj.dataset,
        exchange=obj.exchange,
        lake_url=lake.url,
        key=obj.key,
        sha256=sha256_hex(data),
        bytes=len(data),
        records=len(obj.event_ids),
        source_event_ids=obj.event_ids,
    )
    await broker.publish(
        event.to_json(),
        subject=lake_subject(obj.dataset, obj.exchange),
        headers=msg_id_headers(event.event_id),
        stream=Stream.LAKE.value,
    )
    OBJECTS_WRITTEN.labels(obj.dataset.value).inc()
    BYTES_WRITTEN.labels(obj.dataset.value).inc(len(data))
    log.info("bronze object written", extra={"key": obj.key, "bytes": len(data), "records": len(obj.event_ids)})


def same_content(stored: bytes, ours: bytes) -> bool:
    try:
        return decompress(stored) == decompress(ours)
    except zstandard.ZstdError:
        return False  # not even zstd: certainly not our object


async def dead_letter_conflict(
    broker: NatsBroker,
    obj: BronzeObject,
    conflict: ObjectConflictError,
    group: list[Member],
    settings: LakeWriterSettings,
) -> None:
    """Report the refused overwrite once, then dead-letter its messages: no retry can store them."""
    await publish_dead_letter(
        broker,
        DeadLetter(
            stage=Stage.LAKE_WRITER,
            dataset=obj.dataset,
            reason=f"bronze object conflict: {obj.key} exists with different bytes",
            error_type="ObjectConflictError",
            details={
                "key": obj.key,
                "lake_url": conflict.url,
                "existing_sha256": conflict.existing_sha256,
                "new_sha256": conflict.new_sha256,
                "source_event_ids": obj.event_ids,
            },
        ),
    )
    for msg, snapshot in group:
        await settle_failure(
            broker,
            msg,
            stage=Stage.LAKE_WRITER,
            dataset=snapshot.dataset,
            error=PoisonMessageError(f"its bronze object {obj.key} conflicts with a stored one"),
            max_deliver=settings.max_deliver,
            source_event_id=snapshot.event_id,
        )
