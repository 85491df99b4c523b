"""`cryptoflow ingest`: a user's CSV or Parquet file through the whole pipeline.

A candle file (the repo's Binance ADA/BTC 5m fixture, with an ISO time column and bad rows put in)
loads value for value; its bad rows are in the warehouse's quarantine with their reasons; a
second ingest of the same file changes nothing. A Parquet file of trades names each row's
exchange and market in columns: a row of an exchange that does not exist is dead-lettered, the
others load.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from .harness import Pipeline

FIXTURE = Path(__file__).parent.parent / "fixtures" / "candles" / "binance" / "ADABTC-5m.csv"
GOOD_ROWS = 120
CANDLE_MAPPING = """\
columns: {ts: open_time, open: o, high: h, low: l, close: c, volume: v}
ts_unit: iso
exchange: binance
symbol: ADA/BTC
timeframe: 5m
"""
TRADE_MAPPING = """\
columns: {ts: time_us, id: trade_id, price: price, amount: qty, side: side}
ts_unit: us
exchange_column: venue
symbol_column: pair
"""
CONSUMERS = [("RAW", "lake-writer"), ("LAKE", "transformer"), ("SILVER", "warehouse-loader")]


def ingest(pipe: Pipeline, path: Path, dataset: str, mapping: Path) -> str:
    """`cryptoflow ingest` as a user runs it (the extractor's NATS identity); its output."""
    done = subprocess.run(
        [sys.executable, "-m", "cryptoflow_cli.main", "ingest", str(path), "--dataset", dataset, "--mapping", str(mapping)],
        env=pipe.env("extractor"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def test_a_candle_file_with_bad_rows_loads_its_good_rows_quarantines_the_rest_and_loads_once(
    file_pipeline: Pipeline,
) -> None:
    pipe = file_pipeline
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    candles = [line.split(",") for line in FIXTURE.read_text().splitlines()[:GOOD_ROWS]]
    lines = ["open_time,o,h,l,c,v"] + [f"{iso(int(c[0]))},{','.join(c[1:6])}" for c in candles]
    # Bad rows, each a reason of its own, between good ones; their times are not among the good ones'.
    after = int(candles[-1][0])
    lines[10:10] = [f"{iso(after + 300_000)},abc,1,1,1,1"]  # open is not a number
    lines[20:20] = [f"{iso(after + 600_000)},1,0.5,2,1,1"]  # high below low
    lines[30:30] = ["not a time,1,1,1,1,1"]  # time unparsable
    csv = pipe.workdir / "candles.csv"
    csv.write_text("\n".join(lines) + "\n")
    mapping = pipe.workdir / "candles.yaml"
    mapping.write_text(CANDLE_MAPPING)

    out = ingest(pipe, csv, "ohlcv", mapping)
    assert f"{GOOD_ROWS + 3} rows in 1 pages published for binance ADA/BTC" in out

    async def loaded() -> bool:
        rows = await pipe.fetchval("SELECT count(*) FROM ohlcv", default=0)
        quarantined = await pipe.fetchval("SELECT count(*) FROM quarantine", default=0)
        return rows == GOOD_ROWS and quarantined == 3

    await pipe.wait_for("the file's good rows loaded and its bad ones quarantined", loaded, timeout=90)
    rows = await pipe.fetch(
        "SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts, open, high, low, close, volume FROM ohlcv "
        "WHERE exchange = 'binance' AND symbol = 'ADA/BTC' AND timeframe = '5m' ORDER BY ts"
    )
    assert [tuple(r.values()) for r in rows] == [(int(c[0]), *map(float, c[1:6])) for c in candles]
    reasons = await pipe.fetch("SELECT reason, row_data FROM quarantine ORDER BY reason")
    # A value that does not parse is null in the row read (`null_field`), as for an exchange's page.
    assert sorted(r["reason"] for r in reasons) == ["high_below_open_close", "null_field", "null_field"]

    async def snapshot() -> tuple[list[tuple[object, ...]], ...]:
        await pipe.wait_for("the pipeline drained", lambda: pipe.drained(CONSUMERS), timeout=60)
        tables = (
            "SELECT ts, open, high, low, close, volume, version, loaded_at, batch_id FROM ohlcv ORDER BY ts",
            "SELECT quarantine_key, row_no, reason, row_data::text, loaded_at FROM quarantine ORDER BY 1, 2",
            "SELECT batch_id, rows_inserted, rows_updated, loaded_at FROM batches ORDER BY batch_id",
        )
        return tuple([[tuple(r.values()) for r in await pipe.fetch(sql)] for sql in tables])

    before = await snapshot()
    again = ingest(pipe, csv, "ohlcv", mapping)
    assert f"{GOOD_ROWS + 3} rows in 1 pages published" in again
    assert await snapshot() == before


async def test_a_parquet_trade_file_names_markets_in_columns_and_an_unknown_exchange_is_dead_lettered(
    file_pipeline: Pipeline,
) -> None:
    pipe = file_pipeline
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    t0 = 1_704_067_200_000_000  # µs
    trades = pl.DataFrame(
        {
            "time_us": [t0 + i * 1_500_000 for i in range(9)],
            "trade_id": [str(100 + i) for i in range(9)],
            "price": [42_000.5 + i for i in range(9)],
            "qty": [0.01 * (i + 1) for i in range(9)],
            "side": ["BUY", "SELL", "buy"] * 3,
            "venue": ["binance", "kraken", "nowhere"] * 3,
            "pair": ["BTC/USDT", "BTC/USD", "BTC/USDT"] * 3,
        }
    )
    path = pipe.workdir / "trades.parquet"
    trades.write_parquet(path)
    mapping = pipe.workdir / "trades.yaml"
    mapping.write_text(TRADE_MAPPING)

    out = ingest(pipe, path, "trades", mapping)
    assert "6 rows in 2 pages published for binance BTC/USDT, kraken BTC/USD" in out
    assert "3 rows could not be published" in out

    async def loaded() -> bool:
        return await pipe.fetchval("SELECT count(*) FROM trades", default=0) == 6

    await pipe.wait_for("the known exchanges' trades loaded", loaded, timeout=90)
    rows = await pipe.fetch(
        "SELECT exchange, symbol, trade_id, (extract(epoch FROM ts) * 1000)::bigint AS ts, price, amount, side "
        "FROM trades ORDER BY trade_id"
    )
    expected = [
        (
            row["venue"],
            row["pair"],
            row["trade_id"],
            row["time_us"] // 1000,
            row["price"],
            row["qty"],
            row["side"].lower(),
        )
        for row in trades.to_dicts()
        if row["venue"] != "nowhere"
    ]
    assert [tuple(r.values()) for r in rows] == expected
    letters = [m for m in await pipe.stream_messages("DLQ") if b"UnpublishableRows" in m.data]
    assert len(letters) == 1 and b"'nowhere' is not a ccxt exchange id" in letters[0].data
