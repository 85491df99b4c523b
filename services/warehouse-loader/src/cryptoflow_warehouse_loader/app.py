"""Warehouse-loader service: silver batches, gaps, run reports and quarantine into PostgreSQL.

Consumers (durable pull, manual ack, one message at a time per replica):

* SILVER `cryptoflow.silver.>` — BatchReady → the batch's table (upsert.py) → Loaded on WAREHOUSE;
* GAPS `cryptoflow.gaps.>` — KnownGap → known_gaps;
* RUNS `cryptoflow.runs.>` — RunReport → service_runs;
* DLQ `cryptoflow.dlq.transformer.>` — the transformer's quarantine DeadLetters → quarantine.

A message is acked only after its rows are committed. Input the database rejects (a constraint,
bad data) is dead-lettered with the database's message; while the database is unreachable,
messages are held and retried, never dead-lettered (warehouse.py).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
import polars as pl
from cryptoflow_contracts import (
    STREAM_SUBJECTS,
    BatchReady,
    Dataset,
    DeadLetter,
    Event,
    KnownGap,
    Loaded,
    RunReport,
    Stage,
    Stream,
    warehouse_subject,
)
from cryptoflow_runtime import Lake, PoisonMessageError, Service, msg_id_headers, settle_failure
from cryptoflow_runtime.lake import sha256_hex
from cryptoflow_runtime.metrics import HANDLER_SECONDS, MESSAGES_PROCESSED
from faststream import Context
from faststream.nats.message import NatsMessage
from nats.aio.msg import Msg
from prometheus_client import Counter
from pydantic import ValidationError

from .config import WarehouseLoaderSettings
from .gaps import record_gap
from .maintenance import Maintenance
from .quarantine import load_quarantine
from .runs import OK, RunTracker, record_report
from .tables import TABLES
from .upsert import BatchShapeError, LoadResult, load_batch
from .warehouse import Warehouse

log = logging.getLogger(__name__)

NAME = "warehouse-loader"
ROWS_UPSERTED = Counter(
    "cryptoflow_warehouse_rows_total", "Rows written to the warehouse, by outcome", ["table", "outcome"]
)
BATCHES = Counter(
    "cryptoflow_warehouse_batches_total",
    "Silver batches handled, by outcome (loaded, or already_loaded per the ledger)",
    ["dataset", "outcome"],
)
EVENTS = Counter("cryptoflow_warehouse_events_total", "Gap, run and quarantine events stored", ["kind"])

# Errors that say the batch itself is wrong: retrying cannot help, so it is dead-lettered
# with the database's message. Anything else (connection lost, server restarting) is retried.
BATCH_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
EventT = TypeVar("EventT", bound=Event)


async def build(settings: WarehouseLoaderSettings) -> Service:
    service = Service(NAME, settings)
    service.watch_consumer(Stream.SILVER.value, settings.durable)
    lake = service.use_lake(settings)
    warehouse = Warehouse(settings)
    tracker = RunTracker(NAME)
    maintenance = Maintenance(settings, warehouse, service.broker, tracker)

    async def start() -> None:
        await warehouse.open()
        tracker.count("migrations_applied", len(warehouse.applied_migrations))
        maintenance.start()

    async def stop() -> None:
        await maintenance.stop(OK)

    service.app.on_startup(start)
    service.app.on_shutdown(stop)
    # After the broker stopped (in-flight messages settled), not before.
    service.app.after_shutdown(warehouse.close)

    # Every consumer takes one message at a time per replica: batches touching the same keys
    # never race for row locks, and a held message (database down) holds nothing else.
    @service.durable_subscriber(
        STREAM_SUBJECTS[Stream.SILVER],
        Stream.SILVER.value,
        settings.durable,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        title="warehouse-loader/silver",
        description="BatchReady events; each silver batch is upserted into its table",
    )
    async def on_batch(body: Any, message: Annotated[NatsMessage, Context("message")]) -> None:
        changed = await handle(service, lake.lake, warehouse, settings, message.raw_message, tracker)
        if changed:
            maintenance.rows_changed.set()

    @service.durable_subscriber(
        STREAM_SUBJECTS[Stream.GAPS],
        Stream.GAPS.value,
        f"{settings.durable}-gaps",
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        title="warehouse-loader/gaps",
        description="KnownGap events; each is kept in known_gaps",
    )
    async def on_gap(body: Any, message: Annotated[NatsMessage, Context("message")]) -> None:
        await handle_event(service, warehouse, settings, tracker, message.raw_message, KnownGap, "gaps", record_gap)

    @service.durable_subscriber(
        STREAM_SUBJECTS[Stream.RUNS],
        Stream.RUNS.value,
        f"{settings.durable}-runs",
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        title="warehouse-loader/runs",
        description="RunReport events of every service; the latest per run is kept in service_runs",
    )
    async def on_run_report(body: Any, message: Annotated[NatsMessage, Context("message")]) -> None:
        await handle_event(service, warehouse, settings, tracker, message.raw_message, RunReport, "runs", record_report)

    @service.durable_subscriber(
        f"cryptoflow.dlq.{Stage.TRANSFORMER.value}.>",
        Stream.DLQ.value,
        f"{settings.durable}-quarantine",
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        title="warehouse-loader/quarantine",
        description="The transformer's DeadLetters; rows of their quarantine objects are kept in quarantine",
    )
    async def on_dead_letter(body: Any, message: Annotated[NatsMessage, Context("message")]) -> None:
        async def store(conn: asyncpg.Connection, letter: DeadLetter) -> int:
            return await load_quarantine(conn, lake.lake, letter)

        await handle_event(service, warehouse, settings, tracker, message.raw_message, DeadLetter, "quarantine", store)

    return service


async def read_batch(lake: Lake, batch: BatchReady) -> pl.DataFrame:
    data = await lake.get(batch.key)
    if sha256_hex(data) != batch.sha256:
        raise PoisonMessageError(f"{batch.key}: sha256 differs from BatchReady; object corrupt or replaced")
    return pl.read_parquet(io.BytesIO(data))


async def handle(
    service: Service,
    lake: Lake,
    warehouse: Warehouse,
    settings: WarehouseLoaderSettings,
    msg: Msg,
    tracker: RunTracker | None = None,
) -> bool:
    """Load one BatchReady; True when rows changed (the marts are then due a refresh)."""
    started = time.perf_counter()
    batch: BatchReady | None = None
    try:
        try:
            batch = BatchReady.model_validate_json(msg.data)
        except ValidationError as exc:
            raise PoisonMessageError(f"not a BatchReady: {exc.errors()[0]['msg']}") from exc
        table = TABLES.get(batch.table)
        if table is None:
            raise PoisonMessageError(f"no warehouse table {batch.table!r} (known: {', '.join(TABLES)})")
        frame = await read_batch(lake, batch)
        loading = batch

        async def load(conn: asyncpg.Connection) -> LoadResult:
            try:
                return await load_batch(conn, table, frame, loading, run_id=tracker.run_id if tracker else None)
            except BATCH_ERRORS as exc:
                raise PoisonMessageError(f"database rejected batch: {type(exc).__name__}: {exc}") from exc
            except BatchShapeError as exc:
                raise PoisonMessageError(str(exc)) from exc

        result = await warehouse.run(load, msg.in_progress)
        loaded = Loaded(
            dataset=batch.dataset,
            table=table.name,
            batch_event_id=batch.event_id,
            rows_inserted=result.inserted,
            rows_updated=result.updated,
            rows_unchanged=result.unchanged,
            already_loaded=result.already_loaded,
        )
        await service.broker.publish(
            loaded.to_json(),
            subject=warehouse_subject(batch.dataset),
            headers=msg_id_headers(loaded.event_id),
            stream=Stream.WAREHOUSE.value,
        )
    except Exception as exc:
        if not isinstance(exc, PoisonMessageError):
            log.warning("load failed, will retry", extra={"error": repr(exc)})
        if tracker is not None:
            tracker.count("batches_dead_lettered" if isinstance(exc, PoisonMessageError) else "batches_failed")
            tracker.error(exc)
        await settle_failure(
            service.broker,
            msg,
            stage=Stage.WAREHOUSE_LOADER,
            dataset=batch.dataset if batch else None,
            error=exc,
            max_deliver=settings.max_deliver,
            source_event_id=batch.event_id if batch else None,
        )
        return False
    await msg.ack()
    outcome = "already_loaded" if result.already_loaded else "loaded"
    MESSAGES_PROCESSED.labels(NAME, batch.dataset.value).inc()
    BATCHES.labels(batch.dataset.value, outcome).inc()
    for kind, count in (("inserted", result.inserted), ("updated", result.updated), ("unchanged", result.unchanged)):
        ROWS_UPSERTED.labels(table.name, kind).inc(count)
        if tracker is not None:
            tracker.count(f"rows_{kind}", count)
    if tracker is not None:
        tracker.count(f"batches_{outcome}")
    HANDLER_SECONDS.labels(NAME).observe(time.perf_counter() - started)
    log.info(
        "batch loaded",
        extra={
            "event_id": batch.event_id,
            "table": table.name,
            "path": result.path,
            "inserted": result.inserted,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "already_loaded": result.already_loaded,
        },
    )
    return result.inserted + result.updated > 0


async def handle_event(
    service: Service,
    warehouse: Warehouse,
    settings: WarehouseLoaderSettings,
    tracker: RunTracker | None,
    msg: Msg,
    model: type[EventT],
    kind: str,
    store: Callable[[asyncpg.Connection, EventT], Awaitable[object]],
) -> None:
    """Decode one event, store it (idempotently), ack; the same failure policy as batches."""
    event: EventT | None = None
    try:
        try:
            event = model.model_validate_json(msg.data)
        except ValidationError as exc:
            raise PoisonMessageError(f"not a {model.__name__}: {exc.errors()[0]['msg']}") from exc
        decoded = event

        async def apply(conn: asyncpg.Connection) -> object:
            try:
                return await store(conn, decoded)
            except BATCH_ERRORS as exc:
                raise PoisonMessageError(f"database rejected {model.__name__}: {type(exc).__name__}: {exc}") from exc

        await warehouse.run(apply, msg.in_progress)
    except Exception as exc:
        if not isinstance(exc, PoisonMessageError):
            log.warning("storing event failed, will retry", extra={"kind": kind, "error": repr(exc)})
        if tracker is not None:
            tracker.error(exc)
        dataset = getattr(event, "dataset", None)
        await settle_failure(
            service.broker,
            msg,
            stage=Stage.WAREHOUSE_LOADER,
            dataset=dataset if isinstance(dataset, Dataset) else None,
            error=exc,
            max_deliver=settings.max_deliver,
            source_event_id=event.event_id if event else None,
        )
        return
    await msg.ack()
    EVENTS.labels(kind).inc()
    if tracker is not None:
        tracker.count(f"{kind}_events")
