"""load_batch (ohlcv) against a real PostgreSQL: binary COPY + upsert + batch ledger, in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import polars as pl
import pytest
from cryptoflow_contracts import BatchReady, Dataset
from cryptoflow_transformer.ohlcv import SILVER_SCHEMA
from cryptoflow_warehouse_loader.migrations import migrate
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import APPEND, UPSERT, BatchShapeError, LoadResult, load_batch

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
VALUES = ["open", "high", "low", "close", "volume"]


OHLCV = TABLES["ohlcv"]


async def load_ohlcv(conn: asyncpg.Connection, frame: pl.DataFrame, batch: BatchReady) -> LoadResult:
    return await load_batch(conn, OHLCV, frame, batch)


@pytest.fixture
async def conn(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    await asyncio.to_thread(migrate, fresh_database_url)
    connection = await asyncpg.connect(fresh_database_url)
    try:
        yield connection
    finally:
        await connection.close()


def candle(minute: int, close: float = 100.5, *, symbol: str = "BTC/USDT", volume: float = 2.5) -> dict[str, Any]:
    return {
        "exchange": "binance",
        "symbol": symbol,
        "timeframe": "1m",
        "ts": T0 + timedelta(minutes=minute),
        "open": 100.0 + minute,
        "high": 200.0 + minute,
        "low": 50.0 + minute,
        "close": close,
        "volume": volume,
        "source_event_id": f"RawSnapshot-{minute}",
    }


def silver_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A frame in the transformer's silver layout; any column beyond the core ones gets a neutral value."""
    filled = []
    for row in rows:
        full = dict(row)
        for name, dtype in SILVER_SCHEMA.items():
            if name not in full:
                full[name] = (name == "final") if dtype == pl.Boolean() else None
        filled.append(full)
    return pl.DataFrame(filled, schema=SILVER_SCHEMA)


def batch(name: str, rows: int, quarantined: int = 0) -> BatchReady:
    return BatchReady(
        dataset=Dataset.OHLCV,
        table="ohlcv",
        exchange="binance",
        lake_url="file:///lake",
        key=f"silver/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/{name}.parquet",
        sha256=(name.encode().hex() * 64)[:64],
        rows=rows,
        quarantined_rows=quarantined,
        min_ts=None,
        max_ts=None,
        source_key=f"bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/{name}.ndjson.zst",
        source_event_id=f"ObjectWritten-{name}",
        quality_score=rows / (rows + quarantined) if rows + quarantined else 1.0,
    )


async def table(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume, batch_id, loaded_at "
        "FROM ohlcv ORDER BY exchange, symbol, timeframe, ts"
    )
    return [tuple(r) for r in rows]


def expected_rows(rows: list[dict[str, Any]], batch_id: str) -> list[tuple[Any, ...]]:
    return sorted(
        (r["exchange"], r["symbol"], r["timeframe"], r["ts"], *(r[c] for c in VALUES), batch_id) for r in rows
    )


async def ledger(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    return {r["batch_id"]: r for r in await conn.fetch("SELECT * FROM batches")}


ROWS = [
    candle(0, close=0.09946999000000001),
    candle(1, close=123456789.12345679),
    candle(2, close=1e-8, volume=0.0),
    candle(0, symbol="ETH/USDT", close=3000.25),
]


async def test_first_load_inserts_every_row_exactly(conn: asyncpg.Connection) -> None:
    first = batch("a", len(ROWS))
    result = await load_ohlcv(conn, silver_frame(ROWS), first)
    assert (result.inserted, result.updated, result.unchanged, result.already_loaded) == (len(ROWS), 0, 0, False)
    stored = await table(conn)
    assert [row[:10] for row in stored] == expected_rows(ROWS, first.event_id)  # exact floats, UTC timestamps
    closes = {(r[1], r[3]): r[7] for r in stored}
    assert closes[("BTC/USDT", T0)] == 0.09946999000000001
    entry = (await ledger(conn))[first.event_id]
    assert entry["rows"] == len(ROWS)
    assert (entry["rows_inserted"], entry["rows_updated"], entry["rows_unchanged"]) == (len(ROWS), 0, 0)
    assert entry["silver_key"] == first.key
    assert entry["source_key"] == first.source_key
    assert entry["source_event_id"] == first.source_event_id
    assert entry["target_table"] == "ohlcv"


async def test_same_batch_again_is_already_loaded(conn: asyncpg.Connection) -> None:
    first = batch("a", len(ROWS))
    await load_ohlcv(conn, silver_frame(ROWS), first)
    before, ledger_before = await table(conn), await ledger(conn)
    # Even if the redelivered batch's frame were different, the ledger decides.
    again = await load_ohlcv(conn, silver_frame([candle(0, close=1.0), candle(9)]), first)
    assert (again.inserted, again.updated, again.unchanged, again.already_loaded) == (0, 0, 0, True)
    assert await table(conn) == before
    assert await ledger(conn) == ledger_before


async def test_other_batch_with_same_rows_changes_nothing(conn: asyncpg.Connection) -> None:
    first, second = batch("a", len(ROWS)), batch("b", len(ROWS))
    await load_ohlcv(conn, silver_frame(ROWS), first)
    before = await table(conn)
    result = await load_ohlcv(conn, silver_frame(ROWS), second)
    assert (result.inserted, result.updated, result.unchanged, result.already_loaded) == (0, 0, len(ROWS), False)
    assert await table(conn) == before  # batch_id and loaded_at untouched too
    entry = (await ledger(conn))[second.event_id]
    assert (entry["rows_inserted"], entry["rows_updated"], entry["rows_unchanged"]) == (0, 0, len(ROWS))


async def test_one_changed_close_updates_exactly_that_row(conn: asyncpg.Connection) -> None:
    first, second = batch("a", len(ROWS)), batch("b", len(ROWS))
    await load_ohlcv(conn, silver_frame(ROWS), first)
    before = {row[:4]: row for row in await table(conn)}
    changed = [dict(r) for r in ROWS]
    changed[1]["close"] = 123456789.12345678
    assert changed[1]["close"] != ROWS[1]["close"]  # a one-ulp change is a change
    result = await load_ohlcv(conn, silver_frame(changed), second)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, len(ROWS) - 1)
    after = {row[:4]: row for row in await table(conn)}
    assert after.keys() == before.keys()
    key = ("binance", "BTC/USDT", "1m", T0 + timedelta(minutes=1))
    assert after[key][7] == 123456789.12345678
    assert after[key][9] == second.event_id
    for other in after.keys() - {key}:
        assert after[other] == before[other]


async def test_mixed_batch_counts_inserted_updated_unchanged(conn: asyncpg.Connection) -> None:
    await load_ohlcv(conn, silver_frame(ROWS), batch("a", len(ROWS)))
    mixed = [*ROWS[:2], {**ROWS[2], "volume": 7.0}, ROWS[3], candle(3), candle(4)]
    result = await load_ohlcv(conn, silver_frame(mixed), batch("b", len(mixed)))
    assert (result.inserted, result.updated, result.unchanged) == (2, 1, 3)
    assert len(await table(conn)) == len(ROWS) + 2


async def test_duplicate_keys_in_a_frame_do_not_fail(conn: asyncpg.Connection) -> None:
    rows = [candle(0, close=1.0), candle(1), candle(0, close=2.0)]
    result = await load_ohlcv(conn, silver_frame(rows), batch("dup", len(rows)))
    assert result.already_loaded is False
    stored = await table(conn)
    assert len(stored) == 2
    # The last row of the frame for a key wins (the transformer sorts later snapshots last).
    assert {r[3]: r[7] for r in stored}[T0] == 2.0


async def test_duplicate_keys_are_not_counted_as_unchanged(conn: asyncpg.Connection) -> None:
    rows = [candle(0, close=1.0), candle(1), candle(0, close=2.0)]
    result = await load_ohlcv(conn, silver_frame(rows), batch("dup", len(rows)))
    distinct_keys = len({(r["exchange"], r["symbol"], r["timeframe"], r["ts"]) for r in rows})
    assert (result.inserted, result.updated, result.unchanged) == (distinct_keys, 0, 0)


async def test_check_violation_rolls_back_everything(conn: asyncpg.Connection) -> None:
    await load_ohlcv(conn, silver_frame(ROWS), batch("a", len(ROWS)))
    before, ledger_before = await table(conn), await ledger(conn)
    bad_batch = batch("bad", 3)
    rows = [candle(10), {**ROWS[0], "close": 5.0}, candle(11, volume=-1.0)]
    with pytest.raises(asyncpg.IntegrityConstraintViolationError) as excinfo:
        await load_ohlcv(conn, silver_frame(rows), bad_batch)
    assert isinstance(excinfo.value, asyncpg.CheckViolationError)
    # Nothing of the batch stayed: no new rows, no update, no ledger row.
    assert await table(conn) == before
    assert await ledger(conn) == ledger_before
    assert bad_batch.event_id not in await ledger(conn)
    # The connection is usable, and the batch can be retried once fixed.
    fixed = await load_ohlcv(conn, silver_frame([candle(10), candle(11)]), bad_batch)
    assert (fixed.inserted, fixed.already_loaded) == (2, False)


async def test_append_path_for_new_ranges_upsert_path_for_overlaps(conn: asyncpg.Connection) -> None:
    first = await load_ohlcv(conn, silver_frame([candle(m) for m in range(10, 20)]), batch("a", 10))
    later = await load_ohlcv(conn, silver_frame([candle(m) for m in range(20, 25)]), batch("b", 5))
    earlier = await load_ohlcv(conn, silver_frame([candle(m) for m in range(0, 5)]), batch("c", 5))
    # A gap fill inside the loaded range cannot be known free of conflicts: upsert.
    gap_fill = await load_ohlcv(conn, silver_frame([candle(m) for m in range(5, 10)]), batch("d", 5))
    overlap = await load_ohlcv(conn, silver_frame([candle(m) for m in range(22, 27)]), batch("e", 5))
    assert [r.path for r in (first, later, earlier, gap_fill, overlap)] == [APPEND, APPEND, APPEND, UPSERT, UPSERT]
    assert (overlap.inserted, overlap.updated, overlap.unchanged) == (2, 0, 3)
    assert await conn.fetchval("SELECT count(*) FROM ohlcv") == 27
    paths = {r["batch_id"]: r["load_path"] for r in await conn.fetch("SELECT batch_id, load_path FROM batches")}
    assert paths[batch("a", 10).event_id] == APPEND and paths[batch("e", 5).event_id] == UPSERT
    series = await conn.fetchrow("SELECT * FROM series WHERE table_name = 'ohlcv' AND symbol = 'BTC/USDT'")
    assert series is not None
    assert (series["first_ts"], series["last_ts"], series["batches"], series["rows_received"]) == (
        T0,
        T0 + timedelta(minutes=26),
        5,
        30,
    )


async def test_a_final_candle_is_not_replaced_by_an_unfinished_one(conn: asyncpg.Connection) -> None:
    closed = silver_frame([{**candle(0, close=101.0), "final": True}])
    in_progress = silver_frame([{**candle(0, close=99.0), "final": False}])
    await load_ohlcv(conn, in_progress, batch("open", 1))
    assert (await load_ohlcv(conn, closed, batch("closed", 1))).updated == 1  # unfinished → final: replaced
    late = await load_ohlcv(conn, in_progress, batch("late", 1))  # an older, unfinished snapshot loaded last
    assert (late.updated, late.unchanged) == (0, 1)
    assert await conn.fetchval("SELECT close FROM ohlcv") == 101.0


async def test_a_batch_without_a_silver_column_is_rejected(conn: asyncpg.Connection) -> None:
    with pytest.raises(BatchShapeError, match="close"):
        await load_ohlcv(conn, silver_frame(ROWS).drop("close"), batch("a", len(ROWS)))
    with pytest.raises(BatchShapeError, match="wrong type"):
        await load_ohlcv(conn, silver_frame(ROWS).with_columns(pl.lit("x").alias("close")), batch("a", len(ROWS)))
    assert await conn.fetchval("SELECT count(*) FROM batches") == 0


async def test_an_empty_batch_is_ledgered_and_loads_nothing(conn: asyncpg.Connection) -> None:
    result = await load_ohlcv(conn, silver_frame([]), batch("empty", 0))
    assert (result.inserted, result.updated, result.unchanged, result.already_loaded) == (0, 0, 0, False)
    assert await conn.fetchval("SELECT rows FROM batches") == 0


async def test_columns_added_to_silver_later_take_their_default(conn: asyncpg.Connection) -> None:
    # A file written before `resampled` and `final` existed: silver.py's defaults fill them in.
    old_file = silver_frame(ROWS).drop("resampled", "final")
    assert (await load_ohlcv(conn, old_file, batch("old", len(ROWS)))).inserted == len(ROWS)
    assert await conn.fetch("SELECT DISTINCT resampled, final FROM ohlcv") == [(False, True)]


async def test_a_resampled_candle_never_replaces_the_exchanges_own(conn: asyncpg.Connection) -> None:
    native = {**candle(0), "timeframe": "5m", "resampled": False}
    resampled = {**native, "close": native["close"] + 1, "resampled": True}
    await load_ohlcv(conn, silver_frame([native]), batch("native", 1))
    result = await load_ohlcv(conn, silver_frame([resampled]), batch("resampled", 1))
    assert (result.inserted, result.updated) == (0, 0)
    stored = await conn.fetchrow("SELECT close, resampled, batch_id FROM ohlcv WHERE timeframe = '5m'")
    assert stored is not None and (stored["close"], stored["resampled"]) == (native["close"], False)


async def test_the_exchanges_own_candle_replaces_a_resampled_one(conn: asyncpg.Connection) -> None:
    resampled = {**candle(0), "timeframe": "5m", "resampled": True}
    native = {**resampled, "close": resampled["close"] + 1, "resampled": False}
    await load_ohlcv(conn, silver_frame([resampled]), batch("resampled", 1))
    result = await load_ohlcv(conn, silver_frame([native]), batch("native", 1))
    assert result.updated == 1
    stored = await conn.fetchrow("SELECT close, resampled FROM ohlcv WHERE timeframe = '5m'")
    assert stored is not None and (stored["close"], stored["resampled"]) == (native["close"], False)


async def test_rows_of_interleaved_series_get_their_own_series_id_and_range(conn: asyncpg.Connection) -> None:
    symbols = ["SOL/USDT", "BTC/USDT", "ETH/USDT"]
    rows = [candle(minute, symbol=symbols[minute % 3]) for minute in range(30)][::-1]  # shuffled series, reversed time
    rows += [{**candle(5, symbol="BTC/USDT"), "timeframe": "5m"}]
    await load_ohlcv(conn, silver_frame(rows), batch("mixed", len(rows)))
    series = {
        (r["symbol"], r["timeframe"]): r for r in await conn.fetch("SELECT * FROM series WHERE table_name = 'ohlcv'")
    }
    assert len(series) == 4 and len({s["series_id"] for s in series.values()}) == 4
    for (symbol, timeframe), entry in series.items():
        mine = [r["ts"] for r in rows if (r["symbol"], r["timeframe"]) == (symbol, timeframe)]
        assert (entry["first_ts"], entry["last_ts"], entry["rows_received"]) == (min(mine), max(mine), len(mine))
        stored = await conn.fetch("SELECT ts FROM ohlcv_data WHERE series_id = $1 ORDER BY ts", entry["series_id"])
        assert [r["ts"] for r in stored] == sorted(mine)


async def warehouse_state(conn: asyncpg.Connection) -> dict[str, Any]:
    """What loading left behind, without the per-transaction times, batch numbers and paths
    (quality sums to 9 places: floats added in another order)."""
    rows = await conn.fetch(
        "SELECT symbol, ts, open, high, low, close, volume, version, batch_id FROM ohlcv ORDER BY symbol, ts"
    )
    ledger = await conn.fetch(
        "SELECT batch_id, rows, rows_inserted, rows_updated, rows_unchanged FROM batches ORDER BY batch_id"
    )
    series = await conn.fetch(
        "SELECT symbol, first_ts, last_ts, rows_received, batches, round(quality_sum::numeric, 9), min_quality, last_quality,"
        " last_batch_id FROM series ORDER BY symbol"
    )
    return {"rows": [dict(r) for r in rows], "ledger": [dict(r) for r in ledger], "series": [dict(r) for r in series]}


def pulled_together() -> list[tuple[BatchReady, pl.DataFrame]]:
    """BTC 0-9, ETH 0-9, BTC 10-19, then BTC 5-9 again with other closes, then BTC 20-24."""
    frames = [
        silver_frame([candle(m) for m in range(10)]),
        silver_frame([candle(m, symbol="ETH/USDT") for m in range(10)]),
        silver_frame([candle(m) for m in range(10, 20)]),
        silver_frame([candle(m, close=111.0) for m in range(5, 10)]),
        silver_frame([candle(m) for m in range(20, 25)]),
    ]
    qualities = [1.0, 0.9, 0.8, 0.7, 0.6]
    return [
        (batch(f"g{i}", frame.height).model_copy(update={"quality_score": q}), frame)
        for i, (frame, q) in enumerate(zip(frames, qualities, strict=True))
    ]


async def test_batches_loaded_together_leave_what_one_by_one_leaves(
    conn: asyncpg.Connection, fresh_database_url: str, database_url: str
) -> None:
    from cryptoflow_warehouse_loader.upsert import load_batches, runs_without_shared_keys

    group = pulled_together()
    results = await load_batches(conn, OHLCV, group)

    # One by one, into a second database of the same server.
    other_url = fresh_database_url.rsplit("/", 1)[0] + "/together_reference"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("DROP DATABASE IF EXISTS together_reference")
        await admin.execute("CREATE DATABASE together_reference")
    finally:
        await admin.close()
    await asyncio.to_thread(migrate, other_url)
    reference = await asyncpg.connect(other_url)
    try:
        one_by_one = [await load_batch(reference, OHLCV, frame, b) for b, frame in group]
        mine, theirs = await warehouse_state(conn), await warehouse_state(reference)
        for part in mine:
            assert mine[part] == theirs[part], part
    finally:
        await reference.close()
    counts = [(r.inserted, r.updated, r.unchanged, r.already_loaded) for r in results]
    assert counts == [(r.inserted, r.updated, r.unchanged, r.already_loaded) for r in one_by_one]
    assert [(r.inserted, r.updated, r.unchanged) for r in results] == [
        (10, 0, 0),
        (10, 0, 0),
        (10, 0, 0),
        (0, 5, 0),
        (5, 0, 0),
    ]

    # The first three share no key: one transaction (one now()); the fourth repeats keys of the
    # first, so it starts the next one, which the fifth joins.
    runs = runs_without_shared_keys(OHLCV, group)
    assert [[b.event_id for b, _ in run] for run in runs] == [
        [b.event_id for b, _ in group[:3]],
        [b.event_id for b, _ in group[3:]],
    ]
    times = {r["batch_id"]: r["loaded_at"] for r in await conn.fetch("SELECT batch_id, loaded_at FROM batches")}
    ids = [b.event_id for b, _ in group]
    assert times[ids[0]] == times[ids[1]] == times[ids[2]] != times[ids[3]] == times[ids[4]]
    btc = (await conn.fetch("SELECT batches, quality_sum, last_batch_id FROM series WHERE symbol = 'BTC/USDT'"))[0]
    assert (btc["batches"], btc["last_batch_id"]) == (4, ids[4])
    assert btc["quality_sum"] == pytest.approx(1.0 + 0.8 + 0.7 + 0.6)


async def test_in_one_transaction_new_series_append_and_overlapping_ones_upsert(conn: asyncpg.Connection) -> None:
    """The path is chosen per series, not per transaction: new 1m candles loaded together with a
    resampled candle that replaces one already stored still go straight in by COPY."""
    from cryptoflow_warehouse_loader.upsert import load_batches

    await load_ohlcv(conn, silver_frame([candle(m) for m in range(10)]), batch("first", 10))
    group = [
        (batch("eth", 10), silver_frame([candle(m, symbol="ETH/USDT") for m in range(10)])),
        (batch("btc-again", 3), silver_frame([candle(m, close=99.0) for m in range(3)])),
    ]
    eth, btc = await load_batches(conn, OHLCV, group)
    assert (eth.path, eth.inserted, eth.updated) == (APPEND, 10, 0)
    assert (btc.path, btc.inserted, btc.updated) == (UPSERT, 0, 3)
    closes = await conn.fetch(
        "SELECT symbol, close, version FROM ohlcv WHERE ts < $1 ORDER BY symbol, ts", T0 + timedelta(minutes=3)
    )
    assert [tuple(r.values()) for r in closes] == [("BTC/USDT", 99.0, 2)] * 3 + [("ETH/USDT", 100.5, 1)] * 3
