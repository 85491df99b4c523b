"""`cryptoflow query` over the lake equals the warehouse, before and after silver compaction.

Bronze objects (candles re-polled: forming copies of closed candles, a closed candle polled again
with other values, forming candles closed later; tickers, books, trades) are rebuilt through the
live code into silver and an empty warehouse (`rebuild --from-lake`, derived series on). Then every
silver table's view equals its warehouse table row for row, a range query too; the same after
the lake was compacted and the replaced files deleted; and a rebuild from the compacted lake
gives the same warehouse.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import polars as pl
import pytest
from contract.test_silver_live_files import write_batches
from cryptoflow_cli.lake_query import Markets, query_lake
from cryptoflow_cli.rebuild import rebuild as rebuild_from_lake
from cryptoflow_cli.replay import ReplayFilter
from cryptoflow_cli.up import DERIVED_DEFAULTS
from cryptoflow_contracts import Dataset, RawSnapshot
from cryptoflow_contracts.silver import TABLES
from cryptoflow_lake_writer import build_objects
from cryptoflow_runtime.lake import FileLake, MaintainedLake, open_lake
from cryptoflow_runtime.silver_lake import Compactor, live_silver_files

from .harness import S3_ENV
from .test_rebuild import table_digests
from .test_silver_datasets import BOOK, FIXTURES, TICKER, TRADE, snap

MINUTE = 60_000
T0 = 1_704_067_200_000  # 2024-01-01, where write_batches starts
QUERIED = ("ohlcv", "indicators", "tickers", "order_books", "trades")


def candle_rows(count: int) -> list[list[float]]:
    schema = {"ts": pl.Int64, **dict.fromkeys(["open", "high", "low", "close", "volume"], pl.Float64)}
    frame = pl.read_csv(FIXTURES / "candles/binance/XRPETH-1m.csv", has_header=False, schema=schema)
    return [list(row) for row in frame.head(count).rows()]


def page(rows: list[list[float]], fetched_ms: int, *, final: bool = True, scale: float = 1.0) -> RawSnapshot:
    payload = [[row[0], *(v * scale for v in row[1:5]), row[5]] for row in rows]
    return RawSnapshot(
        dataset=Dataset.OHLCV,
        exchange="binance",
        symbol="XRP/ETH",
        timeframe="1m",
        fetched_at=datetime.fromtimestamp(fetched_ms / 1000, UTC),
        payload=payload,
        first_ts=int(payload[0][0]),
        last_ts=int(payload[-1][0]),
        final=final,
    )


def snapshots() -> list[list[RawSnapshot]]:
    """Pages, each its own bronze object (as the lake-writer writes a page that arrived alone)."""
    rows = candle_rows(310)
    late = int(rows[-1][0]) + 10 * MINUTE
    return [
        [page(rows[0:100], int(rows[99][0]) + MINUTE)],
        [page(rows[100:200], int(rows[199][0]) + MINUTE)],
        [page(rows[200:300], int(rows[299][0]) + MINUTE)],
        # Forming copies of ten closed candles and of five not closed yet: the closed ones stay.
        [page(rows[290:305], late, final=False, scale=1.001)],
        # Five closed candles polled again with other values: the later poll wins.
        [page(rows[295:300], late + MINUTE, scale=1.002)],
        # The five forming candles closed.
        [page(rows[300:310], late + 2 * MINUTE)],
        [snap(Dataset.TICKER, TICKER, TICKER["timestamp"])],
        [snap(Dataset.TICKER, {**TICKER, "timestamp": TICKER["timestamp"] + 1000}, TICKER["timestamp"] + 1000)],
        [snap(Dataset.ORDERBOOK, BOOK, TICKER["timestamp"])],
        [snap(Dataset.TRADES, [TRADE, {**TRADE, "id": "2", "timestamp": TRADE["timestamp"] + 1}], TRADE["timestamp"])],
    ]


def write_bronze(lake: Path) -> None:
    for pages in snapshots():
        for obj in build_objects(pages):
            (lake / obj.key).parent.mkdir(parents=True, exist_ok=True)
            (lake / obj.key).write_bytes(obj.data)


async def rebuild_into(database_url: str, lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "LAKE_URL": lake_url,
        "DATABASE_URL": database_url,
        "NATS_URL": "nats://127.0.0.1:9",  # only refusals would publish; none expected
        **DERIVED_DEFAULTS,
    }.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    summary = await rebuild_from_lake(ReplayFilter(), out, processes=1)
    assert summary.rebuilt == summary.objects > 0 and not summary.refused, out.getvalue()[-3000:]


async def lake_rows(lake_url: str, sql: str) -> list[tuple[Any, ...]]:
    lake = await open_lake(lake_url, os.environ.get("S3_ENDPOINT_URL"))
    rows: list[tuple[Any, ...]] = []

    def run(con: duckdb.DuckDBPyConnection) -> None:
        rows.extend(con.sql(sql).fetchall())

    try:
        with tempfile.TemporaryDirectory() as workdir:
            await query_lake(lake, sql, run, Path(workdir))
    finally:
        await lake.close()
    return rows


async def warehouse_rows(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(database_url)
    try:
        return [tuple(record) for record in await conn.fetch(sql)]
    finally:
        await conn.close()


def table_sql(table: str, where: str = "") -> str:
    columns = ", ".join(f'"{c}"' for c in TABLES[table].column_names)
    order = ", ".join(f'"{c}"' for c in TABLES[table].key)
    return f"SELECT {columns} FROM {table} {where} ORDER BY {order}"


async def assert_lake_equals_warehouse(lake_url: str, database_url: str) -> dict[str, int]:
    counts = {}
    for table in QUERIED:
        lake, warehouse = (
            await lake_rows(lake_url, table_sql(table)),
            await warehouse_rows(database_url, table_sql(table)),
        )
        assert lake == warehouse, (table, len(lake), len(warehouse), set(lake) ^ set(warehouse))
        counts[table] = len(lake)
    return counts


@pytest.fixture
def lake_dir(tmp_path: Path) -> Iterator[Path]:
    lake = tmp_path / "lake"
    write_bronze(lake)
    yield lake


async def test_query_over_the_lake_equals_the_warehouse_before_and_after_compaction(
    lake_dir: Path, fresh_database_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake_url = f"file://{lake_dir}"
    await rebuild_into(fresh_database_url, lake_url, monkeypatch)

    counts = await assert_lake_equals_warehouse(lake_url, fresh_database_url)
    assert counts["ohlcv"] > 310 and all(counts.values()), counts  # resampled candles too
    # The versions the views chose between are really there.
    versions = await lake_rows(lake_url, "SELECT count(*) FROM ohlcv_versions WHERE timeframe = '1m'")
    assert versions[0][0] == 310 + 15 + 5
    forming = await warehouse_rows(
        fresh_database_url, "SELECT count(*) FROM ohlcv WHERE NOT final AND timeframe = '1m'"
    )
    assert forming == [(0,)]

    # A range, as a user asks it.
    rows = candle_rows(310)
    start, end = (datetime.fromtimestamp(rows[i][0] / 1000, UTC) for i in (250, 305))
    where = (
        f"WHERE symbol = 'XRP/ETH' AND timeframe = '1m' AND ts >= '{start.isoformat()}' AND ts < '{end.isoformat()}'"
    )
    ranged = await lake_rows(lake_url, table_sql("ohlcv", where))
    assert len(ranged) == 55
    assert ranged == await warehouse_rows(
        fresh_database_url, table_sql("ohlcv", where.replace("'2", "timestamptz '2", 2))
    )

    # Compaction: every closed partition becomes one file; queries give the same rows.
    control = lake_dir.parent / "uncompacted"
    shutil.copytree(lake_dir, control)  # mtimes too: the same write order
    lake = FileLake(lake_url)
    before = await live_silver_files(lake)
    report = await Compactor(lake, older_than=timedelta(days=1), grace=timedelta(0)).run()
    assert report.partitions_compacted > 0 and not report.refused, report.summary()
    after = await live_silver_files(lake)
    assert len(after) < len(before)
    assert all(f.compacted for f in after if f.key.startswith("silver/ohlcv/")), after
    assert await assert_lake_equals_warehouse(lake_url, fresh_database_url) == counts
    bronze = sorted(p for p in (lake_dir / "bronze").rglob("*") if p.is_file())
    swept = await Compactor(lake, grace=timedelta(0)).run()
    assert swept.files_deleted > 0
    assert sorted(p for p in (lake_dir / "bronze").rglob("*") if p.is_file()) == bronze  # bronze untouched
    assert await assert_lake_equals_warehouse(lake_url, fresh_database_url) == counts

    # A rebuild over the compacted silver (its late batches recompute derived series from silver)
    # gives the warehouse a rebuild over the uncompacted silver gives.
    over_compacted = await created_database(database_url, fresh_database_url, "compacted")
    over_uncompacted = await created_database(database_url, fresh_database_url, "uncompacted")
    await rebuild_into(over_compacted, lake_url, monkeypatch)
    # The uncompacted copy at the same URL (lineage ids name the lake).
    lake_dir.rename(lake_dir.parent / "compacted")
    control.rename(lake_dir)
    await rebuild_into(over_uncompacted, lake_url, monkeypatch)
    assert_same_tables(await table_digests(over_compacted, True), await table_digests(over_uncompacted, True))

    # And as decision 0038 rebuilds (silver removed first, compacted files and manifests with it):
    # the warehouse of the first run.
    shutil.rmtree(lake_dir / "silver")
    from_bronze = await created_database(database_url, fresh_database_url, "from_bronze")
    await rebuild_into(from_bronze, lake_url, monkeypatch)
    assert_same_tables(await table_digests(from_bronze, True), await table_digests(fresh_database_url, True))


async def created_database(server_url: str, like_url: str, suffix: str) -> str:
    name = f"{like_url.rsplit('/', 1)[1]}_{suffix}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{like_url.rsplit('/', 1)[0]}/{name}"


def assert_same_tables(got: dict[str, tuple[int, str]], expected: dict[str, tuple[int, str]]) -> None:
    assert got == expected, {
        name: (got.get(name), expected[name]) for name in expected if got.get(name) != expected[name]
    }


def test_query_command_formats(lake_dir: Path, tmp_path: Path) -> None:
    """`cryptoflow query` as a command: table, csv and parquet output of one query."""
    lake_url = f"file://{lake_dir}"
    lake = asyncio.run(open_lake(lake_url))
    asyncio.run(lake.close())
    silver = lake_dir / "silver/trades/exchange=binance/symbol=BTC-USDT/date=2024-01-01"
    silver.mkdir(parents=True)
    frame = pl.DataFrame(
        {
            "exchange": ["binance"] * 2,
            "symbol": ["BTC/USDT"] * 2,
            "trade_id": ["1", "2"],
            "ts": [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 1, tzinfo=UTC)],
            "price": [42000.5, 42001.0],
            "amount": [0.5, 1.0],
            "side": ["buy", "sell"],
            "maker_side": [None, None],
            "source_event_id": ["e1", "e2"],
        },
        schema_overrides={"maker_side": pl.String()},
    )
    frame.write_parquet(silver / f"1704067200000-{'a' * 24}.parquet", metadata={"cryptoflow.table": "trades"})
    sql = "SELECT trade_id, ts, price FROM trades ORDER BY trade_id"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {"LAKE_URL": lake_url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        return subprocess.run(
            [sys.executable, "-m", "cryptoflow_cli.main", "--home", str(tmp_path / "home"), "query", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    table = cli(sql)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["trade_id", "ts", "price"]
    assert "2024-01-01 00:01:00+00:00  42001.0" in table.stdout and "(2 rows)" in table.stdout

    as_csv = cli(sql, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["trade_id", "ts", "price"],
        ["1", "2024-01-01 00:00:00+00", "42000.5"],
        ["2", "2024-01-01 00:01:00+00", "42001.0"],
    ]

    out = tmp_path / "result.parquet"
    as_parquet = cli(sql, "--format", "parquet", "--output", str(out))
    assert as_parquet.returncode == 0, as_parquet.stderr
    assert pl.read_parquet(out)["price"].to_list() == [42000.5, 42001.0]

    refused = cli("SELECT nope FROM trades")
    assert refused.returncode == 2 and "nope" in refused.stderr


async def test_query_on_s3_before_and_after_compaction(
    s3_endpoint_url: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From S3 the live files are downloaded (batch files, then the compacted file): each key's
    row is the version the loader would keep (the last closed copy, else the last forming one)."""
    for name, value in {**S3_ENV, "S3_ENDPOINT_URL": s3_endpoint_url}.items():
        monkeypatch.setenv(name, value)
    lake_url = f"s3://{s3_bucket}/lake"
    lake = await open_lake(lake_url, s3_endpoint_url)
    try:
        await write_batches(lake)
        expected = []
        for k in range(30):
            versions = [i for i in (k // 5 - 1, k // 5) if 0 <= i < 5]
            closed = [i for i in versions if i % 2 == 0]
            expected.append(100.0 + (closed or versions)[-1])
        sql = "SELECT close FROM ohlcv ORDER BY ts"
        assert [row[0] for row in await lake_rows(lake_url, sql)] == expected
        assert isinstance(lake, MaintainedLake)
        report = await Compactor(lake).run(now=datetime(2024, 1, 3, tzinfo=UTC))
        assert report.partitions_compacted == 1
        assert [row[0] for row in await lake_rows(lake_url, sql)] == expected
        assert (await lake_rows(lake_url, "SELECT count(*) FROM ohlcv_versions"))[0][0] == 50
    finally:
        await lake.close()


def test_compact_command(lake_dir: Path, tmp_path: Path) -> None:
    asyncio.run(write_batches(FileLake(f"file://{lake_dir}")))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {"LAKE_URL": f"file://{lake_dir}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        return subprocess.run(
            [sys.executable, "-m", "cryptoflow_cli.main", "--home", str(tmp_path / "home"), "compact", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = cli("--older-than", "1d", "--grace", "0s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("compacted 1 of 1 partition(s): 5 file(s) into 1 (50 row(s))"), done.stdout
    swept = cli("--grace", "0s")
    assert swept.returncode == 0 and "deleted 5 superseded object(s)" in swept.stdout, swept.stdout
    assert sorted(p.name for p in (lake_dir / "bronze").rglob("*") if p.is_file())  # bronze still there
    bad = cli("--older-than", "yesterday")
    assert bad.returncode == 2 and "not a duration" in bad.stderr


async def test_a_query_resolves_again_when_compaction_deleted_a_file_under_it(tmp_path: Path) -> None:
    """The files were resolved, then a compaction committed and its sweep deleted them before
    DuckDB read them (a reader slower than the grace): the query runs again on the new files."""
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    await write_batches(lake)
    expected = await lake_rows(lake.url, "SELECT * FROM ohlcv ORDER BY ts")
    compactor = Compactor(lake, grace=timedelta(0))
    attempts = 0
    rows: list[tuple[Any, ...]] = []

    def run(con: duckdb.DuckDBPyConnection) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            now = datetime(2024, 1, 3, tzinfo=UTC)
            for _ in range(2):  # compact, then sweep: the resolved batch files are gone
                asyncio.run(compactor.run(now=now))
        rows.extend(con.sql("SELECT * FROM ohlcv ORDER BY ts").fetchall())

    with tempfile.TemporaryDirectory() as workdir:
        await query_lake(lake, "SELECT * FROM ohlcv ORDER BY ts", run, Path(workdir))
    assert attempts == 2
    assert rows == expected


async def test_files_of_older_schema_versions_read_with_the_declared_defaults(tmp_path: Path) -> None:
    """A file written before `final`, `resampled` and the kline extras existed: its rows are closed,
    native candles with null extras, as the loader fills them."""
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    partition = "silver/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-01-01"
    old = pl.DataFrame(
        {
            "exchange": ["binance"],
            "symbol": ["BTC/USDT"],
            "timeframe": ["1m"],
            "ts": [datetime(2024, 1, 1, tzinfo=UTC)],
            **{v: [1.0] for v in ("open", "high", "low", "close", "volume")},
            "source_event_id": ["old"],
        }
    )
    buffer = io.BytesIO()
    old.write_parquet(buffer, metadata={"cryptoflow.schema_version": "1", "cryptoflow.table": "ohlcv"})
    await lake.put(f"{partition}/0-{'0' * 24}.parquet", buffer.getvalue())
    await write_batches(lake)  # current files, from 00:00 on: the old candle's key has newer versions
    rows = await lake_rows(
        lake.url,
        "SELECT final, resampled, quote_volume, source_event_id FROM ohlcv_versions WHERE source_event_id = 'old'",
    )
    assert rows == [(True, False, None, "old")]
    assert len(await lake_rows(lake.url, "SELECT * FROM ohlcv")) == 30


async def test_views_of_some_markets_read_only_their_files(tmp_path: Path) -> None:
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    await write_batches(lake)
    await write_batches(lake, "silver/ohlcv/exchange=binance/symbol=ETH-USDT/date=2024-01-01")
    await write_batches(lake, "silver/ohlcv/exchange=bybit/symbol=BTC-USDT/date=2024-01-01")

    async def scalar(sql: str, markets: Markets) -> int:
        rows: list[tuple[Any, ...]] = []
        with tempfile.TemporaryDirectory() as workdir:
            await query_lake(lake, sql, lambda con: rows.extend(con.sql(sql).fetchall()), Path(workdir), markets)
        return int(rows[0][0])

    # Every file's rows say binance BTC/USDT (write_batches): the versions tell which files were read.
    for markets, files in (
        (Markets(), 3),
        (Markets(exchange="binance"), 2),
        (Markets(exchange="bybit"), 1),
        (Markets(exchange="binance", symbol="ETH/USDT"), 1),
        (Markets(symbol="BTC/USDT"), 2),
    ):
        assert await scalar("SELECT count(*) FROM ohlcv_versions", markets) == 50 * files, markets
        assert await scalar("SELECT count(*) FROM ohlcv", markets) == 30, markets


@pytest.mark.parametrize("grace", [timedelta(0), timedelta(hours=1)])
async def test_queries_during_compaction_never_see_a_row_twice_or_miss_one(tmp_path: Path, grace: timedelta) -> None:
    """A loop of DuckDB queries (in a thread, as the command runs them) while partitions are
    compacted and (with no grace) the replaced files deleted under it: every version, with its
    lineage, and every view row, exactly as before, at every read."""
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    for day, start in (("2023-12-31", -24 * 60), ("2024-01-01", 0)):
        await write_batches(lake, f"silver/ohlcv/exchange=binance/symbol=BTC-USDT/date={day}", T0 + start * MINUTE)
    every_version = "SELECT * FROM ohlcv_versions ORDER BY ALL"
    winners = "SELECT * FROM ohlcv ORDER BY ALL"
    expected = (await lake_rows(lake.url, every_version), await lake_rows(lake.url, winners))
    assert len(expected[0]) == 100 and len(expected[1]) == 60
    compactor = Compactor(lake, grace=grace)
    now = datetime(2024, 1, 3, tzinfo=UTC)

    async def compact_and_sweep() -> None:
        for _ in range(3):
            await compactor.run(now=now)

    task = asyncio.create_task(compact_and_sweep())
    reads = 0
    while not task.done() or reads < 3:
        seen = (await lake_rows(lake.url, every_version), await lake_rows(lake.url, winners))
        assert seen == expected, f"read {reads}"
        reads += 1
    await task
    assert all(f.compacted for f in await live_silver_files(lake))
    assert (await lake_rows(lake.url, every_version), await lake_rows(lake.url, winners)) == expected
