"""Extractor scale-out benchmark: 1, 2 and 3 extractor replicas sharing the same jobs (decision 0042).

One simulator process serves Binance, Bybit and Gate; SCALE_SYMBOLS (20) symbols × 3 exchanges =
60 ohlcv 1m jobs, each backfilling SCALE_DAYS (2) days of candles in pages of 1000, rate limiter at
1 ms (the simulator imposes none). For each replica count, a fresh nats-server; the replicas are
separate `python -m cryptoflow_extractor.main` processes (as `cryptoflow up --replicas
extractor=N` starts them), timed from their spawn until the candles they published (the sum of
`cryptoflow_extractor_candles_published_total` over their /metrics) reach the 1-replica run's total.
The headline ratio is of the steady rates (10 % to 90 % of the candles: without process start and
the last jobs' tail); the whole-run ratio is printed too.
Per run: CPU seconds of the replicas, the simulator and nats-server (what bounds the scaling).

    uv run python bench/extractor_scale.py      # or: make bench BENCH=extractor-scale

Last line: `extractor_scale_2x=… extractor_scale_3x=…` (candles/s over the 1-replica candles/s).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import psutil
from cryptoflow_cli.processes import SERVICE_MODULES
from cryptoflow_cli.servers import free_port, start_nats

EXCHANGES = ("binance", "bybit", "gate")
SYMBOLS = int(os.environ.get("SCALE_SYMBOLS", "20"))
DAYS = float(os.environ.get("SCALE_DAYS", "2"))
REPLICAS = (1, 2, 3)
PUBLISHED = re.compile(r"^cryptoflow_extractor_candles_published_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def spawn(module: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def jobs_yaml(sim_url: str, symbols: list[str], start: datetime, end: datetime) -> str:
    block = (
        "  {exchange}:\n    url: {url}\n    rate_limit_ms: 1\n    symbols: [{symbols}]\n    datasets:\n"
        "      ohlcv: {{timeframes: [1m], since: {since}, until: {until}, page_limit: 1000, poll_interval_s: 30}}\n"
    )
    return "exchanges:\n" + "".join(
        block.format(
            exchange=exchange,
            url=sim_url,
            symbols=", ".join(symbols),
            since=start.isoformat().replace("+00:00", "Z"),
            until=end.isoformat().replace("+00:00", "Z"),
        )
        for exchange in EXCHANGES
    )


async def published(session: aiohttp.ClientSession, ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        try:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
        except aiohttp.ClientError:
            continue
        total += sum(float(value) for value in PUBLISHED.findall(text))
    return total


def cpu_s(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


async def run(
    replicas: int, home: Path, sim: subprocess.Popen[bytes], jobs: Path, target: float | None
) -> dict[str, float]:
    """One run; returns candles, seconds and CPU seconds. Without a target: until the count is still."""
    nats = start_nats(home / f"nats-{replicas}")
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(replicas)]
    sim_cpu = cpu_s(sim.pid)
    try:
        env = {**os.environ, "NATS_URL": nats.url, "EXTRACTOR_CONFIG": str(jobs), "LOG_LEVEL": "WARNING"}
        started = time.perf_counter()
        for index, port in enumerate(ports):
            replica_env = {**env, "EXTRACTOR_REPLICA_ID": f"extractor-{index}", "EXTRACTOR_HTTP_PORT": str(port)}
            procs.append(
                spawn(SERVICE_MODULES["extractor"], [], replica_env, home / f"extractor-{replicas}-{index}.log")
            )
        count, still_since, last = 0.0, time.perf_counter(), 0.0
        samples: list[tuple[float, float]] = []
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(0.2)
                now_count = await published(session, ports)
                now = time.perf_counter()
                samples.append((now, now_count))
                if now_count > count:
                    count, last, still_since = now_count, now, now
                if target is not None and count >= target:
                    break
                if target is None and count > 0 and now - still_since > 5:
                    break
                if now - started > 900:
                    raise TimeoutError(f"{replicas} replicas: {count} candles after 900 s")
                for proc in procs:
                    if proc.poll() is not None:
                        raise RuntimeError((home / f"extractor-{replicas}-0.log").read_text()[-3000:])
        elapsed = last - started
        # Steady rate: from 10 % to 90 % of the candles, without the processes' start and the tail.
        t10 = next(t for t, c in samples if c >= 0.1 * count)
        t90 = next(t for t, c in samples if c >= 0.9 * count)
        replica_cpu = sum(cpu_s(proc.pid) for proc in procs)
        return {
            "candles": count,
            "seconds": elapsed,
            "steady_rate": 0.8 * count / max(t90 - t10, 1e-9),
            "replica_cpu": replica_cpu,
            "sim_cpu": cpu_s(sim.pid) - sim_cpu,
            "nats_cpu": cpu_s(nats.pid),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        nats.stop()


async def main() -> None:
    symbols = [f"S{i:02d}/USDT" for i in range(SYMBOLS)]
    end = datetime(2024, 3, 1, tzinfo=UTC)
    start = end - timedelta(days=DAYS)
    with tempfile.TemporaryDirectory(prefix="cryptoflow-bench-scale-") as tmp:
        home = Path(tmp)
        url_file = home / "sim.url"
        sim_args = ["--exchange", "all", "--symbols", ",".join(symbols), "--start", start.isoformat(),
                    "--end", end.isoformat(), "--port", str(free_port()), "--url-file", str(url_file)]  # fmt: skip
        sim = spawn(SERVICE_MODULES["exchange-sim"], sim_args, {**os.environ}, home / "sim.log")
        try:
            while not url_file.exists():  # noqa: ASYNC110 - a file written by another process
                await asyncio.sleep(0.05)
            jobs = home / "jobs.yaml"
            jobs.write_text(jobs_yaml(url_file.read_text().strip(), symbols, start, end - timedelta(minutes=1)))
            print(f"{len(EXCHANGES) * len(symbols)} ohlcv jobs, {DAYS:g} days of 1m candles each, 1-3 replicas")
            results: dict[int, dict[str, float]] = {}
            target: float | None = None
            for replicas in REPLICAS:
                results[replicas] = await run(replicas, home, sim, jobs, target)
                target = results[1]["candles"]
                r = results[replicas]
                print(
                    f"  {replicas} replica(s): {r['candles']:>10,.0f} candles in {r['seconds']:6.1f}s = "
                    f"{r['candles'] / r['seconds']:>8,.0f}/s (10-90 %: {r['steady_rate']:>8,.0f}/s); CPU s: replicas {r['replica_cpu']:.1f}, "
                    f"simulator {r['sim_cpu']:.1f}, nats-server {r['nats_cpu']:.1f}",
                    flush=True,
                )
        finally:
            sim.terminate()
            sim.wait(30)
    whole = {n: r["candles"] / r["seconds"] for n, r in results.items()}
    print(f"  whole runs (process start included): 2x={whole[2] / whole[1]:.2f} 3x={whole[3] / whole[1]:.2f}")
    rate = {n: r["steady_rate"] for n, r in results.items()}
    print(f"extractor_scale_2x={rate[2] / rate[1]:.2f} extractor_scale_3x={rate[3] / rate[1]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
