"""Two loader replicas (OS processes) on one durable consumer, starting together on an empty
database: 100k candles loaded exactly once, the schema migrated exactly once."""

from __future__ import annotations

from pathlib import Path

from cryptoflow_runtime.lake import FileLake
from cryptoflow_warehouse_loader.migrations import head_revision
from e2e.harness import Pipeline

from .support import LoaderStack, create_streams, put_batch, sample

BATCHES = 100
ROWS_PER_BATCH = 1000
SYMBOLS = 4


async def test_two_replicas_load_100k_candles_once(
    fresh_nats_url: str, fresh_database_url: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "pipeline"
    workdir.mkdir()
    pipe = Pipeline(
        nats_url=fresh_nats_url,
        database_url=fresh_database_url,
        lake_url=f"file://{tmp_path / 'lake'}",
        workdir=workdir,
        extra_env={"WAREHOUSE_LOADER_ALERT_RULES": "[]"},
    )
    stack = LoaderStack(pipe=pipe, lake=FileLake(pipe.lake_url))
    try:
        await create_streams(fresh_nats_url)
        batches = []
        for n in range(BATCHES):
            symbol = f"R{n % SYMBOLS}/USDT"
            start = (n // SYMBOLS) * ROWS_PER_BATCH
            batches.append(
                await put_batch(
                    stack.lake, "ohlcv", sample("ohlcv", ROWS_PER_BATCH, symbol=symbol, start=start), f"r-{n}"
                )
            )
        for batch in batches:
            await stack.publish_batch(batch)
        # Some batches arrive twice, as after a producer's retry past the duplicate window.
        for batch in batches[::10]:
            await stack.publish_batch(batch, msg_id=f"again-{batch.event_id}")

        replicas = [pipe.start("warehouse-loader"), pipe.start("warehouse-loader")]

        async def all_loaded() -> bool:
            return await pipe.fetchval("SELECT count(*) FROM batches", default=0) == BATCHES

        await pipe.wait_for("every batch", all_loaded, timeout=60)
        await stack.settled()

        total = BATCHES * ROWS_PER_BATCH
        assert await pipe.fetchval("SELECT count(*) FROM ohlcv") == total
        assert await pipe.fetchval("SELECT count(DISTINCT (exchange, symbol, timeframe, ts)) FROM ohlcv") == total
        assert await pipe.fetchval("SELECT sum(rows_inserted) FROM batches") == total
        assert await pipe.fetchval("SELECT count(*) FROM ohlcv WHERE version <> 1") == 0
        # Both replicas did part of the work.
        assert await pipe.fetchval("SELECT count(DISTINCT run_id) FROM batches") == 2
        # One migration: one replica applied every revision, the other none.
        applied = ['"msg":"migrations applied"' in proc.log() for proc in replicas]
        assert sorted(applied) == [False, True]
        assert [r["version_num"] for r in await pipe.fetch("SELECT version_num FROM alembic_version")] == [
            head_revision()
        ]
        assert [d for d in await stack.dead_letters() if d["stage"] == "warehouse-loader"] == []
    finally:
        pipe.stop_all()
