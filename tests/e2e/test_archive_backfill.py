"""`cryptoflow-extractor backfill --source binance-archive` through the whole pipeline.

The simulator serves data.binance.vision's tree built from its candles. A random walk's last months
come from monthly zips, this month's daily zips and REST for today, joined with no gap and no
overlap; a backfill killed mid-archive resumes without reading a finished zip again. (Recorded
candles from the archive tree, value for value with their holes as known gaps: test_up_archive.)
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from cryptoflow_exchange_sim import INTERVALS, KlineWindow, RandomWalkMarket

from .harness import Pipeline

FIXTURES = Path(__file__).parent.parent / "fixtures" / "candles" / "binance"
DAY_MS = 86_400_000
FIVE_MIN = 300_000


def backfill(pipe: Pipeline, symbols: str, timeframe: str, start: int, end: int) -> subprocess.Popen[bytes]:
    log = open(pipe.workdir / "backfill.log", "ab")
    return subprocess.Popen(
        [
            sys.executable, "-m", "cryptoflow_extractor.main", "backfill", "--source", "binance-archive",
            "--symbols", symbols, "--timeframe", timeframe, "--from", iso(start), "--to", iso(end),
        ],
        env=pipe.env("extractor"), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def backfill_log(pipe: Pipeline) -> str:
    return (pipe.workdir / "backfill.log").read_text()


async def rows_of(pipe: Pipeline, symbol: str, timeframe: str) -> list[tuple[object, ...]]:
    rows = await pipe.fetch(
        "SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume FROM ohlcv "
        "WHERE exchange = 'binance' AND symbol = $1 AND timeframe = $2 ORDER BY ts",
        symbol,
        timeframe,
    )
    return [tuple(r.values()) for r in rows]


async def test_monthly_daily_and_rest_join_without_gap_or_overlap_and_a_killed_run_resumes_by_file(
    file_pipeline: Pipeline,
) -> None:
    pipe = file_pipeline
    now = int(time.time() * 1000)
    this_month = datetime.fromtimestamp(now / 1000, UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    # From two months back: two monthly zips, this month's ended days, then REST for today.
    year, month = (
        (this_month.year, this_month.month - 2)
        if this_month.month > 2
        else (this_month.year - 1, this_month.month + 10)
    )
    start = int(this_month.replace(year=year, month=month).timestamp() * 1000)
    end = (now - 10 * 60_000) // FIVE_MIN * FIVE_MIN
    # The second month's zip is not there, nor its 15th day's: the month is read by day, that day by REST.
    second_month = datetime.fromtimestamp(start / 1000, UTC).replace(month=month % 12 + 1, year=year + (month == 12))
    missing_day = second_month.replace(day=15).date()
    faults = [f"missing:BTCUSDT-5m-{second_month:%Y-%m}.zip", f"missing:BTCUSDT-5m-{missing_day}.zip"]
    pipe.start_simulator(
        ["--symbols", "BTC/USDT", "--seed", "9", "--start", str(start)]
        + [arg for fault in faults for arg in ("--archive-fault", fault)]
    )
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    assert pipe.sim_url

    async def zip_requests() -> dict[str, int]:
        async with aiohttp.ClientSession() as http, http.get(f"{pipe.sim_url}/_sim/archive_faults") as response:
            body = await response.json()
        return {name: n for name, n in body["requests"].items() if name.endswith(".zip")}

    first = backfill(pipe, "BTC/USDT", "5m", start, end)

    async def second_month_started() -> bool:
        # The second zip asked for: the first is loaded and checkpointed.
        return len(await zip_requests()) >= 2

    await pipe.wait_for("the second archive file", second_month_started, interval=0.02, timeout=120)
    first.kill()
    first.wait(10)
    before = await zip_requests()
    finished = sorted(before)[0]
    second = backfill(pipe, "BTC/USDT", "5m", start, end)
    assert second.wait(300) == 0, backfill_log(pipe)[-3000:]
    after = await zip_requests()
    assert after[finished] == before[finished] == 1, f"{finished} was read again: {after}"
    log = backfill_log(pipe)
    # The finished file (and any other the kill came too late to interrupt) was skipped, unread.
    skipped = next((line for line in log.splitlines() if line.startswith("archive files skipped: ")), "")
    assert finished in skipped, log[-3000:]

    walk = RandomWalkMarket(["BTC/USDT"], 9, start)
    served = walk.klines("BTCUSDT", INTERVALS["5m"], KlineWindow(start, end, 10**9), now)
    expected = [
        (k.open_time, float(k.open), float(k.high), float(k.low), float(k.close), float(k.volume)) for k in served
    ]
    assert expected[-1][0] == end and len(expected) == (end - start) // FIVE_MIN + 1

    async def complete() -> bool:
        return await pipe.ohlcv_count() >= len(expected)

    await pipe.wait_for(f"{len(expected)} candles in ohlcv", complete, timeout=180)
    assert await rows_of(pipe, "BTC/USDT", "5m") == expected
    # Today's candles came by REST, the rest from the archives.
    stats = await pipe.simulator_stats()
    assert stats.get("requests", {}).get("binance.ohlcv", 0) >= 1, stats
    # No gap in the data; the day the archive lacks is recorded as such, in source_coverage.
    assert await pipe.fetchval("SELECT count(*) FROM known_gaps WHERE kind = 'no_records'") == 0
    coverage = await pipe.fetch(
        "SELECT archive_missing_days, archive_missing_dates, known_gaps, first_ts, last_ts FROM source_coverage "
        "WHERE source = 'binance' AND asset = 'BTC/USDT' AND dataset = 'ohlcv' AND timeframe = '5m'"
    )
    assert [tuple(row.values()) for row in coverage] == [
        (1, [missing_day], 0, datetime.fromtimestamp(start / 1000, UTC), datetime.fromtimestamp(end / 1000, UTC))
    ]
