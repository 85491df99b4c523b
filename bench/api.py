"""`make bench BENCH=api`: the read API against PostgreSQL's own COPY.

A warehouse of ROWS (default 1M) one-minute candles of one series, loaded by the loader's code into
a PostgreSQL of our own (durable settings; or DATABASE_URL's server); the API runs as its own
process (uvicorn, as deployed) reading as a cryptoflow_reader login.

* the whole range as Arrow IPC and as JSON, read to the end by one client, against `COPY (SELECT
  the same columns of the same rows) TO STDOUT` read by asyncpg (best of 3 each, rows/s);
* a one-day 1m range (1,440 rows, JSON) requested by 50 concurrent clients: p50/p99 latency of
  the whole response.

Last line: `api_arrow_vs_copy=… api_json_rows_per_s=… api_p99_ms=…` (aim: Arrow ≥ 0.5× COPY).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import polars as pl
import pyarrow as pa
from cryptoflow_api import create_key
from cryptoflow_cli.processes import SERVICE_MODULES
from cryptoflow_cli.servers import free_port
from cryptoflow_warehouse_loader.migrations import migrate
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.loader import batch_event, candles, database
from bench.support import log, percentile

ROWS = int(os.environ.get("ROWS", "1000000"))
CLIENTS = int(os.environ.get("API_CLIENTS", "50"))
REQUESTS_PER_CLIENT = int(os.environ.get("API_REQUESTS_PER_CLIENT", "20"))
REPEATS = 3
SYMBOL = "BENCH/USDT"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
PARAMS = {"exchange": "binance", "symbol": SYMBOL, "timeframe": "1m"}


async def load(url: str, rows: int) -> None:
    frame = candles(rows).with_columns(
        pl.lit(SYMBOL).alias("symbol"),
        pl.from_epoch(pl.int_range(0, rows) * 60_000 + int(T0.timestamp() * 1000), time_unit="ms")
        .dt.replace_time_zone("UTC")
        .alias("ts"),
    )
    conn = await asyncpg.connect(url)
    try:
        for n, offset in enumerate(range(0, rows, 200_000)):
            part = frame.slice(offset, 200_000)
            await load_batch(conn, TABLES["ohlcv"], part, batch_event(f"api-{n}", part.height))
        await conn.execute("VACUUM ANALYZE ohlcv_data")
    finally:
        await conn.close()


async def reader_and_key(url: str) -> tuple[str, str]:
    conn = await asyncpg.connect(url)
    try:
        name = f"bench_api_{uuid.uuid4().hex[:6]}"
        await conn.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE cryptoflow_reader')
        # A rate no client here can reach: the benchmark measures the API, not its limiter.
        _, key = await create_key(conn, "bench", rate_per_s=1e9, burst=1_000_000_000)
    finally:
        await conn.close()
    parts = urlsplit(url)
    netloc = f"{name}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl(), key


async def copy_rows_per_s(url: str) -> float:
    """COPY of the rows the API serves, as PostgreSQL writes them (text), read to the end."""
    conn = await asyncpg.connect(url)
    try:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'ohlcv' ORDER BY ordinal_position"
        )
        names = ", ".join(c["column_name"] for c in columns if c["column_name"] not in ("series_id", "batch_id"))
        series_id = await conn.fetchval("SELECT series_id FROM series WHERE symbol = $1", SYMBOL)
        query = f"SELECT {names} FROM ohlcv WHERE series_id = {int(series_id)} ORDER BY series_id, ts"
        size = 0

        async def sink(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)

        best = float("inf")
        for _ in range(REPEATS):
            started = time.perf_counter()
            await conn.copy_from_query(query, output=sink)
            best = min(best, time.perf_counter() - started)
        return ROWS / best
    finally:
        await conn.close()


def read_range(base: str, key: str, fmt: str) -> float:
    """Rows/s of the whole range in `fmt`, read to the end and decoded (best of 3)."""
    best = float("inf")
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
        for _ in range(REPEATS):
            started = time.perf_counter()
            response = client.get("/v1/ohlcv", params={**PARAMS, "format": fmt})
            response.raise_for_status()
            if fmt == "arrow":
                rows = pa.ipc.open_stream(response.content).read_all().num_rows
            else:
                rows = response.content.count(b'"ts":')
            best = min(best, time.perf_counter() - started)
            assert rows == ROWS, f"{fmt}: {rows} rows, expected {ROWS}"
    return ROWS / best


async def latencies(base: str, key: str) -> list[float]:
    """Whole-response times of a one-day 1m range (JSON), CLIENTS clients at once."""
    day = {**PARAMS, "start": (T0 + timedelta(days=1)).isoformat(), "end": (T0 + timedelta(days=2)).isoformat()}
    times: list[float] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits
    ) as client:

        async def one_client() -> None:
            for _ in range(REQUESTS_PER_CLIENT):
                started = time.perf_counter()
                response = await client.get("/v1/ohlcv", params=day)
                response.raise_for_status()
                assert response.content.count(b'"ts":') == 1440
                times.append(time.perf_counter() - started)

        await one_client()  # warm up: first-request costs are not the steady state
        times.clear()
        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
    return times


def start_api(reader_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": reader_url,
        "NATS_URL": "nats://127.0.0.1:1",  # no live relay here: the warehouse routes only
        "API_HTTP_PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    with open(workdir / "api.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", SERVICE_MODULES["api"]], env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((workdir / "api.log").read_text()[-4000:])
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not start")


def main() -> None:
    with database() as url, tempfile.TemporaryDirectory(prefix="cryptoflow-bench-api-") as tmp:
        migrate(url)
        log(f"loading {ROWS:,} candles of one series")
        asyncio.run(load(url, ROWS))
        reader_url, key = asyncio.run(reader_and_key(url))
        proc, base = start_api(reader_url, Path(tmp))
        try:
            copy = asyncio.run(copy_rows_per_s(reader_url))
            log(f"COPY … TO STDOUT: {copy:,.0f} rows/s")
            arrow = read_range(base, key, "arrow")
            log(f"API Arrow: {arrow:,.0f} rows/s")
            json_rate = read_range(base, key, "json")
            log(f"API JSON: {json_rate:,.0f} rows/s")
            times = asyncio.run(latencies(base, key))
        finally:
            proc.terminate()
            proc.wait(30)
    p50, p99 = percentile(times, 50) * 1000, percentile(times, 99) * 1000
    print("| what | value |\n|---|---|")
    print(f"| rows | {ROWS:,} |")
    print(f"| COPY TO STDOUT (text) | {copy:,.0f} rows/s |")
    print(f"| API Arrow IPC | {arrow:,.0f} rows/s ({arrow / copy:.2f}× COPY) |")
    print(f"| API JSON | {json_rate:,.0f} rows/s ({json_rate / copy:.2f}× COPY) |")
    print(f"| one-day 1m range, {CLIENTS} clients × {REQUESTS_PER_CLIENT} | p50 {p50:.1f} ms, p99 {p99:.1f} ms |")
    print(f"api_arrow_vs_copy={arrow / copy:.2f} api_json_rows_per_s={json_rate:.0f} api_p99_ms={p99:.1f}", flush=True)


if __name__ == "__main__":
    main()
