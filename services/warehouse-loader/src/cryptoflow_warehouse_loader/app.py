"""Warehouse-loader service: silver batches, gaps, run reports and quarantine into PostgreSQL.

Consumers (durable pull, manual ack):

* SILVER `cryptoflow.silver.>` — BatchReady → the batch's table (upsert.py) → Loaded on WAREHOUSE;
  pulled up to `batch_size` at a time and loaded together, one transaction per table (decision 0039);
* GAPS `cryptoflow.gaps.>` — KnownGap → known_gaps;
* RUNS `cryptoflow.runs.>` — RunReport → service_runs;
* DLQ `cryptoflow.dlq.transformer.>` — the transformer's quarantine DeadLetters → quarantine
  (these three one message at a time).

A message is acked only after its rows are committed. Input the database rejects (a constraint,
bad data) is dead-lettered with the database's message; while the database is unreachable,
messages are held and retried, never dead-lettered (warehouse.py).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import polars as pl
from cryptoflow_contracts import (
    DLQ_SUBJECT,
    BatchReady,
    DeadLetter,
    Event,
    KnownGap,
    Loaded,
    RunReport,
    Stage,
    plausible_ts,
)
from cryptoflow_contracts.silver import TABLE_METADATA_KEY
from cryptoflow_runtime import Consumer, Lake, PoisonMessageError, Service, in_progress, publish
from cryptoflow_runtime.consume import Outcome
from cryptoflow_runtime.lake import ObjectMissingError, sha256_hex
from cryptoflow_runtime.service import LakeHandle
from cryptoflow_runtime.silver_lake import read_replaced_batch
from faststream.nats import NatsBroker
from prometheus_client import Counter

from .config import WarehouseLoaderSettings
from .gaps import record_gap
from .maintenance import Maintenance
from .quarantine import load_quarantine
from .runs import OK, RunTracker, record_report
from .tables import TABLES, WarehouseTable
from .upsert import BatchShapeError, LoadResult, load_batches
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


def consumers(settings: WarehouseLoaderSettings) -> dict[str, Consumer[Any]]:
    """The loader's four durable consumers. Silver batches are pulled several at a time and
    loaded together per table; the events one at a time. One load at a time per replica, so
    batches touching the same keys never race for row locks."""
    stage = Stage.WAREHOUSE_LOADER
    ack_wait_s, max_deliver = settings.ack_wait_s, settings.max_deliver
    return {
        "silver": Consumer(
            BatchReady,
            stage,
            settings.durable,
            title="warehouse-loader/silver",
            description="BatchReady events; each silver batch is upserted into its table",
            ack_wait_s=ack_wait_s,
            max_deliver=max_deliver,
            batch_size=settings.batch_size,
            # A pull that got one batch waits this long for more (nats-py's fetch); short, so a
            # lone batch is not held back.
            fetch_timeout_s=settings.batch_timeout_s,
        ),
        "gaps": Consumer(
            KnownGap,
            stage,
            f"{settings.durable}-gaps",
            title="warehouse-loader/gaps",
            description="KnownGap events; each is kept in known_gaps",
            ack_wait_s=ack_wait_s,
            max_deliver=max_deliver,
        ),
        "runs": Consumer(
            RunReport,
            stage,
            f"{settings.durable}-runs",
            title="warehouse-loader/runs",
            description="RunReport events of every service; the latest per run is kept in service_runs",
            ack_wait_s=ack_wait_s,
            max_deliver=max_deliver,
        ),
        "quarantine": Consumer(
            DeadLetter,
            stage,
            f"{settings.durable}-quarantine",
            subject=dlq_subject_of(Stage.TRANSFORMER),
            title="warehouse-loader/quarantine",
            description="The transformer's DeadLetters; rows of their quarantine objects are kept in quarantine",
            ack_wait_s=ack_wait_s,
            max_deliver=max_deliver,
        ),
    }


def dlq_subject_of(stage: Stage) -> str:
    return DLQ_SUBJECT.format(stage=stage.value, dataset=">")


async def build(settings: WarehouseLoaderSettings) -> Service:
    service = Service(NAME, settings)
    lake = service.use_lake(settings)
    warehouse = Warehouse(settings)
    tracker = RunTracker(NAME)
    maintenance = Maintenance(settings, warehouse, service.broker, tracker, lake)

    async def start() -> None:
        tracker.count("migrations_applied", len(warehouse.applied_migrations))
        maintenance.start()

    async def stop() -> None:
        await maintenance.stop(OK)

    # The warehouse closes after the broker stopped (in-flight messages settled), not before.
    service.resource(warehouse.open, warehouse.close, close_after_broker=True)
    # Before the broker waits for in-flight messages: one held through an outage is let go.
    service.app.on_shutdown(warehouse.release_held)
    service.ready_when(warehouse.is_up)
    service.app.on_startup(start)
    service.app.on_shutdown(stop)
    loader = Loader(service.broker, lake, warehouse, tracker)
    declared = consumers(settings)

    @service.consume_batches(declared["silver"])
    async def on_batches(batches: list[BatchReady]) -> list[Outcome]:
        outcomes, changed = await loader.load(batches)
        if changed:
            maintenance.rows_changed.set()
        return outcomes

    @service.consume(declared["gaps"])
    async def on_gap(gap: KnownGap) -> None:
        await loader.store(gap, "gaps", record_gap)

    @service.consume(declared["runs"])
    async def on_run_report(report: RunReport) -> None:
        await loader.store(report, "runs", record_report)

    @service.consume(declared["quarantine"])
    async def on_dead_letter(letter: DeadLetter) -> None:
        async def store(conn: asyncpg.Connection, event: DeadLetter) -> int:
            return await load_quarantine(conn, lake.lake, event)

        await loader.store(letter, "quarantine", store)

    return service


async def read_batch(lake: Lake, batch: BatchReady) -> pl.DataFrame:
    """The batch's rows, if the object is a silver file of its table with the announced bytes.

    Only what the transformer produced is loaded: a key outside `silver/` (a quarantine file,
    a bronze object), other bytes, another table's file or times no market has are refused.
    """
    if not batch.key.startswith("silver/"):
        raise PoisonMessageError(f"{batch.key!r} is not a silver object; only silver/ is loaded")
    for ts in (batch.min_ts, batch.max_ts):
        if ts is not None and not plausible_ts(ts):
            raise PoisonMessageError(f"{batch.key}: record time {ts} ms is outside any plausible range")
    try:
        data = await lake.get(batch.key)
    except ObjectMissingError:
        # Compacted and deleted since (a replay of SILVER): its rows from the compacted file.
        replaced = await read_replaced_batch(lake, batch.key)
        if replaced is None:
            raise
        if replaced.sha256 != batch.sha256:
            raise PoisonMessageError(
                f"{batch.key}: sha256 differs from BatchReady; object corrupt or replaced"
            ) from None
        if replaced.table != batch.table:
            raise PoisonMessageError(
                f"{batch.key}: a file of table {replaced.table!r}, announced as {batch.table!r}"
            ) from None
        return replaced.rows
    if sha256_hex(data) != batch.sha256:
        raise PoisonMessageError(f"{batch.key}: sha256 differs from BatchReady; object corrupt or replaced")
    try:
        table = pl.read_parquet_metadata(io.BytesIO(data)).get(TABLE_METADATA_KEY)
        frame = pl.read_parquet(io.BytesIO(data))
    except pl.exceptions.PolarsError as exc:
        raise PoisonMessageError(f"{batch.key}: not a Parquet file ({exc})") from exc
    if table != batch.table:
        raise PoisonMessageError(f"{batch.key}: a file of table {table!r}, announced as {batch.table!r}")
    return frame


class Loader:
    """The loader's handlers: a silver batch into its table, an event into its table."""

    def __init__(self, broker: NatsBroker, lake: LakeHandle, warehouse: Warehouse, tracker: RunTracker | None) -> None:
        self.broker = broker
        self._lake = lake
        self.warehouse = warehouse
        self.tracker = tracker

    @property
    def lake(self) -> Lake:
        return self._lake.lake  # opened at start, after the handlers were registered

    async def load(self, batches: list[BatchReady]) -> tuple[list[Outcome], bool]:
        """Load the pulled batches, table by table, each table's in one transaction (decision
        0039), and announce each; an outcome per batch, and whether rows changed (marts due).

        One bad batch never fails its neighbours: when a group's load fails, its batches are
        loaded one at a time, and only the bad one ends in the DLQ."""
        outcomes: list[Outcome] = [None] * len(batches)
        reads = await asyncio.gather(*(self._read(batch) for batch in batches), return_exceptions=True)
        groups: dict[tuple[str, str], list[int]] = {}
        frames: dict[int, pl.DataFrame] = {}
        for index, (batch, read) in enumerate(zip(batches, reads, strict=True)):
            if isinstance(read, BaseException):
                outcomes[index] = self._failed(read)
            else:
                frames[index] = read
                groups.setdefault((batch.table, batch.dataset.value), []).append(index)
        changed = False
        for (table_name, _), indices in groups.items():
            table = TABLES[table_name]
            results: list[LoadResult | None]
            try:
                results = await self._load_group(table, [(batches[i], frames[i]) for i in indices])
            except Exception as exc:
                if len(indices) == 1:
                    outcomes[indices[0]] = self._failed(exc)
                    continue
                log.info("group load failed; loading its batches one by one", extra={"error": repr(exc)})
                results = []
                for i in indices:
                    try:
                        results.extend(await self._load_group(table, [(batches[i], frames[i])]))
                    except Exception as single:
                        outcomes[i] = self._failed(single)
                        results.append(None)
            announced = await asyncio.gather(
                *(self._announce(batches[i], table.name, result) for i, result in zip(indices, results, strict=True)),
                return_exceptions=True,
            )
            for i, result, announcement in zip(indices, results, announced, strict=True):
                if result is None:
                    continue
                if isinstance(announcement, BaseException):
                    outcomes[i] = self._failed(announcement)
                    continue
                changed |= result.inserted + result.updated > 0
        return outcomes, changed

    async def _read(self, batch: BatchReady) -> pl.DataFrame:
        if batch.table not in TABLES:
            raise PoisonMessageError(f"no warehouse table {batch.table!r} (known: {', '.join(TABLES)})")
        return await read_batch(self.lake, batch)

    def _failed(self, exc: BaseException) -> BaseException:
        if self.tracker is not None:
            poison = isinstance(exc, PoisonMessageError)
            self.tracker.count("batches_dead_lettered" if poison else "batches_failed")
            self.tracker.error(exc)
        return exc

    async def _load_group(
        self, table: WarehouseTable, group: list[tuple[BatchReady, pl.DataFrame]]
    ) -> list[LoadResult | None]:
        run_id = self.tracker.run_id if self.tracker else None

        async def load(conn: asyncpg.Connection) -> list[LoadResult]:
            try:
                return await load_batches(conn, table, group, run_id=run_id)
            except BATCH_ERRORS as exc:
                raise PoisonMessageError(f"database rejected batch: {type(exc).__name__}: {exc}") from exc
            except BatchShapeError as exc:
                raise PoisonMessageError(str(exc)) from exc

        return list(await self.warehouse.run(load, in_progress))

    async def _announce(self, batch: BatchReady, table: str, result: LoadResult | None) -> None:
        """Publish Loaded for a committed batch, count it and log it."""
        if result is None:
            return
        await publish(
            self.broker,
            Loaded(
                dataset=batch.dataset,
                table=table,
                batch_event_id=batch.event_id,
                rows_inserted=result.inserted,
                rows_updated=result.updated,
                rows_unchanged=result.unchanged,
                already_loaded=result.already_loaded,
            ),
        )
        outcome = "already_loaded" if result.already_loaded else "loaded"
        BATCHES.labels(batch.dataset.value, outcome).inc()
        for kind, count in (
            ("inserted", result.inserted),
            ("updated", result.updated),
            ("unchanged", result.unchanged),
        ):
            ROWS_UPSERTED.labels(table, kind).inc(count)
            if self.tracker is not None:
                self.tracker.count(f"rows_{kind}", count)
        if self.tracker is not None:
            self.tracker.count(f"batches_{outcome}")
        log.info(
            "batch loaded",
            extra={
                "event_id": batch.event_id,
                "table": table,
                "path": result.path,
                "inserted": result.inserted,
                "updated": result.updated,
                "unchanged": result.unchanged,
                "already_loaded": result.already_loaded,
            },
        )

    async def store(
        self, event: EventT, kind: str, store: Callable[[asyncpg.Connection, EventT], Awaitable[object]]
    ) -> None:
        """Store one event (idempotently); the database's rejection of it is permanent."""

        async def apply(conn: asyncpg.Connection) -> object:
            try:
                return await store(conn, event)
            except BATCH_ERRORS as exc:
                name = type(event).__name__
                raise PoisonMessageError(f"database rejected {name}: {type(exc).__name__}: {exc}") from exc

        try:
            await self.warehouse.run(apply, in_progress)
        except Exception as exc:
            if self.tracker is not None:
                self.tracker.error(exc)
            raise
        EVENTS.labels(kind).inc()
        if self.tracker is not None:
            self.tracker.count(f"{kind}_events")
