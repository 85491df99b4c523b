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
WINDOW_MIN = 20
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


async def test_up_with_replicas_of_every_stage_loads_what_the_simulator_served_and_status_shows_the_owners(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    log = tmp_path / "up.log"
    since = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    proc = launch_up(
        home,
        log,
        "--exchanges", ",".join(EXCHANGES), "--symbols", ",".join(SYMBOLS), "--since", since.isoformat(),
        "--datasets", "ohlcv,ticker",
        "--replicas", "extractor=2,transformer=2,warehouse-loader=2",
    )  # fmt: skip
    try:
        stack = wait_for_stack(home, proc, log, timeout=150)
        services = stack["services"]
        assert isinstance(services, dict)
        assert {
            "extractor",
            "extractor-1",
            "transformer",
            "transformer-1",
            "warehouse-loader",
            "warehouse-loader-1",
        } <= set(services), services
        database_url = str(stack["database_url"])
        start = int(since.timestamp() * 1000)
        end = start + WINDOW_MIN * 60_000
        market = RandomWalkMarket(list(SYMBOLS), SIM_SEED, start)
        now = int(time.time() * 1000)
        for exchange in EXCHANGES:
            for symbol in SYMBOLS:
                served = market.klines(symbol.replace("/", ""), INTERVALS["1m"], KlineWindow(start, end, 1000), now)
                expected = [
                    (k.open_time, *(float(v) for v in (k.open, k.high, k.low, k.close, k.volume)))
                    for k in served
                    if k.open_time < end
                ]
                assert len(expected) == WINDOW_MIN
                deadline = time.monotonic() + 90
                got: list[tuple[object, ...]] = []
                while time.monotonic() < deadline:
                    got = await warehouse_candles(database_url, exchange, symbol, start, end)
                    if len(got) >= WINDOW_MIN:
                        break
                    await asyncio.sleep(0.5)
                assert checksum(got) == checksum(expected), (exchange, symbol, got[:2], expected[:2])

        jobs = len(EXCHANGES) * len(SYMBOLS) * 2  # ohlcv 1m and ticker
        # Two replicas starting together: the first to look takes every job, and hands half of
        # them over on its next lease round (TTL/5) once it sees the other.
        deadline = time.monotonic() + 30
        while True:
            output = cryptoflow_status(home)
            held = dict(re.findall(r"^\s+(extractor-\d)\s+(\d+) jobs:", output, re.M))
            if held == {"extractor-0": str(jobs // 2), "extractor-1": str(jobs // 2)} or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert f"extractor replicas ({jobs} jobs leased):" in output, output
        assert held == {"extractor-0": str(jobs // 2), "extractor-1": str(jobs // 2)}, output
    finally:
        stop_up(proc, log)
