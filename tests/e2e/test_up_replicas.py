"""`cryptoflow up --replicas`: several processes per stage; the warehouse's candles have the same
checksum as the simulator's (so as any single-replica run's), and `status` shows which extractor
replica holds which job (issue 11)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptoflow_exchange_sim import INTERVALS, KlineWindow, RandomWalkMarket

from .harness import S3_ENV
from .test_cryptoflow_up import stop_up, wait_for_stack
from .test_up_supervision import launch_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

EXCHANGES = ("binance", "gate")
SYMBOLS = ("BTC/USDT", "ETH/USDT")
QUARTER = 15 * 60_000
SIM_SEED = 42  # the simulator's default: `up` does not pass one


def checksum(rows: list[tuple[object, ...]]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


async def warehouse_candles(
    database_url: str, exchange: str, symbol: str, start: int, end: int
) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume FROM ohlcv "
            "WHERE exchange = $1 AND symbol = $2 AND timeframe = '1m' AND ts >= to_timestamp($3 / 1000.0) "
            "AND ts < to_timestamp($4 / 1000.0) ORDER BY ts",
            exchange,
            symbol,
            start,
            end,
        )
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()
    return [tuple(r.values()) for r in rows]


def cryptoflow_status(home: Path) -> str:
    status = subprocess.run(
        [sys.executable, "-m", "cryptoflow_cli.main", "status"],
        env={
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL", "S3_ENDPOINT_URL")},
            **S3_ENV,
            "CRYPTOFLOW_HOME": str(home),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    return status.stdout


async def warehouse_checksums(database_url: str, start: int, end: int) -> dict[str, str]:
    """Checksums of what is final in [start, end): 1m candles and the 5m and 15m ones resampled
    from them, and the 1m indicators; every value column, no bookkeeping (batch ids, load times,
    event ids, which differ from run to run)."""
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        if not await conn.fetchval("SELECT to_regclass('public.indicators') IS NOT NULL"):
            return {}  # not migrated yet
        window = "ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)"
        candles = await conn.fetch(
            "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume, quote_volume, trade_count, "
            "taker_buy_base_volume, taker_buy_quote_volume, resampled, final FROM ohlcv "
            f"WHERE timeframe IN ('1m', '5m', '15m') AND {window} ORDER BY 1, 2, 3, 4",
            start,
            end,
        )
        indicators = await conn.fetch(
            "SELECT exchange, symbol, timeframe, ts, rsi_14, macd, macd_signal, macd_hist, bb_mid, bb_upper, "
            f"bb_lower, vwap FROM indicators WHERE timeframe = '1m' AND {window} ORDER BY 1, 2, 3, 4",
            start,
            end,
        )
    finally:
        await conn.close()
    return {
        "ohlcv": checksum([tuple(r.values()) for r in candles]),
        "ohlcv_rows": str(len(candles)),
        "indicators": checksum([tuple(r.values()) for r in indicators]),
        "indicator_rows": str(len(indicators)),
    }


async def run_stack(tmp_path: Path, name: str, since: datetime, *options: str) -> tuple[dict[str, str], str]:
    """`cryptoflow up` over EXCHANGES × SYMBOLS from `since`; once the window is loaded and final:
    its checksums, and `cryptoflow status` (then the stack is stopped)."""
    home = tmp_path / name / "home"
    log = tmp_path / f"{name}.log"
    proc = launch_up(
        home,
        log,
        "--exchanges", ",".join(EXCHANGES), "--symbols", ",".join(SYMBOLS), "--since", since.isoformat(),
        "--timeframes", "1m", "--datasets", "ohlcv,ticker",
        *options,
    )  # fmt: skip
    try:
        stack = wait_for_stack(home, proc, log, timeout=150)
        database_url = str(stack["database_url"])
        start, end = window(since)
        series = len(EXCHANGES) * len(SYMBOLS)
        # 15 1m candles, 3 of 5m, 1 of 15m per series, all final; 15 1m indicator rows per series.
        expected_rows = {"ohlcv_rows": str(series * 19), "indicator_rows": str(series * 15)}
        deadline = time.monotonic() + 90
        while True:
            sums = await warehouse_checksums(database_url, start, end)
            if all(sums.get(k) == v for k, v in expected_rows.items()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert {k: sums.get(k) for k in expected_rows} == expected_rows, (sums, log.read_text()[-3000:])
        market = RandomWalkMarket(list(SYMBOLS), SIM_SEED, int(since.timestamp() * 1000))
        now = int(time.time() * 1000)
        for exchange in EXCHANGES:
            for symbol in SYMBOLS:
                served = market.klines(symbol.replace("/", ""), INTERVALS["1m"], KlineWindow(start, end, 1000), now)
                expected = [
                    (k.open_time, *(float(v) for v in (k.open, k.high, k.low, k.close, k.volume)))
                    for k in served
                    if k.open_time < end
                ]
                got = await warehouse_candles(database_url, exchange, symbol, start, end)
                assert checksum(got) == checksum(expected), (exchange, symbol, got[:2], expected[:2])
        return sums, await owners_in_status(home, options)
    finally:
        stop_up(proc, log)


async def owners_in_status(home: Path, options: tuple[str, ...]) -> str:
    """`cryptoflow status` once the extractor replicas have balanced their jobs (two starting
    together: the first to look takes every job and hands half over on its next lease round)."""
    replicas = 2 if "extractor=2" in " ".join(options) else 1
    jobs = len(EXCHANGES) * len(SYMBOLS) * 2  # ohlcv 1m and ticker
    balanced = {f"extractor-{i}": str(jobs // replicas) for i in range(replicas)}
    deadline = time.monotonic() + 30
    while True:
        output = cryptoflow_status(home)
        held = dict(re.findall(r"^\s+(extractor-\d)\s+(\d+) jobs:", output, re.M))
        if held == balanced or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert f"extractor replicas ({jobs} jobs leased):" in output, output
    assert held == balanced, output
    return output


def window(since: datetime) -> tuple[int, int]:
    """The first whole quarter hour after `since`: closed by the time the stack is up."""
    since_ms = int(since.timestamp() * 1000)
    start = -(-since_ms // QUARTER) * QUARTER
    return start, start + QUARTER


async def test_up_with_replicas_of_every_stage_loads_the_same_warehouse_as_single_replicas(tmp_path: Path) -> None:
    """The same stack twice, from the same `since` (so the same simulated market): once with one
    process per stage, once with `--replicas extractor=2,transformer=2,warehouse-loader=2`. The
    final candles (native and resampled) and indicators of a closed window have the same checksums,
    and both equal the simulator's candles; `status` shows which replica holds which job."""
    since = (datetime.now(UTC) - timedelta(minutes=35)).replace(second=0, microsecond=0)
    assert window(since)[1] <= int(time.time() * 1000) - 60_000, "the window must be closed"
    single, single_status = await run_stack(tmp_path, "single", since)
    replicated, replicated_status = await run_stack(
        tmp_path, "replicas", since, "--replicas", "extractor=2,transformer=2,warehouse-loader=2"
    )
    assert replicated == single
    assert "extractor-0" in single_status and "extractor-1" in replicated_status
