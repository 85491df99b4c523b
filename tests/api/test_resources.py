"""Each warehouse endpoint returns what the warehouse holds (hand-made sets, loaded with the loader's
code), in each format, read back with pyarrow/polars; pages visit every row once."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from warehouse.support import T0, sample

from .formats import FORMATS, decode
from .support import load, new_key, serve, settings

CANDLE_COLUMNS = ["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "trade_count"]


def candles(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(CANDLE_COLUMNS).with_columns(pl.col("ts").dt.cast_time_unit("us"))


@pytest.mark.parametrize("fmt", FORMATS)
async def test_ohlcv_in_each_format_equals_the_warehouse(
    warehouse_url: str, reader_url: str, nats_url: str, tmp_path: Path, fmt: str
) -> None:
    btc = sample("ohlcv", 40, symbol="BTC/USDT")
    eth = sample("ohlcv", 25, symbol="ETH/USDT", start=5)
    await load(warehouse_url, tmp_path, "ohlcv", btc, "btc")
    await load(warehouse_url, tmp_path, "ohlcv", eth, "eth")
    key = await new_key(warehouse_url)
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            params = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "format": fmt}
            response = await client.get("/v1/ohlcv", params=params)
            assert response.status_code == 200, response.text
            got = decode(fmt, response.content)
            assert_frame_equal(candles(got), candles(btc), check_dtypes=False)

            # A time range: [start, end) of ts.
            start, end = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
            ranged = await client.get(
                "/v1/ohlcv", params={**params, "start": start.isoformat(), "end": end.isoformat()}
            )
            got = decode(fmt, ranged.content)
            expected = btc.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
            assert_frame_equal(candles(got), candles(expected), check_dtypes=False)

            # Both symbols, in key order (series, then time); by Accept instead of format=.
            media = {
                "json": "application/json",
                "csv": "text/csv",
                "parquet": "application/vnd.apache.parquet",
                "arrow": "application/vnd.apache.arrow.stream",
            }[fmt]
            both = await client.get("/v1/ohlcv", params={"exchange": "binance"}, headers={"Accept": media})
            assert both.headers["content-type"].startswith(media)
            got = decode(fmt, both.content)
            assert_frame_equal(candles(got), candles(pl.concat([btc, eth])), check_dtypes=False)


async def test_csv_has_a_header_row_and_iso_utc_times(
    warehouse_url: str, reader_url: str, nats_url: str, tmp_path: Path
) -> None:
    await load(warehouse_url, tmp_path, "ohlcv", sample("ohlcv", 3), "csv")
    key = await new_key(warehouse_url)
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            text = (await client.get("/v1/ohlcv", params={"format": "csv"})).text
    header, first, *_ = csv.reader(io.StringIO(text))
    assert header[:5] == ["exchange", "symbol", "timeframe", "ts", "open"]
    assert first[:5] == ["binance", "BTC/USDT", "1m", "2024-03-01T00:00:00.000000Z", "100"]


async def test_pages_visit_every_row_once_across_concurrent_inserts(
    warehouse_url: str, reader_url: str, nats_url: str, tmp_path: Path
) -> None:
    first = sample("ohlcv", 50, symbol="BTC/USDT")
    await load(warehouse_url, tmp_path, "ohlcv", first, "pages")
    key = await new_key(warehouse_url)
    seen: list[tuple[str, str]] = []
    inserted: list[pl.DataFrame] = []
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            cursor: str | None = None
            page_no = 0
            while True:
                params: dict[str, str | int] = {"exchange": "binance", "limit": 7, "format": "json"}
                if cursor:
                    params["cursor"] = cursor
                response = await client.get("/v1/ohlcv", params=params)
                body = response.json()
                assert len(body["data"]) <= 7
                seen += [(row["symbol"], row["ts"]) for row in body["data"]]
                assert response.headers.get("x-next-cursor") == body["next_cursor"]
                cursor = body["next_cursor"]
                page_no += 1
                if page_no in (2, 4):
                    # Rows arriving between pages: later candles of the same series, a new series,
                    # and updated values of rows already returned (same keys).
                    more = sample("ohlcv", 5, symbol="BTC/USDT", start=50 + page_no * 5)
                    new = sample("ohlcv", 4, symbol="AAA/USDT", start=page_no)
                    changed = sample("ohlcv", 3, symbol="BTC/USDT").with_columns(pl.col("close") + 0.25)
                    for name, rows in (("more", more), ("new", new), ("changed", changed)):
                        await load(warehouse_url, tmp_path, "ohlcv", rows, f"{name}-{page_no}")
                    inserted += [more, new]
                if cursor is None:
                    break
    assert len(seen) == len(set(seen)), "a row came twice"
    assert seen == sorted(seen, key=lambda row: (row[0] != "BTC/USDT", row)), "not in key order"
    got = {(symbol, datetime.fromisoformat(ts)) for symbol, ts in seen}
    before = set(first.select("symbol", "ts").iter_rows())
    assert before <= got, "a row there before paging began was missed"
    # Candles of the paged series inserted after the cursor had passed their key come too.
    later = {row for frame in inserted for row in frame.select("symbol", "ts").iter_rows() if row[0] == "BTC/USDT"}
    assert later <= got


async def test_every_table_endpoint_equals_the_warehouse(
    warehouse_url: str, reader_url: str, nats_url: str, tmp_path: Path
) -> None:
    tables = {
        "trades": ["exchange", "symbol", "trade_id", "ts", "price", "amount", "side", "maker_side"],
        "order_books": ["exchange", "symbol", "ts", "side", "level", "price", "amount", "sequence", "resynced"],
        "tickers": ["exchange", "symbol", "ts", "bid", "ask", "last"],
        "indicators": ["exchange", "symbol", "timeframe", "ts", "rsi_14", "macd", "vwap"],
    }
    loaded = {}
    for table in tables:
        loaded[table] = sample(table, 12, symbol="SOL/USDT")
        await load(warehouse_url, tmp_path, table, loaded[table], table)
        await load(warehouse_url, tmp_path, table, sample(table, 3, symbol="XRP/USDT"), f"{table}-other")
    key = await new_key(warehouse_url)
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            for table, columns in tables.items():
                for fmt in FORMATS:
                    response = await client.get(f"/v1/{table}", params={"symbol": "SOL/USDT", "format": fmt})
                    assert response.status_code == 200, response.text
                    got = decode(fmt, response.content).select(columns)
                    expected = loaded[table].select(columns).with_columns(pl.col("ts").dt.cast_time_unit("us"))
                    assert_frame_equal(got, expected, check_dtypes=False)
            # The catalogue: one row per series, with its range and quality.
            catalogue = (await client.get("/v1/series", params={"symbol": "SOL/USDT"})).json()["data"]
            assert sorted(row["table_name"] for row in catalogue) == sorted(tables)
            for row in catalogue:
                assert row["first_ts"].startswith("2024-03-01T00:00:00")
                assert row["last_ts"].startswith("2024-03-01T00:11:00")
                assert row["rows_received"] == 12 and row["batches"] == 1
                assert row["avg_quality"] == 1.0 and row["lag_s"] > 0
            # Quality: one row per loaded batch.
            quality = (await client.get("/v1/quality", params={"table": "trades"})).json()["data"]
            assert sorted(row["rows"] for row in quality) == [3, 12]
            assert all(row["quality_score"] == 1.0 for row in quality)


async def test_gaps_runs_alerts_and_stats_equal_the_warehouse(
    warehouse_url: str, reader_url: str, nats_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(warehouse_url)
    try:
        await conn.execute(
            """
            INSERT INTO known_gaps (exchange, symbol, dataset, timeframe, gap_start, gap_end, missing, detected_at, event_id, kind)
            VALUES ('binance', 'BTC/USDT', 'ohlcv', '1m', '2024-03-01 00:10+00', '2024-03-01 00:15+00', 4, now(), 'g1', 'no_records'),
                   ('binance', 'BTC/USDT', 'ohlcv', '1m', '2024-03-02 00:00+00', '2024-03-02 01:00+00', 59, now(), 'g2', 'archive_missing'),
                   ('bybit', 'ETH/USDT', 'ohlcv', '5m', '2024-03-01 00:00+00', '2024-03-01 00:30+00', 5, now(), 'g3', 'no_records');
            INSERT INTO service_runs (run_id, service, instance, status, seq, started_at, reported_at, counts)
            VALUES ('r1', 'extractor', 'h1', 'running', 1, '2024-03-01 00:00+00', now(), '{"pages": 3}'),
                   ('r2', 'warehouse-loader', 'h1', 'ok', 4, '2024-03-01 01:00+00', now(), '{}');
            INSERT INTO alerts (rule, kind, symbol, exchanges, observed_at, value, threshold, message)
            VALUES ('spread', 'spread', 'BTC/USDT', 'binance,bybit', '2024-03-01 00:00+00', 2.5, 2.0, 'spread 2.5%'),
                   ('stale', 'staleness', 'ETH/USDT', 'bybit', '2024-03-01 00:05+00', 7200, 3600, 'stale');
            """
        )
    finally:
        await conn.close()
    candle_rows = sample("ohlcv", 30, symbol="BTC/USDT")
    await load(warehouse_url, tmp_path, "ohlcv", candle_rows, "stats")
    admin = await asyncpg.connect(warehouse_url)
    try:
        await admin.execute("REFRESH MATERIALIZED VIEW market_overview; REFRESH MATERIALIZED VIEW performance")
    finally:
        await admin.close()
    key = await new_key(warehouse_url)
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            gaps = (await client.get("/v1/gaps", params={"exchange": "binance"})).json()["data"]
            assert [(g["kind"], g["missing"]) for g in gaps] == [("no_records", 4), ("archive_missing", 59)]
            ranged = await client.get(
                "/v1/gaps", params={"start": "2024-03-01T00:12:00Z", "end": "2024-03-01T00:20:00Z"}
            )
            assert sorted(g["event_id"] for g in ranged.json()["data"]) == ["g1", "g3"]
            runs = (await client.get("/v1/runs", params={"service": "extractor"})).json()["data"]
            assert [(r["run_id"], r["counts"]) for r in runs] == [("r1", '{"pages": 3}')]
            alerts = (await client.get("/v1/alerts", params={"rule": "stale"})).json()["data"]
            assert [(a["symbol"], a["value"]) for a in alerts] == [("ETH/USDT", 7200.0)]
            stats = (await client.get("/v1/stats", params={"symbol": "BTC/USDT"})).json()["data"]
            assert len(stats) == 1 and stats[0]["last_price"] == candle_rows["close"][-1]


async def test_arrow_pages_visit_every_row_once_while_a_writer_loads(
    warehouse_url: str, reader_url: str, nats_url: str, tmp_path: Path
) -> None:
    first = pl.concat([sample("ohlcv", 60, symbol=s) for s in ("BTC/USDT", "ETH/USDT")])
    await load(warehouse_url, tmp_path, "ohlcv", first, "before")
    key = await new_key(warehouse_url)
    stop = asyncio.Event()

    async def writer() -> int:
        # Later candles of both series, new series, and rewrites of rows already there, while paging.
        n = 0
        while not stop.is_set():
            n += 1
            rows = pl.concat(
                [
                    sample("ohlcv", 3, symbol="BTC/USDT", start=60 + 3 * n),
                    sample("ohlcv", 3, symbol=f"N{n}/USDT"),
                    sample("ohlcv", 2, symbol="ETH/USDT", start=n % 60).with_columns(pl.col("close") + 0.5),
                ]
            )
            await load(warehouse_url, tmp_path, "ohlcv", rows, f"during-{n}")
        return n

    seen: list[tuple[str, datetime]] = []
    with serve(settings(reader_url, nats_url)) as base:
        task = asyncio.create_task(writer())
        try:
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
                cursor: str | None = None
                while True:
                    params: dict[str, str | int] = {"exchange": "binance", "limit": 13, "format": "arrow"}
                    if cursor:
                        params["cursor"] = cursor
                    response = await client.get("/v1/ohlcv", params=params)
                    page = decode("arrow", response.content)
                    seen += list(page.select("symbol", "ts").iter_rows())
                    cursor = response.headers.get("x-next-cursor")
                    if cursor is None:
                        break
        finally:
            stop.set()
            batches = await task
    assert batches >= 1
    assert len(seen) == len(set(seen)), "a row came twice"
    assert set(first.select("symbol", "ts").iter_rows()) <= set(seen), "a row there before paging began was missed"


async def seed_every_resource(warehouse_url: str, tmp_path: Path) -> None:
    """A few rows behind every resource: loaded data tables, known gaps, runs, alerts, the marts."""
    for table in (
        "ohlcv",
        "trades",
        "order_books",
        "tickers",
        "indicators",
        "agg_trades",
        "market_snapshots",
        "aggregator_prices",
        "aggregator_candles",
    ):
        for symbol in ("BTC/USDT", "ETH/USDT"):
            await load(warehouse_url, tmp_path, table, sample(table, 4, symbol=symbol), f"{table}-{symbol[:3]}")
    conn = await asyncpg.connect(warehouse_url)
    try:
        for i in range(5):
            await conn.execute(
                "INSERT INTO known_gaps (exchange, symbol, dataset, timeframe, gap_start, gap_end, missing, detected_at, event_id) "
                "VALUES ('binance', 'BTC/USDT', 'ohlcv', '1m', $1::timestamptz, $1::timestamptz + interval '5 minutes', 4, now(), $2)",
                T0 + timedelta(hours=i),
                f"gap-{i}",
            )
            await conn.execute(
                "INSERT INTO service_runs (run_id, service, instance, status, seq, started_at, reported_at) "
                "VALUES ($1, 'extractor', 'h', 'ok', 1, $2, now())",
                f"run-{i}",
                T0 + timedelta(minutes=i),
            )
            await conn.execute(
                "INSERT INTO alerts (rule, kind, symbol, exchanges, observed_at, value, threshold, message) "
                "VALUES ('stale', 'staleness', $1, 'binance', $2, 1, 1, 'm')",
                f"S{i}/USDT",
                T0,
            )
        await conn.execute("REFRESH MATERIALIZED VIEW market_overview; REFRESH MATERIALIZED VIEW performance")
    finally:
        await conn.close()


async def test_every_resource_pages_through_its_rows_once_in_every_format(
    warehouse_url: str, reader_url: str, nats_url: str, tmp_path: Path
) -> None:
    from cryptoflow_api import RESOURCES

    await seed_every_resource(warehouse_url, tmp_path)
    key = await new_key(warehouse_url, rate_per_s=10_000.0, burst=10_000)  # a few hundred pages here
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            for name in RESOURCES:
                whole = decode("arrow", (await client.get(f"/v1/{name}", params={"format": "arrow"})).content)
                assert whole.height >= 2, name
                for fmt in FORMATS:
                    pages: list[pl.DataFrame] = []
                    cursor: str | None = None
                    while True:
                        params: dict[str, str | int] = {"limit": 3, "format": fmt}
                        if cursor:
                            params["cursor"] = cursor
                        response = await client.get(f"/v1/{name}", params=params)
                        assert response.status_code == 200, (name, fmt, response.text)
                        page = decode(fmt, response.content)
                        assert page.height <= 3
                        if page.height:
                            pages.append(page)
                        cursor = response.headers.get("x-next-cursor")
                        if cursor is None:
                            break
                    paged = pl.concat(pages, how="vertical_relaxed")
                    assert paged.height == whole.height, (name, fmt)
                    # Same rows in the same order: compare the columns every format keeps alike.
                    text_columns = [c for c, t in whole.schema.items() if t == pl.String]
                    assert paged.select(text_columns).rows() == whole.select(text_columns).rows(), (name, fmt)
