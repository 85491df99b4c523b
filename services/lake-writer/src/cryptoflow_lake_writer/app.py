"""Lake-writer service: RAW batches → immutable bronze objects → ObjectWritten on LAKE."""

from __future__ import annotations

import logging

import zstandard
from cryptoflow_contracts import RawSnapshot, Stage
from cryptoflow_runtime import Consumer, Lake, ObjectConflictError, Outcome, PoisonMessageError, Service, publish
from faststream.nats import NatsBroker
from prometheus_client import Counter

from .config import LakeWriterSettings
from .objects import BronzeObject, build_objects, decompress, storable

log = logging.getLogger(__name__)

NAME = "lake-writer"
OBJECTS_WRITTEN = Counter("cryptoflow_lake_objects_written_total", "Bronze objects written", ["dataset"])
BYTES_WRITTEN = Counter("cryptoflow_lake_bytes_written_total", "Bronze bytes written", ["dataset"])


def consumer(settings: LakeWriterSettings) -> Consumer[RawSnapshot]:
    return Consumer(
        RawSnapshot,
        Stage.LAKE_WRITER,
        settings.durable,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        batch_size=settings.batch_size,
        fetch_timeout_s=settings.batch_timeout_s,
        max_ack_pending=settings.batch_size * 4,
        title="lake-writer/raw",
        description="RawSnapshot batches, stored as bronze objects",
    )


async def build(settings: LakeWriterSettings) -> Service:
    service = Service(NAME, settings)
    lake = service.use_lake(settings)

    @service.consume_batches(consumer(settings))
    async def on_raw(snapshots: list[RawSnapshot]) -> list[Outcome]:
        return await write_batch(service.broker, lake.lake, settings, snapshots)

    return service


async def write_batch(
    broker: NatsBroker, lake: Lake, settings: LakeWriterSettings, snapshots: list[RawSnapshot]
) -> list[Outcome]:
    """Store a fetched batch as bronze objects; each snapshot's outcome is its object's.

    A snapshot is done once its object is durable and announced; an object that failed to
    store (or conflicts with a stored one) fails exactly its own snapshots.
    """
    outcomes: dict[str, Outcome] = {}
    fit: list[RawSnapshot] = []
    for snapshot in snapshots:
        # One snapshot that cannot be stored never holds up its neighbours: it alone is refused.
        try:
            storable(snapshot)
        except (ValueError, OverflowError, OSError) as exc:
            outcomes[snapshot.event_id] = PoisonMessageError(f"snapshot cannot be stored in the lake: {exc}")
        else:
            fit.append(snapshot)
    for obj in build_objects(fit, settings.zstd_level, settings.max_object_bytes):
        try:
            await store_and_announce(broker, lake, obj)
        except Exception as exc:
            if not isinstance(exc, ObjectConflictError):
                log.exception("bronze write failed", extra={"key": obj.key})
            for event_id in obj.event_ids:
                outcomes[event_id] = exc
            continue
        for event_id in obj.event_ids:
            outcomes[event_id] = None
    return [outcomes[snapshot.event_id] for snapshot in snapshots]


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
    await publish(broker, obj.announcement(lake.url, data))
    OBJECTS_WRITTEN.labels(obj.dataset.value).inc()
    BYTES_WRITTEN.labels(obj.dataset.value).inc(len(data))
    log.info("bronze object written", extra={"key": obj.key, "bytes": len(data), "records": len(obj.event_ids)})


def same_content(stored: bytes, ours: bytes) -> bool:
    try:
        return decompress(stored) == decompress(ours)
    except zstandard.ZstdError:
        return False  # not even zstd: certainly not our object
