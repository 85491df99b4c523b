"""The loader's maintenance compacts silver on its own schedule: not before one interval has
passed since start or the last run, then every closed partition, and never when switched off."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from cryptoflow_contracts import SILVER_SCHEMA_VERSION
from cryptoflow_contracts.silver import OHLCV, SCHEMA_VERSION_METADATA_KEY, TABLE_METADATA_KEY
from cryptoflow_runtime.service import LakeHandle
from cryptoflow_runtime.silver_lake import live_silver_files
from cryptoflow_runtime.silver_lake.frames import table_schema
from cryptoflow_warehouse_loader.config import WarehouseLoaderSettings
from cryptoflow_warehouse_loader.maintenance import Maintenance
from cryptoflow_warehouse_loader.runs import RunTracker
from cryptoflow_warehouse_loader.warehouse import Warehouse
from faststream.nats import NatsBroker

PARTITION = "silver/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-01-01"


def batch_file(ts: datetime) -> bytes:
    row = {name: [None] for name in OHLCV.column_names} | {
        "exchange": ["binance"],
        "symbol": ["BTC/USDT"],
        "timeframe": ["1m"],
        "ts": [ts],
        **{v: [1.0] for v in ("open", "high", "low", "close", "volume")},
        "resampled": [False],
        "final": [True],
        "source_event_id": ["e"],
    }
    buffer = io.BytesIO()
    pl.DataFrame(row, schema=table_schema(OHLCV)).write_parquet(
        buffer, metadata={SCHEMA_VERSION_METADATA_KEY: str(SILVER_SCHEMA_VERSION), TABLE_METADATA_KEY: "ohlcv"}
    )
    return buffer.getvalue()


async def maintenance_over(lake_dir: Path, **settings: object) -> tuple[Maintenance, LakeHandle, RunTracker]:
    config = WarehouseLoaderSettings(
        database_url="postgresql://unused/unused", lake_url=f"file://{lake_dir}", **settings
    )
    handle = LakeHandle(config)
    await handle.open()
    for minute in range(3):
        await handle.lake.put(
            f"{PARTITION}/{minute}-{'a' * 24}.parquet", batch_file(datetime(2024, 1, 1, 0, minute, tzinfo=UTC))
        )
    tracker = RunTracker("warehouse-loader")
    return Maintenance(config, Warehouse(config), NatsBroker(), tracker, handle), handle, tracker


async def test_compaction_runs_once_an_interval_has_passed(tmp_path: Path) -> None:
    maintenance, handle, tracker = await maintenance_over(tmp_path, compaction_interval_s=600)
    started = time.monotonic()
    await maintenance.compaction(now=started + 599)
    assert len(await live_silver_files(handle.lake)) == 3
    await maintenance.compaction(now=started + 601)
    live = await live_silver_files(handle.lake)
    assert len(live) == 1 and live[0].compacted
    assert tracker.counts["silver_partitions_compacted"] == 1


async def test_compaction_switched_off(tmp_path: Path) -> None:
    maintenance, handle, tracker = await maintenance_over(tmp_path, compaction=False, compaction_interval_s=1)
    await maintenance.compaction(now=time.monotonic() + 10)
    assert len(await live_silver_files(handle.lake)) == 3
    assert "silver_partitions_compacted" not in tracker.counts
