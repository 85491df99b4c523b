"""Rebuild benchmark: `cryptoflow rebuild --from-lake` (bronze objects → silver → an empty warehouse)
vs the loader alone loading the same candles' silver rows, same run.

Setup (not timed): REBUILD_CANDLES (200,000) 1m candles over REBUILD_SERIES (10) series, as the
extractor publishes them (pages of REBUILD_PAGE = 100 candles, interleaved across series), cut
into bronze objects by the lake-writer's own `objects.build_objects` (same partitions, keys and
bytes) from lake-writer batches of one page per series — what a pipeline that keeps up writes:
one object per page (REBUILD_BATCH_PAGES = 500 instead: a backfill's batches, objects of a day of
candles) — in a file:// lake, with each object's silver batch made by the transformer's own
`transform_object` (for the loader alone). The rebuild gets another lake holding a copy of the
bronze objects and nothing else: no silver, no streams — what a rebuild starts from.

The rebuild runs with the derived series `cryptoflow up` runs (up.py DERIVED_DEFAULTS: resampled
5m…1d candles, indicators, anomalies) unless REBUILD_DERIVED=0, so besides every candle it loads
an indicator row per candle and the resampled candles.

Timed, on one PostgreSQL with the durable settings of bench/loader.py:
  1. rebuild: `python -m cryptoflow_cli.main rebuild --from-lake` as a subprocess (what a user
     runs; DATABASE_URL/LAKE_URL in its environment, NATS_URL pointing nowhere), into a migrated,
     empty database; wall time of the whole command. Its fixed cost (start-up, migration check,
     listing the lake) is measured by the same command with a filter that matches nothing.
  2. loader alone: `upsert.load_batch` over the same candles' silver batches (made in setup by
     the transformer's own `transform_object`, one per object, as the live path makes them),
     frames in memory, one connection, into an empty database (as bench/loader.py and
     bench/replay.py time the loader); run before and after the rebuild, as the machine's load
     drifts, and the mean taken: the denominator.
REBUILD_PROFILE=1 then runs the rebuild once more under cProfile (silver removed again, another
empty database) and prints its top functions.

    uv run python bench/rebuild.py          # or: make bench BENCH=rebuild

Last line: `rebuild_candles_per_s=… rebuild_vs_loader_alone=…` (candles: the native 1m candles).
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import polars as pl
from cryptoflow_cli.servers import start_postgres
from cryptoflow_cli.up import DERIVED_DEFAULTS
from cryptoflow_contracts import BatchReady
from cryptoflow_lake_writer.config import LakeWriterSettings
from cryptoflow_lake_writer.objects import build_objects
from cryptoflow_runtime import open_lake
from cryptoflow_transformer import transform_object
from cryptoflow_warehouse_loader.migrations import migrate
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch

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

# Where the rebuild would publish DeadLetters: nothing listens there (it reports them instead).
NO_NATS = "nats://127.0.0.1:9"


async def build_bronze(lake_url: str, candles: int, series: int, page: int, batch_pages: int) -> list[BatchReady]:
    """Bronze objects as the lake-writer writes them, from batches of `batch_pages` pages; and each
    object's silver batch as the transformer writes it (`transform_object`), for the loader alone."""
    lake = await open_lake(lake_url)
    pages = CandleSource(series).backfill(candles, page)
    defaults = LakeWriterSettings()
    batches = []
    try:
        for offset in range(0, len(pages), batch_pages):
            for obj in build_objects(pages[offset : offset + batch_pages], defaults.zstd_level):
                await lake.put(obj.key, obj.data)
                written = obj.announcement(lake.url)
                result = await transform_object(lake, written)
                assert result.batch is not None and result.quarantine is None
                batches.append(result.batch)
    finally:
        await lake.close()
    return batches


def children_cpu_s() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def run_rebuild(env: dict[str, str], home: Path, *args: str, profile: Path | None = None) -> tuple[float, str]:
    """`cryptoflow rebuild --from-lake [args]` as a subprocess: (wall seconds, output + its CPU seconds)."""
    cli = ["-m", "cryptoflow_cli.main", "--home", str(home), "rebuild", "--from-lake", *args]
    argv = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), *cli]
    started, cpu = time.perf_counter(), children_cpu_s()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    (user, system), (user_before, system_before) = children_cpu_s(), cpu
    result.stdout += (
        f"\nrebuild CPU seconds (its processes): {user - user_before:.2f} user, {system - system_before:.2f} system\n"
    )
    if result.returncode != 0:
        raise RuntimeError(f"rebuild failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds, result.stdout + result.stderr


async def loader_alone(server_url: str, lake_root: Path, batches: list[BatchReady], name: str) -> tuple[int, float]:
    url = await create_database(server_url, name)
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


def clear_derived_layers(lake_root: Path) -> None:
    for layer in ("silver", "quarantine"):
        shutil.rmtree(lake_root / layer, ignore_errors=True)


async def main() -> None:
    candles = env_int("REBUILD_CANDLES", 200_000)
    series = env_int("REBUILD_SERIES", 10)
    page = env_int("REBUILD_PAGE", 100)
    batch_pages = env_int("REBUILD_BATCH_PAGES", series)
    derived = os.environ.get("REBUILD_DERIVED", "1") != "0"
    profile = os.environ.get("REBUILD_PROFILE") == "1"
    what = "with derived series (up.py DERIVED_DEFAULTS)" if derived else "candles only"
    log(f"rebuild benchmark: {candles:,} 1m candles over {series} series, bronze → empty warehouse, {what}")
    home = Path(tempfile.mkdtemp(prefix="cryptoflow-rebuild-"))
    postgres = await asyncio.to_thread(start_postgres, home / "pg", settings=PG_SETTINGS)
    # The objects and their silver (for the loader alone) are made in one lake; the rebuild gets
    # a lake holding a copy of the bronze objects only.
    made = home / "made"
    lake_root = home / "lake"
    lake_url = f"file://{lake_root}"
    try:
        started = time.perf_counter()
        batches = await build_bronze(f"file://{made}", candles, series, page, batch_pages)
        await asyncio.to_thread(shutil.copytree, made / "bronze", lake_root / "bronze")
        objects = len(batches)
        log(
            f"setup: {objects} bronze objects ({candles / objects:,.0f} candles each) and their silver "
            f"in {time.perf_counter() - started:.1f}s"
        )

        # The loader alone, before and after the rebuild (the machine's load drifts): the mean.
        alone_rows, alone_before_s = await loader_alone(postgres.url, made, batches, "loader_alone_before")
        assert alone_rows == candles, (alone_rows, candles)

        await asyncio.to_thread(migrate, postgres.url)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRANSFORMER_")},
            "NATS_URL": NO_NATS,
            "DATABASE_URL": postgres.url,
            "LAKE_URL": lake_url,
            **(DERIVED_DEFAULTS if derived else {}),
        }
        options = [
            *(["--concurrency", os.environ["REBUILD_CONCURRENCY"]] if os.environ.get("REBUILD_CONCURRENCY") else []),
            *(["--processes", os.environ["REBUILD_PROCESSES"]] if os.environ.get("REBUILD_PROCESSES") else []),
        ]
        fixed_s, _ = await asyncio.to_thread(run_rebuild, env, home / "cli", "--filter", "nowhere/*/*", *options)
        await fetch(postgres.url, "CHECKPOINT")
        await reset_statements(postgres.url)
        rebuild_s, output = await asyncio.to_thread(run_rebuild, env, home / "cli", *options)
        statements = await statement_profile(postgres.url, top=10)
        summary = [line for line in output.splitlines() if line.startswith(("rebuilt", "rebuild CPU"))]
        loaded = await fetch(
            postgres.url,
            "SELECT count(*) FILTER (WHERE NOT resampled) AS native, count(*) FILTER (WHERE resampled) AS resampled "
            "FROM ohlcv",
        )
        native = int(loaded[0]["native"])
        assert native == candles, (native, candles, output[-3000:])
        indicators = int((await fetch(postgres.url, "SELECT count(*) FROM indicators"))[0][0])
        ledger = await fetch(postgres.url, "SELECT count(*) AS n, sum(duration_ms) AS ms FROM batches")
        load_batch_s = float(ledger[0]["ms"] or 0) / 1000
        rebuild_rate = candles / rebuild_s

        alone_rows, alone_after_s = await loader_alone(postgres.url, made, batches, "loader_alone_after")
        alone_s = (alone_before_s + alone_after_s) / 2
        alone_rate = candles / alone_s

        profiled = ""
        if profile:  # again, under cProfile, into another empty database: the timed run stays unprofiled
            clear_derived_layers(lake_root)
            url = await create_database(postgres.url, "rebuild_profiled")
            await asyncio.to_thread(migrate, url)
            prof = home / "rebuild.prof"
            await asyncio.to_thread(run_rebuild, {**env, "DATABASE_URL": url}, home / "cli", *options, profile=prof)
            profiled = profile_summary(prof)
    finally:
        await asyncio.to_thread(postgres.stop)
        if os.environ.get("REBUILD_KEEP") == "1":
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    def row(name: str, seconds: float) -> str:
        return f"  {name:<64}{seconds:>8.2f}{candles / seconds:>12,.0f}"

    log(f"\n  {'path':<64}{'seconds':>8}{'candles/s':>12}")
    log(row("loader alone, before the rebuild", alone_before_s))
    log(row("loader alone, after the rebuild", alone_after_s))
    log(row("loader alone: load_batch per silver batch, mean (denominator)", alone_s))
    log(row("rebuild: `cryptoflow rebuild --from-lake`, whole command", rebuild_s))
    log(row("rebuild minus its fixed cost (same command, nothing to do)", rebuild_s - fixed_s))
    log(
        f"  rows loaded by the rebuild: {native:,} candles, {int(loaded[0]['resampled']):,} resampled, "
        f"{indicators:,} indicator rows; {ledger[0]['n']} batches, {load_batch_s:.2f}s in load_batch (ledger)"
    )
    log(f"  rebuild's fixed cost: {fixed_s:.2f}s")
    for line in summary:
        log(f"  {line}")
    log("  PostgreSQL time by statement during the rebuild (pg_stat_statements):")
    for line in statements:
        log(line)
    if profiled:
        log(f"\n-- cProfile: rebuild --\n{profiled}")
    log(f"rebuild_candles_per_s={rebuild_rate:.0f} rebuild_vs_loader_alone={rebuild_rate / alone_rate:.4f}")


if __name__ == "__main__":
    asyncio.run(main())
