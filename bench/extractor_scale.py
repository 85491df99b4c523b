"""Extractor scale-out benchmark: 1, 2 and 3 extractor replicas sharing the same jobs (decision 0042).

One simulator process serves Binance, Bybit and Gate; SCALE_SYMBOLS (20) symbols × 3 exchanges =
60 ohlcv 1m jobs, each backfilling SCALE_DAYS (14) days of candles in pages of 1000, rate limiter at
1 ms (the simulator imposes none). For each replica count, a fresh nats-server; the replicas are
separate `python -m cryptoflow_extractor.main` processes (as `cryptoflow up --replicas
extractor=N` starts them), timed from their spawn until every job's checkpoint reached the end
(progress: the candles before each job's checkpoint, sampled every 0.25 s).
The simulator runs with `--cache-closed` and one unmeasured warm-up run fills its cache: making a
random-walk candle costs it more CPU than parsing one costs the extractor, and on 2 cores that,
not the extractor, would be measured.
The headline ratio is of the steady rates (10 % to 90 % of the candles: without process start and
the last jobs' tail); the whole-run ratio is printed too.
Per run: CPU seconds of the replicas, the simulator and nats-server (what bounds the scaling).

    uv run python bench/extractor_scale.py      # or: make bench BENCH=extractor-scale

Last line: `extractor_scale_2x=… extractor_scale_3x=…` (candles/s over the 1-replica candles/s).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psutil
from cryptoflow_cli.processes import SERVICE_MODULES
from cryptoflow_cli.servers import free_port, start_nats
from cryptoflow_contracts import Dataset
from cryptoflow_extractor.checkpoints import checkpoint_key
from cryptoflow_runtime import ensure_kv
from nats import connect as nats_connect
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

EXCHANGES = ("binance", "bybit", "gate")
SYMBOLS = int(os.environ.get("SCALE_SYMBOLS", "20"))
DAYS = float(os.environ.get("SCALE_DAYS", "14"))
REPLICAS = (1, 2, 3)
MINUTE = 60_000


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


async def progress(kv: KeyValue, keys: list[str], since_ms: int, end_ms: int) -> int:
    """Candles the jobs have published, from their checkpoints (the first candle not yet published):
    exact across handovers, unlike per-process counters (a job cancelled while its checkpoint write
    is in flight has moved the checkpoint without counting the page)."""
    done = 0
    for key in keys:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        next_since = int(orjson.loads(entry.value or b"{}").get("next_since", since_ms))
        done += (min(next_since, end_ms) - since_ms) // MINUTE
    return done


def cpu_s(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


async def run(
    replicas: int, home: Path, sim: subprocess.Popen[bytes], jobs: Path, keys: list[str], since_ms: int, end_ms: int
) -> dict[str, float]:
    """One run until every job's checkpoint reached the end; candles, seconds and CPU seconds."""
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
        target = len(keys) * ((end_ms - since_ms) // MINUTE)
        samples: list[tuple[float, int]] = []
        nc = await nats_connect(nats.url)
        try:
            kv = await ensure_kv(nc.jetstream(), "cryptoflow_checkpoints")
            while True:
                await asyncio.sleep(0.25)
                count = await progress(kv, keys, since_ms, end_ms)
                now = time.perf_counter()
                samples.append((now, count))
                if count >= target:
                    break
                if now - started > 900:
                    raise TimeoutError(f"{replicas} replicas: {count} of {target} candles after 900 s")
                for proc in procs:
                    if proc.poll() is not None:
                        raise RuntimeError((home / f"extractor-{replicas}-0.log").read_text()[-3000:])
        finally:
            await nc.close()
        last = samples[-1][0]
        elapsed = last - started
        # Steady rate: from 10 % to 90 % of the candles, without the processes' start and the tail.
        t10 = next(t for t, c in samples if c >= 0.1 * count)
        t90 = next(t for t, c in samples if c >= 0.9 * count)
        replica_cpu = sum(cpu_s(proc.pid) for proc in procs)
        return {
            "candles": count,
            "seconds": elapsed,
            "steady_rate": 0.8 * count / max(t90 - t10, 0.25),  # at least one sampling interval
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
                    "--end", end.isoformat(), "--port", str(free_port()), "--url-file", str(url_file), "--cache-closed"]  # fmt: skip
        sim = spawn(SERVICE_MODULES["exchange-sim"], sim_args, {**os.environ}, home / "sim.log")
        try:
            while not url_file.exists():  # noqa: ASYNC110 - a file written by another process
                await asyncio.sleep(0.05)
            jobs = home / "jobs.yaml"
            jobs.write_text(jobs_yaml(url_file.read_text().strip(), symbols, start, end - timedelta(minutes=1)))
            print(f"{len(EXCHANGES) * len(symbols)} ohlcv jobs, {DAYS:g} days of 1m candles each, 1-3 replicas")
            keys = [checkpoint_key(ex, symbol, Dataset.OHLCV, "1m") for ex in EXCHANGES for symbol in symbols]
            window = (int(start.timestamp() * 1000), int(end.timestamp() * 1000))
            # Unmeasured: fills the simulator's answer cache, so the runs measure the extractor,
            # not the simulator generating candles (which costs more CPU than parsing them).
            (home / "warm").mkdir()
            warm = await run(1, home / "warm", sim, jobs, keys, *window)
            print(f"  warm-up (fills the simulator's cache): {warm['candles']:,.0f} candles in {warm['seconds']:.1f}s")
            results: dict[int, dict[str, float]] = {}
            for replicas in REPLICAS:
                results[replicas] = await run(replicas, home, sim, jobs, keys, *window)
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
