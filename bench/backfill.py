"""Backfill benchmark: our extractor vs the simulator's own raw serving rate, same run.

30 days of 1m candles for 3 symbols (~130k candles) on one exchange:
  1. raw:      page the simulator's klines endpoint directly with aiohttp (no ccxt, no NATS);
  2. extract:  `cryptoflow-extractor backfill` (ccxt, validation, drift checks, JetStream publish,
               KV checkpoints) with the rate limiter at 1 ms, since the simulator imposes none;
  3. loaded:   then the same candles from RAW through lake-writer, transformer and loader into
               PostgreSQL (started after extraction, so each phase has the machine to itself).
The figure is extract/raw (candles/s over candles/s); the issue asks for ≥ 0.5.

    uv run python bench/backfill.py [--days 30] [--symbols BTC/USDT,ETH/USDT,SOL/USDT]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
from cryptoflow_cli.processes import SERVICE_MODULES
from cryptoflow_cli.servers import free_port, start_nats, start_postgres

MINUTE = 60_000


async def raw_rate(base_url: str, market_ids: list[str], start_ms: int, end_ms: int) -> tuple[int, float]:
    candles = 0
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for market_id in market_ids:
            since = start_ms
            while since <= end_ms:
                params = {"symbol": market_id, "interval": "1m", "startTime": since, "endTime": end_ms, "limit": 1000}
                async with session.get(f"{base_url}/api/v3/klines", params=params) as response:
                    page = await response.json()
                if not page:
                    break
                candles += len(page)
                since = page[-1][0] + MINUTE
    return candles, time.perf_counter() - started


def spawn(module: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=out, stderr=subprocess.STDOUT)


async def wait_rows(database_url: str, expected: int, timeout_s: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            conn = await asyncpg.connect(database_url)
            try:
                if await conn.fetchval("SELECT count(*) FROM ohlcv") >= expected:
                    return time.perf_counter() - started
            finally:
                await conn.close()
        except (OSError, asyncpg.UndefinedTableError):
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"ohlcv did not reach {expected} rows in {timeout_s}s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--symbols", default="BTC/USDT,ETH/USDT,SOL/USDT")
    args = parser.parse_args()
    symbols = args.symbols.split(",")
    end = datetime(2024, 3, 1, tzinfo=UTC)
    start = end - timedelta(days=args.days)
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000) - MINUTE
    expected = len(symbols) * ((end_ms - start_ms) // MINUTE + 1)

    with tempfile.TemporaryDirectory(prefix="cryptoflow-bench-") as tmp:
        home = Path(tmp)
        nats = start_nats(home / "nats")
        postgres = start_postgres(home / "pg")
        procs: list[subprocess.Popen[bytes]] = []
        try:
            url_file = home / "sim.url"
            env = {**os.environ, "NATS_URL": nats.url, "DATABASE_URL": postgres.url, "LAKE_URL": f"file://{home}/lake"}
            sim_args = ["--symbols", ",".join(symbols), "--start", start.isoformat(), "--end", end.isoformat(),
                        "--port", str(free_port()), "--url-file", str(url_file)]  # fmt: skip
            procs.append(spawn(SERVICE_MODULES["exchange-sim"], sim_args, env, home / "sim.log"))
            while not url_file.exists():  # noqa: ASYNC110 - a file written by another process
                await asyncio.sleep(0.05)
            sim_url = url_file.read_text().strip()

            raw_candles, raw_s = await raw_rate(sim_url, [s.replace("/", "") for s in symbols], start_ms, end_ms)
            assert raw_candles == expected, (raw_candles, expected)

            env |= {
                "EXTRACTOR_EXCHANGE_URL": sim_url,
                "EXTRACTOR_RATE_LIMIT_MS": "1",
                "EXTRACTOR_SYMBOLS": ",".join(symbols),
            }
            backfill_args = ["backfill", "--timeframe", "1m", "--from", start.isoformat(),
                             "--to", datetime.fromtimestamp(end_ms / 1000, UTC).isoformat()]  # fmt: skip
            started = time.perf_counter()
            backfill = spawn("cryptoflow_extractor.main", backfill_args, env, home / "backfill.log")
            if backfill.wait() != 0:
                raise RuntimeError((home / "backfill.log").read_text()[-3000:])
            extract_s = time.perf_counter() - started
            # Downstream starts after extraction, so each phase has both cores to itself.
            started = time.perf_counter()
            for name in ("warehouse-loader", "transformer", "lake-writer"):
                procs.append(spawn(SERVICE_MODULES[name], [], env, home / f"{name}.log"))
            load_s = await wait_rows(postgres.url, expected, timeout_s=600)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            postgres.stop()
            nats.stop()

    raw = raw_candles / raw_s
    extracted = expected / extract_s
    loaded = expected / load_s
    print(f"{'path':<34}{'candles':>10}{'seconds':>10}{'candles/s':>12}")
    print(f"{'simulator raw serving (aiohttp)':<34}{raw_candles:>10}{raw_s:>10.2f}{raw:>12,.0f}")
    print(f"{'extractor backfill (to JetStream)':<34}{expected:>10}{extract_s:>10.2f}{extracted:>12,.0f}")
    print(f"{'RAW to PostgreSQL (3 services)':<34}{expected:>10}{load_s:>10.2f}{loaded:>12,.0f}")
    print(
        f"backfill_vs_raw={extracted / raw:.2f} loaded_vs_raw={loaded / raw:.2f} backfill_candles_per_s={extracted:.0f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
