"""`cryptoflow up --source binance-archive --sim-data DIR`: recorded candles loaded from the
simulator's archive tree into ohlcv, value for value, their real holes kept as known gaps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import aiohttp
import asyncpg
import polars as pl

from .harness import S3_ENV
from .test_cryptoflow_up import stop_up, wait_for_stack

FIXTURES = Path(__file__).parent.parent / "fixtures" / "candles" / "binance"
FILES = {("XRP/ETH", "1m"): "XRPETH-1m.csv", ("ADA/BTC", "5m"): "ADABTC-5m.csv"}


async def test_up_from_the_archives_loads_recorded_candles_value_for_value(tmp_path: Path) -> None:
    home, log = tmp_path / "home", tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LAKE_URL", "S3_ENDPOINT_URL", "NATS_URL")}
    env = {**env, **S3_ENV, "CRYPTOFLOW_HOME": str(home)}
    args = ["up", "--source", "binance-archive", "--sim-data", str(FIXTURES), "--exchanges", "binance",
            "--symbols", "XRP/ETH,ADA/BTC", "--timeframes", "1m,5m", "--datasets", "ohlcv"]  # fmt: skip
    schema = {"ts": pl.Int64, **dict.fromkeys(["open", "high", "low", "close", "volume"], pl.Float64)}
    expected = {key: pl.read_csv(FIXTURES / name, has_header=False, schema=schema) for key, name in FILES.items()}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cryptoflow_cli.main", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        stack = wait_for_stack(home, proc, log)
        conn = await asyncpg.connect(str(stack["reader_database_url"]))
        try:
            deadline = time.monotonic() + 180
            for (symbol, timeframe), frame in expected.items():
                query = (
                    "SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume FROM ohlcv "
                    "WHERE exchange = 'binance' AND symbol = $1 AND timeframe = $2 ORDER BY ts"
                )
                rows: list[tuple[object, ...]] = []
                while time.monotonic() < deadline:
                    try:
                        rows = [tuple(r.values()) for r in await conn.fetch(query, symbol, timeframe)]
                    except asyncpg.UndefinedTableError:
                        rows = []
                    if len(rows) >= frame.height:
                        break
                    time.sleep(0.5)
                assert rows == frame.rows(), (symbol, timeframe, len(rows), frame.height, log.read_text()[-3000:])
                step = 60_000 if timeframe == "1m" else 300_000
                holes = sum(1 for a, b in pairwise(frame["ts"]) if b - a != step)
                while time.monotonic() < deadline:
                    gaps = await conn.fetchval(
                        "SELECT count(*) FROM known_gaps WHERE symbol = $1 AND timeframe = $2", symbol, timeframe
                    )
                    if gaps >= holes:
                        break
                    time.sleep(0.5)
                assert gaps == holes, (symbol, timeframe, gaps, holes)
        finally:
            await conn.close()
        # From the archive tree, not from pages of the klines endpoint.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{stack['exchange_sim_url']}/_sim/archive_faults") as response:
                zips = {n for n in (await response.json())["requests"] if n.endswith(".zip")}
            async with http.get(f"{stack['exchange_sim_url']}/_sim/stats") as response:
                klines = (await response.json())["requests"].get("binance.ohlcv", 0)
        assert {"XRPETH-1m-2019-10.zip", "ADABTC-5m-2018-01.zip"} <= zips, zips
        # REST polls on from where the archives stopped: a few pages, not the thousands of candles.
        assert klines < 50, klines
    finally:
        stop_up(proc, log)
