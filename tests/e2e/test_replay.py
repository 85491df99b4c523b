"""Replay from SILVER into a wiped warehouse, and rebuild from the lake alone: identical tables."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .harness import Pipeline
from .test_end_to_end import N, start_random_walk

# Everything a row says, lineage included; only load bookkeeping (time, version) may differ.
CHECKSUM = """
SELECT md5(string_agg(concat_ws('|', exchange, symbol, timeframe, ts, open, high, low, close, volume,
                                resampled, final, source_event_id, batch_id), E'\\n'
                      ORDER BY exchange, symbol, timeframe, ts))
FROM ohlcv
"""


def cli(pipe: Pipeline, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cryptoflow_cli.main", *args],
        env={k: v for k, v in pipe.env("cli").items() if k != "CRYPTOFLOW_HOME"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


async def wipe_warehouse(pipe: Pipeline) -> None:
    conn_rows = await pipe.fetch("SELECT 1")
    assert conn_rows
    import asyncpg

    conn = await asyncpg.connect(pipe.database_url)
    try:
        await conn.execute("TRUNCATE ohlcv_data, batches")
    finally:
        await conn.close()
    assert await pipe.ohlcv_count() == 0


async def test_replay_from_silver_and_rebuild_from_lake_restore_identical_tables(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    start_random_walk(pipe)
    procs = pipe.start_all()

    async def complete() -> bool:
        return await pipe.ohlcv_count() == 2 * N

    await pipe.wait_for("the original run", complete)
    original = await pipe.fetchval(CHECKSUM)
    batches = await pipe.fetchval("SELECT count(*) FROM batches")
    for name in ("extractor", "lake-writer", "transformer", "warehouse-loader"):
        procs[name].terminate()

    await wipe_warehouse(pipe)
    out = cli(pipe, "replay", "--stage", "warehouse-loader", "--from", "2000-01-01T00:00:00Z")
    assert "replayed" in out
    assert await pipe.fetchval(CHECKSUM) == original
    assert await pipe.fetchval("SELECT count(*) FROM batches") == batches

    # Only bronze survives: silver, quarantine and the warehouse are gone.
    lake_root = Path(pipe.lake_url.removeprefix("file://"))
    for layer in ("silver", "quarantine"):
        shutil.rmtree(lake_root / layer, ignore_errors=True)
    await wipe_warehouse(pipe)
    out = cli(pipe, "rebuild", "--from-lake")
    assert "rebuilt" in out
    assert await pipe.fetchval(CHECKSUM) == original
    assert any((lake_root / "silver").rglob("*.parquet"))


async def test_replay_with_a_filter_touches_only_that_series(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    start_random_walk(pipe)
    procs = pipe.start_all()

    async def complete() -> bool:
        return await pipe.ohlcv_count() == 2 * N

    await pipe.wait_for("the original run", complete)
    procs["warehouse-loader"].terminate()
    await wipe_warehouse(pipe)
    cli(pipe, "replay", "--stage", "warehouse-loader", "--from", "1", "--filter", "binance/BTC-USDT/ohlcv")
    symbols = await pipe.fetch("SELECT DISTINCT symbol FROM ohlcv")
    assert [r["symbol"] for r in symbols] == ["BTC/USDT"]
    assert await pipe.ohlcv_count() == N
