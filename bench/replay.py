"""Replay benchmark: `cryptoflow replay --stage warehouse-loader` from SILVER into an empty warehouse,
vs reading the same SILVER messages with a bare nats-py ordered consumer, same run.

Setup (not timed): REPLAY_CANDLES (1,000,000) 1m candles over REPLAY_SERIES (20) series, made
the way the pipeline makes them but without running the services, so that a million candles
cost seconds rather than minutes:
  * RawSnapshot pages of 1000 candles as the extractor's backfill publishes them (interleaved
    across series), taken as the lake-writer's batches (LAKE_WRITER_BATCH_SIZE at a time);
  * each batch → bronze objects by the lake-writer's own `objects.build_objects` (same
    partitions, keys and bytes), stored in a file:// lake;
  * each object → silver Parquet by the transformer's own `batches.transform_object` (same
    validation, schema, keys, one silver batch per bronze object), and its BatchReady event
    published to SILVER with Nats-Msg-Id = event_id, as the transformer publishes it.
Only the 1m ohlcv table is in SILVER (derived series off): the benchmark is about candles.

Timed, in this order, on one nats-server and one PostgreSQL (durable settings as bench/loader.py):
  1. NATS read: every SILVER message through `js.subscribe(..., ordered_consumer=True)`: the
     denominator. For reference also a pull consumer fetching 100 at a time and acking each
     message (replay's own loop without the handler), and the same plus reading each batch's
     Parquet object from the lake (sha256 check and decode, as the loader's `read_batch`).
  2. replay: `python -m cryptoflow_cli.main replay --stage warehouse-loader --from 1` as a
     subprocess (what a user runs; NATS_URL/DATABASE_URL/LAKE_URL in its environment), into a
     migrated, empty database; wall time of the whole command. Its fixed cost (start-up,
     migration check, the final 1 s fetch that finds the stream empty, shutdown) is measured by
     the same command over an empty range, and reported separately.
  3. loader alone, for reference: `upsert.load_batch` over the same batches, frames in memory,
     one connection, into another empty database (as bench/loader.py times the loader).
REPLAY_PROFILE=1 then runs the replay once more under cProfile (into another empty database) and
prints its top functions.

    uv run python bench/replay.py          # or: make bench BENCH=replay

Last line: `replay_candles_per_s=… replay_vs_nats_read=…`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import nats
import polars as pl
from cryptoflow_cli.servers import start_nats, start_postgres
from cryptoflow_contracts import BatchReady, Stream
from cryptoflow_lake_writer.config import LakeWriterSettings
from cryptoflow_lake_writer.objects import build_objects
from cryptoflow_runtime import Lake, ensure_streams, msg_id_headers, open_lake
from cryptoflow_transformer.batches import transform_object
from cryptoflow_warehouse_loader.app import read_batch
from cryptoflow_warehouse_loader.migrations import migrate
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

# Run as a script (`python bench/<name>.py`, as `python -m bench` runs it): the repo root, for bench.support.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.support import (
    PG_SETTINGS,
    CandleSource,
    create_database,
    env_int,
    fetch,
    log,
    profile_summary,
    reset_statements,
    statement_profile,
)

SILVER_ALL = "cryptoflow.silver.>"


async def build_silver(js: JetStreamContext, lake: Lake, candles: int, series: int) -> list[BatchReady]:
    """Bronze objects as the lake-writer builds them, silver as the transformer writes it, BatchReady on SILVER."""
    pages = CandleSource(series).backfill(candles, 1000)
    defaults = LakeWriterSettings()
    batches: list[BatchReady] = []
    for offset in range(0, len(pages), defaults.batch_size):
        for obj in build_objects(pages[offset : offset + defaults.batch_size], defaults.zstd_level):
            await lake.put(obj.key, obj.data)
            written = obj.announcement(lake.url)
            result = await transform_object(lake, written)
            assert result.batch is not None and result.quarantine is None
            batches.append(result.batch)
    for batch in batches:
        await js.publish(batch.subject(), batch.to_json(), headers=msg_id_headers(batch.event_id))
    return batches


async def ordered_read(js: JetStreamContext, expected: int) -> float:
    """Seconds to receive every SILVER message with an ordered push consumer."""
    started = time.perf_counter()
    sub = await js.subscribe(SILVER_ALL, stream=Stream.SILVER.value, ordered_consumer=True)
    try:
        for _ in range(expected):
            await sub.next_msg(timeout=10)
    finally:
        await sub.unsubscribe()
    return time.perf_counter() - started


async def pull_read(js: JetStreamContext, expected: int, lake: Lake | None = None) -> float:
    """Seconds to fetch (100 at a time) and ack every SILVER message, as replay's loop does;
    with `lake`, also reading each batch's Parquet object as the loader does."""
    started = time.perf_counter()
    durable = f"bench-pull-{'lake' if lake else 'bare'}"
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        max_ack_pending=1000,
    )
    sub = await js.pull_subscribe(SILVER_ALL, durable=durable, stream=Stream.SILVER.value, config=config)
    seen = 0
    try:
        while seen < expected:
            try:
                msgs = await sub.fetch(100, timeout=1.0)
            except NatsTimeout:
                continue
            for msg in msgs:
                if lake is not None:
                    await read_batch(lake, BatchReady.model_validate_json(msg.data))
                await msg.ack()
            seen += len(msgs)
    finally:
        await sub.unsubscribe()
        await js.delete_consumer(Stream.SILVER.value, durable)
    return time.perf_counter() - started


def run_replay(env: dict[str, str], home: Path, start: str, profile: Path | None = None) -> tuple[float, str]:
    """`cryptoflow replay --stage warehouse-loader --from <start>` as a subprocess: (wall seconds, output)."""
    cli = ["-m", "cryptoflow_cli.main", "--home", str(home), "replay", "--stage", "warehouse-loader", "--from", start]
    argv = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), *cli]
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"replay failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds, result.stdout + result.stderr


async def loader_alone(server_url: str, lake_root: Path, batches: list[BatchReady]) -> tuple[int, float]:
    url = await create_database(server_url, "loader_alone")
    await asyncio.to_thread(migrate, url)
    frames = [pl.read_parquet(lake_root / b.key) for b in batches]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CHECKPOINT")
        started = time.perf_counter()
        for frame, batch in zip(frames, batches, strict=True):
            await load_batch(conn, TABLES[batch.table], frame, batch)
        return sum(f.height for f in frames), time.perf_counter() - started
    finally:
        await conn.close()


async def main() -> None:
    candles = env_int("REPLAY_CANDLES", 1_000_000)
    series = env_int("REPLAY_SERIES", 20)
    profile = os.environ.get("REPLAY_PROFILE") == "1"
    log(f"replay benchmark: {candles:,} 1m candles over {series} series, SILVER → empty warehouse")
    home = Path(tempfile.mkdtemp(prefix="cryptoflow-replay-"))
    nats_server = await asyncio.to_thread(start_nats, home / "nats")
    postgres = await asyncio.to_thread(start_postgres, home / "pg", settings=PG_SETTINGS)
    lake_url = f"file://{home / 'lake'}"
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        lake = await open_lake(lake_url)
        started = time.perf_counter()
        batches = await build_silver(js, lake, candles, series)
        rows = sum(b.rows for b in batches)
        assert rows == candles, (rows, candles)
        info = await js.stream_info(Stream.SILVER.value)
        count = int(info.state.messages)
        log(
            f"setup: {count} BatchReady on SILVER ({rows / count:,.0f} candles each; {info.state.bytes / 2**20:.1f} MiB), "
            f"silver Parquet written by transform_object, in {time.perf_counter() - started:.1f}s"
        )

        ordered_s = await ordered_read(js, count)
        pull_s = await pull_read(js, count)
        pull_lake_s = await pull_read(js, count, lake)
        nats_rate = candles / ordered_s

        await asyncio.to_thread(migrate, postgres.url)
        await reset_statements(postgres.url)
        env = {**os.environ, "NATS_URL": nats_server.url, "DATABASE_URL": postgres.url, "LAKE_URL": lake_url}
        last_seq = int(info.state.last_seq)
        fixed_s, _ = await asyncio.to_thread(run_replay, env, home / "cli", str(last_seq + 1))
        replay_s, output = await asyncio.to_thread(run_replay, env, home / "cli", "1")
        replayed = re.search(r"replayed (\d+) message", output)
        assert replayed and int(replayed.group(1)) == count, output[-2000:]
        loaded = int((await fetch(postgres.url, "SELECT count(*) FROM ohlcv"))[0][0])
        assert loaded == candles, (loaded, candles)
        ledger = await fetch(postgres.url, "SELECT count(*) AS n, sum(duration_ms) AS ms FROM batches")
        load_batch_s = float(ledger[0]["ms"]) / 1000
        statements = await statement_profile(postgres.url, top=8)
        replay_rate = candles / replay_s

        alone_rows, alone_s = await loader_alone(postgres.url, home / "lake", batches)
        await lake.close()
        profiled = ""
        if profile:  # again, under cProfile, into another empty database: the timed run stays unprofiled
            url = await create_database(postgres.url, "replay_profiled")
            await asyncio.to_thread(migrate, url)
            prof = home / "replay.prof"
            await asyncio.to_thread(run_replay, {**env, "DATABASE_URL": url}, home / "cli", "1", prof)
            profiled = profile_summary(prof)
    finally:
        await nc.close()
        await asyncio.to_thread(postgres.stop)
        await asyncio.to_thread(nats_server.stop)
        if os.environ.get("REPLAY_KEEP") == "1":
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    def row(name: str, seconds: float) -> str:
        return f"  {name:<66}{seconds:>8.2f}{candles / seconds:>12,.0f}{count / seconds:>10,.0f}"

    log(f"\n  {'path':<66}{'seconds':>8}{'candles/s':>12}{'msgs/s':>10}")
    log(row("NATS read: ordered consumer (denominator)", ordered_s))
    log(row("NATS read: pull fetch(100) + ack each (replay's loop, no handler)", pull_s))
    log(row("... + read each batch's Parquet from the lake (read_batch)", pull_lake_s))
    log(row("loader alone: load_batch per batch, frames in memory", alone_s))
    log(row("replay: `cryptoflow replay --stage warehouse-loader`, whole command", replay_s))
    log(row("replay minus its fixed cost (same command over an empty range)", replay_s - fixed_s))
    log(
        f"  replay's fixed cost: {fixed_s:.2f}s; time in load_batch (ledger duration_ms): {load_batch_s:.2f}s of {replay_s:.2f}s"
    )
    log("  PostgreSQL time by statement during the replay (pg_stat_statements):")
    for line in statements:
        log(line)
    if profiled:
        log(f"\n-- cProfile: replay --\n{profiled}")
    assert alone_rows == candles
    log(f"replay_candles_per_s={replay_rate:.0f} replay_vs_nats_read={replay_rate / nats_rate:.4f}")


if __name__ == "__main__":
    asyncio.run(main())
