"""Warehouse-loader service: BatchReady → upsert into PostgreSQL → Loaded on WAREHOUSE."""

from __future__ import annotations

import io
import logging
import time
from typing import Annotated, Any

import asyncpg
import polars as pl
from cryptoflow_contracts import (
    STREAM_SUBJECTS,
    BatchReady,
    Loaded,
    Stage,
    Stream,
    warehouse_subject,
)
from cryptoflow_runtime import Lake, PoisonMessageError, Service, msg_id_headers, settle_failure
from cryptoflow_runtime.lake import sha256_hex
from cryptoflow_runtime.metrics import HANDLER_SECONDS, MESSAGES_PROCESSED
from cryptoflow_runtime.postgres import create_pool, redact
from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, PullSub
from faststream.nats.message import NatsMessage
from nats.aio.msg import Msg
from nats.js.api import AckPolicy as JsAckPolicy
from prometheus_client import Counter
from pydantic import ValidationError

from .config import WarehouseLoaderSettings
from .migrations import migrate
from .upsert import load_ohlcv

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

# Errors that say the batch itself is wrong: retrying cannot help, so it is dead-lettered
# with the database's message. Anything else (connection lost, server restarting) is retried.
BATCH_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class Warehouse:
    def __init__(self, settings: WarehouseLoaderSettings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "pool not open"
        return self._pool

    async def open(self) -> None:
        log.info("connecting to warehouse", extra={"database": redact(self.settings.database_url)})
        self._pool = await create_pool(self.settings.database_url, max_size=self.settings.pool_size)
        async with self._pool.acquire() as conn:
            await migrate(conn)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


async def build(settings: WarehouseLoaderSettings) -> Service:
    service = Service(NAME, settings)
    service.watch_consumer(Stream.SILVER.value, settings.durable)
    lake = service.use_lake(settings)
    warehouse = Warehouse(settings)
    service.app.on_startup(warehouse.open)
    service.app.on_shutdown(warehouse.close)

    @service.broker.subscriber(
        STREAM_SUBJECTS[Stream.SILVER],
        stream=JStream(name=Stream.SILVER.value, declare=False),
        durable=settings.durable,
        # One batch at a time per replica: batches touching the same keys never race for row locks.
        pull_sub=PullSub(batch_size=1, timeout=1.0),
        ack_policy=AckPolicy.MANUAL,
        config=ConsumerConfig(
            durable_name=settings.durable,
            ack_policy=JsAckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait_s,
            max_deliver=settings.max_deliver + 1,
        ),
        title="warehouse-loader/silver",
        description="BatchReady events; each silver batch is upserted into its table",
    )
    async def on_batch(body: Any, message: Annotated[NatsMessage, Context("message")]) -> None:
        await handle(service, lake.lake, warehouse, settings, message.raw_message)

    return service


async def handle(
    service: Service, lake: Lake, warehouse: Warehouse, settings: WarehouseLoaderSettings, msg: Msg
) -> None:
    started = time.perf_counter()
    batch: BatchReady | None = None
    try:
        try:
            batch = BatchReady.model_validate_json(msg.data)
        except ValidationError as exc:
            raise PoisonMessageError(f"not a BatchReady: {exc.errors()[0]['msg']}") from exc
        if batch.table != "ohlcv":
            raise PoisonMessageError(f"no warehouse table {batch.table!r} yet")
        data = await lake.get(batch.key)
        if sha256_hex(data) != batch.sha256:
            raise PoisonMessageError(f"{batch.key}: sha256 differs from BatchReady; object corrupt or replaced")
        frame = pl.read_parquet(io.BytesIO(data))
        async with warehouse.pool.acquire() as conn:
            try:
                result = await load_ohlcv(conn, frame, batch)
            except BATCH_ERRORS as exc:
                raise PoisonMessageError(f"database rejected batch: {type(exc).__name__}: {exc}") from exc
        loaded = Loaded(
            dataset=batch.dataset,
            table="ohlcv",
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
        await settle_failure(
            service.broker,
            msg,
            stage=Stage.WAREHOUSE_LOADER,
            dataset=batch.dataset if batch else None,
            error=exc,
            max_deliver=settings.max_deliver,
            source_event_id=batch.event_id if batch else None,
        )
        return
    await msg.ack()
    MESSAGES_PROCESSED.labels(NAME, batch.dataset.value).inc()
    BATCHES.labels(batch.dataset.value, "already_loaded" if result.already_loaded else "loaded").inc()
    for outcome, count in (("inserted", result.inserted), ("updated", result.updated), ("unchanged", result.unchanged)):
        ROWS_UPSERTED.labels("ohlcv", outcome).inc(count)
    HANDLER_SECONDS.labels(NAME).observe(time.perf_counter() - started)
    log.info(
        "batch loaded",
        extra={
            "event_id": batch.event_id,
            "inserted": result.inserted,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "already_loaded": result.already_loaded,
        },
    )
