"""Archive benchmark: a year of 1m candles for 5 symbols from the simulated data.binance.vision tree.

One run, real nats-server and PostgreSQL from their wheels, a file:// lake, the simulator as its own
process (a random walk over 2023, closed: every month's zip exists; each zip is built once and
requested once before timing, so the simulator's candle generation is not measured):

1. unzip + read_csv: the 60 zips downloaded, then `zipfile` + `polars.read_csv` of each, in this
   process: what reading the files costs with nothing else (the floor for any archive loader;
   neither the downloads nor `import polars` counted);
2. archive extraction: `cryptoflow-extractor backfill --source binance-archive` into a NATS server
   of its own with nothing downstream: candles acknowledged by JetStream (downloaded, checksums
   verified, bronze kept) per second of the command's work, as its final progress line states it
   (from markets loaded to the last ack: the ~2-3 s of interpreter start and imports, the same
   for any size of backfill, are left out as the floor leaves out its own; the command's whole
   wall time is logged beside it);
3. REST extraction: `cryptoflow-extractor backfill` (ccxt, pages of 1000) of the same candles
   against the same simulator, measured the same way, each run into a server of its own: once
   first to fill the simulator's cache (it then answers every page from it, as it answers the
   zips: neither side times the simulator's candle generation); then unthrottled (rate limiter at
   1 ms: faster than Binance allows, logged for the record); then the baseline, as fast as Binance
   allows: its request-weight budget of 6,000 a minute, a 1000-candle klines request weighing 2,
   is one request per 20 ms (at most 50,000 candles a second);
4. archive end to end: the archive backfill again, into the pipeline's NATS server with the lake
   writer, transformer and loader running, until every candle is a warehouse row (by count): the
   command's wall time plus the wait for the last row.

    uv run python bench/archive.py [--symbols 5] [--months 12]      # or: make bench BENCH=archive

Last line: `archive_candles_per_s=… archive_vs_rest=… archive_vs_unzip_read_csv=…`: the end-to-end
archive rate (4), and the archive extraction rate (2) over REST's at Binance's limit (3) and over
unzip + read_csv (1); the ratio over unthrottled REST is logged before it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import nats
import polars as pl
from cryptoflow_cli.processes import SERVICE_MODULES
from cryptoflow_cli.servers import free_port, start_nats, start_postgres
from cryptoflow_runtime.jetstream import ensure_streams

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.support import PG_SETTINGS, ServiceProc, check_alive, fetch, log, spawn_service

MINUTE = 60_000
# Binance's REQUEST_WEIGHT budget (6,000 a minute) over a klines request's weight (2): ms a request.
WEIGHT_PER_MINUTE_MS = 60_000 * 2 // 6_000
START = datetime(2023, 1, 1, tzinfo=UTC)
END = datetime(2024, 1, 1, tzinfo=UTC)


def months(count: int) -> list[str]:
    return [f"{START.year + (START.month - 1 + i) // 12}-{(START.month - 1 + i) % 12 + 1:02d}" for i in range(count)]


async def download(sim_url: str, market_ids: list[str], labels: list[str]) -> dict[str, bytes]:
    zips: dict[str, bytes] = {}
    async with aiohttp.ClientSession() as http:
        for market_id in market_ids:
            for label in labels:
                name = f"{market_id}-1m-{label}.zip"
                async with http.get(f"{sim_url}/data/spot/monthly/klines/{market_id}/1m/{name}") as response:
                    response.raise_for_status()
                    zips[name] = await response.read()
    return zips


def unzip_read_csv(zips: dict[str, bytes]) -> tuple[int, float]:
    started = time.perf_counter()
    rows = 0
    for content in zips.values():
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            member = archive.read(archive.namelist()[0])
        rows += pl.read_csv(io.BytesIO(member), has_header=False).height
    return rows, time.perf_counter() - started


def start_simulator(home: Path, symbols: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    url_file = home / "sim.url"
    sim_args = ["--symbols", ",".join(symbols), "--start", START.isoformat(), "--end", END.isoformat(),
                "--cache-closed", "--port", str(free_port()), "--url-file", str(url_file)]  # fmt: skip
    with open(home / "sim.log", "ab") as out:
        sim = subprocess.Popen(
            [sys.executable, "-m", SERVICE_MODULES["exchange-sim"], *sim_args], stdout=out, stderr=out
        )
    deadline = time.monotonic() + 30
    while not url_file.exists():
        if sim.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((home / "sim.log").read_text()[-2000:])
        time.sleep(0.05)
    return sim, url_file.read_text().strip()


# The backfill's final progress line: `[###…] 100.0% done/total candles rate/s in 1.23s`.
_FINAL_PROGRESS = re.compile(r"(\d+)/(\d+) candles [\d,]+/s in ([\d.]+)s")


def run_backfill(env: dict[str, str], home: Path, name: str, args: list[str]) -> tuple[float, float]:
    """The command's wall time and its own working time (its final progress line), seconds."""
    started = time.perf_counter()
    with open(home / f"{name}.log", "ab") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "cryptoflow_extractor.main", "backfill", *args], env=env, stdout=out, stderr=out
        )
    wall = time.perf_counter() - started
    text = (home / f"{name}.log").read_text()
    if proc.returncode != 0:
        raise RuntimeError(text[-3000:])
    finals = _FINAL_PROGRESS.findall(text)
    if not finals or finals[-1][0] != finals[-1][1]:
        raise RuntimeError(f"{name}: no complete final progress line in its output: {text[-1000:]}")
    return wall, float(finals[-1][2])


async def backfill_alone(env: dict[str, str], home: Path, name: str, args: list[str]) -> tuple[float, float]:
    """`run_backfill` into a NATS server of its own (fresh checkpoints), stopped after."""
    server = await asyncio.to_thread(start_nats, home / f"nats-{name}")
    try:
        nc = await nats.connect(server.url)
        await ensure_streams(nc.jetstream())
        await nc.close()
        return run_backfill({**env, "NATS_URL": server.url}, home, name, args)
    finally:
        server.stop()


async def wait_rows(db_url: str, expected: int, timeout_s: float = 1800) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            rows = await fetch(db_url, "SELECT count(*) AS n FROM ohlcv")
            if int(rows[0]["n"]) >= expected:
                return time.perf_counter() - started
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"ohlcv did not reach {expected} rows in {timeout_s}s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=int(os.environ.get("ARCHIVE_SYMBOLS", 5)))
    parser.add_argument("--months", type=int, default=int(os.environ.get("ARCHIVE_MONTHS", 12)))
    args = parser.parse_args()
    symbols = [f"A{i:02d}/USDT" for i in range(args.symbols)]
    market_ids = [s.replace("/", "") for s in symbols]
    labels = months(args.months)
    end = datetime.fromisoformat(labels[-1] + "-01T00:00:00+00:00")
    end_ms = int(end.replace(month=end.month % 12 + 1, year=end.year + end.month // 12).timestamp() * 1000) - MINUTE
    start_ms = int(START.timestamp() * 1000)
    expected = len(symbols) * ((end_ms - start_ms) // MINUTE + 1)
    home = Path(tempfile.mkdtemp(prefix="cryptoflow-bench-archive-"))
    nats_server = await asyncio.to_thread(start_nats, home / "nats")
    postgres = await asyncio.to_thread(start_postgres, home / "pg", settings=PG_SETTINGS)
    procs: list[ServiceProc] = []
    sim: subprocess.Popen[bytes] | None = None
    try:
        nc = await nats.connect(nats_server.url)
        await ensure_streams(nc.jetstream())
        await nc.close()
        sim, sim_url = start_simulator(home, symbols)

        log(f"{len(symbols)} symbols x {len(labels)} months of 1m candles ({expected:,} candles)")
        zips = await download(sim_url, market_ids, labels)  # also builds (and caches) every zip
        csv_rows, csv_s = unzip_read_csv(zips)
        assert csv_rows == expected, (csv_rows, expected)
        log(f"  unzip + polars.read_csv: {csv_s:.2f}s ({csv_rows / csv_s:,.0f} candles/s)")

        env = {
            **os.environ,
            "NATS_URL": nats_server.url,
            "DATABASE_URL": postgres.url,
            "LAKE_URL": f"file://{home / 'lake'}",
            "EXTRACTOR_EXCHANGE_URL": sim_url,
            "EXTRACTOR_RATE_LIMIT_MS": "1",
            "EXTRACTOR_SYMBOLS": ",".join(symbols),
        }
        window = ["--timeframe", "1m", "--from", START.isoformat(),
                  "--to", datetime.fromtimestamp(end_ms / 1000, UTC).isoformat()]  # fmt: skip
        # Extraction alone (archive and REST): each run into a server nothing consumes from.
        archive_wall, archive_s = await backfill_alone(env, home, "archive", ["--source", "binance-archive", *window])
        log(f"  archive backfill to JetStream: {archive_s:.2f}s ({expected / archive_s:,.0f} candles/s; "
            f"the command {archive_wall:.2f}s)")  # fmt: skip
        # The same REST backfill once before, into a server of its own: the simulator answers a
        # page it has answered before from its cache, as it does the zips, so neither side times
        # the simulator's candle generation (~66 ms a page of 1000 the first time).
        await backfill_alone(env, home, "rest-warm", window)
        # REST as fast as the simulator answers (faster than Binance allows), for the record...
        fastest_wall, fastest_s = await backfill_alone(env, home, "rest-unthrottled", window)
        log(f"  REST backfill, unthrottled (not allowed by Binance): {fastest_s:.2f}s "
            f"({expected / fastest_s:,.0f} candles/s; the command {fastest_wall:.2f}s)")  # fmt: skip
        # ...and as fast as Binance allows, the baseline: its request-weight budget, 6,000 a minute,
        # of which a 1000-candle klines request weighs 2 (the simulator's exchangeInfo and weights):
        # one request per 20 ms, 50,000 candles a second at most.
        limited = {**env, "EXTRACTOR_RATE_LIMIT_MS": str(WEIGHT_PER_MINUTE_MS)}
        rest_wall, rest_s = await backfill_alone(limited, home, "rest", window)
        log(f"  REST backfill at Binance's weight limit: {rest_s:.2f}s ({expected / rest_s:,.0f} candles/s; "
            f"the command {rest_wall:.2f}s)")  # fmt: skip

        for name in ("warehouse-loader", "transformer", "lake-writer"):
            procs.append(spawn_service(name, env, home))
        await asyncio.sleep(3)
        check_alive(procs)
        started = time.perf_counter()
        run_backfill(env, home, "archive-e2e", ["--source", "binance-archive", *window])
        loaded_s = (time.perf_counter() - started) + await wait_rows(postgres.url, expected)
        log(f"  archive to warehouse rows (the command and the pipeline): {loaded_s:.2f}s "
            f"({expected / loaded_s:,.0f} candles/s)")  # fmt: skip
        check_alive(procs)
    finally:
        for proc in procs:
            proc.stop()
        if sim is not None:
            sim.terminate()
            sim.wait(30)
        nats_server.stop()
        postgres.stop()
    archive_rate = expected / archive_s
    log(f"  archive over unthrottled REST: {archive_rate / (expected / fastest_s):.1f}x")
    print(
        f"archive_candles_per_s={expected / loaded_s:.0f} archive_vs_rest={archive_rate / (expected / rest_s):.1f} "
        f"archive_vs_unzip_read_csv={archive_rate / (csv_rows / csv_s):.2f}",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
