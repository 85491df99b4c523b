"""Key benchmark: what the warehouse's primary key costs an insert, same rows, one run.

1M OHLCV-shaped rows (20 series × 50,000 minutes) inserted from an unlogged staging table into a
table with no index, the natural text key, the same key with `ts` first, and an integer series
id + `ts`. It isolates the index cost that bounded the loader against raw COPY, and chose the
warehouse's key (decision 0026).

    uv run python bench/keys.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import asyncpg
from cryptoflow_cli.servers import start_postgres

COLUMNS = (
    "exchange text, symbol text, timeframe text, series_id int, ts timestamptz, "
    "open float8, high float8, low float8, close float8, volume float8"
)
VARIANTS = {
    "no index": "",
    "PK (exchange, symbol, timeframe, ts)": "PRIMARY KEY (exchange, symbol, timeframe, ts)",
    "PK (ts, exchange, symbol, timeframe)": "PRIMARY KEY (ts, exchange, symbol, timeframe)",
    "PK (series_id int, ts)": "PRIMARY KEY (series_id, ts)",
}


async def measure(database_url: str, rows: int) -> dict[str, float]:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_keys_staging, bench_keys")
        await conn.execute(
            f"""CREATE UNLOGGED TABLE bench_keys_staging AS
            SELECT 'binance'::text AS exchange, 'SYM' || (i % 20) || '/USDT' AS symbol, '1m'::text AS timeframe,
                   (i % 20) AS series_id, timestamptz '2024-01-01' + (i / 20) * interval '1 minute' AS ts,
                   random() AS open, random() AS high, random() AS low, random() AS close, random() AS volume
            FROM generate_series(0, {int(rows) - 1}) i ORDER BY symbol, ts"""
        )
        rates = {}
        for name, key in VARIANTS.items():
            best = float("inf")
            for _ in range(2):  # best of two: the machine may be busy
                await conn.execute("DROP TABLE IF EXISTS bench_keys")
                await conn.execute(f"CREATE TABLE bench_keys ({COLUMNS}{', ' + key if key else ''})")
                started = time.perf_counter()
                await conn.execute("INSERT INTO bench_keys SELECT * FROM bench_keys_staging")
                best = min(best, time.perf_counter() - started)
            rates[name] = rows / best
        await conn.execute("DROP TABLE IF EXISTS bench_keys_staging, bench_keys")
        return rates
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=int(os.environ.get("ROWS", "1000000")))
    args = parser.parse_args()
    if url := os.environ.get("DATABASE_URL"):
        rates = await measure(url, args.rows)
    else:
        with tempfile.TemporaryDirectory(prefix="cryptoflow-bench-") as tmp:
            postgres = start_postgres(Path(tmp) / "pg")
            try:
                rates = await measure(postgres.url, args.rows)
            finally:
                postgres.stop()
    unindexed = rates["no index"]
    print(f"{'table key':<40}{'rows/s':>12}{'vs no index':>13}")
    for name, rate in rates.items():
        print(f"{name:<40}{rate:>12,.0f}{rate / unindexed:>13.2f}")
    text_key = rates["PK (exchange, symbol, timeframe, ts)"]
    print(f"series_id_key_vs_text_key={rates['PK (series_id int, ts)'] / text_key:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
