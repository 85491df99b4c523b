"""Streaming benchmark: simulated Binance trade streams through the whole pipeline (issue 12).

One run on real nats-server and PostgreSQL (started here from their wheels) and a file:// lake,
the four services as `python -m` processes and the exchange simulator as its own process
(`--live-trades`: a trade is public, and streamed, at its own time). The extractor streams trades
(`mode: stream`, ccxt pro's watch_trades over the simulator's Binance websocket).

1. 1k/s: STREAM_SYMBOLS (10) symbols whose random walks trade 1,000 times a second together over
   the window (`--trade-scale` computed from the walk), for STREAM_SECONDS (60, whole minutes) s
   from the first whole minute after a 65 s warm-up. Latencies per trade, from the
   trade's own time (the "exchange event"; the simulator sends it within ~10 ms of it):
   * live: to its arrival on `cryptoflow.live.trades.>` (a core NATS subscription here);
   * warehouse: to its row being visible: the arrival of the Loaded event of the row's batch
     (`batch_id`), which the loader publishes once that batch's transaction committed.
   And the same for the newest trade of each page at every stage (RAW, LAKE, SILVER, WAREHOUSE
   events), to see where the time goes.
   Every trade the simulator made in the window must be in the warehouse, once (checked against
   the same random walk built in this process).
2. maximum: a fresh extractor on other symbols whose walks trade STREAM_MAX_SCALE (300) times the
   base rate, about what the simulator's one process can send (2-3k trades/s); for STREAM_SECONDS
   s, trades per second the simulator sent (its frame count). The extractor runs on until every
   trade of the window is a warehouse row (checked against the walk): the maximum is the window's
   trades over the time from its start to its last row (bounded by what the simulator sends).

    uv run python bench/stream.py      # or: make bench BENCH=stream

Last line: `stream_max_trades_per_s=… stream_p99_ms_live=… stream_p99_ms_warehouse=…`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import nats
import orjson
from cryptoflow_cli.processes import SERVICE_MODULES
from cryptoflow_cli.servers import free_port, start_nats, start_postgres
from cryptoflow_exchange_sim.random_walk import RandomWalkMarket
from cryptoflow_runtime.jetstream import ensure_streams

# Run as a script (`python bench/<name>.py`, as `python -m bench` runs it): the repo root, for bench.support.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.support import (
    PG_SETTINGS,
    ServiceProc,
    check_alive,
    env_float,
    env_int,
    fetch,
    log,
    percentile,
    spawn_service,
)

SYMBOLS = env_int("STREAM_SYMBOLS", 10)
SECONDS = env_float("STREAM_SECONDS", 60.0)
# Long enough for the extractor's first REST catch-up, the services' first batches (migrations,
# imports) and the extractor's second heap freeze (a one-off ~0.2 s pause a minute after its start,
# runtime.service.SETTLED_AFTER_S) to be behind it: the window measures the steady state.
WARMUP_S = env_float("STREAM_WARMUP_S", 65.0)
TARGET_PER_S = env_int("STREAM_RATE", 1000)
MAX_SCALE = env_int("STREAM_MAX_SCALE", 300)
SERVICES = ("warehouse-loader", "transformer", "lake-writer")
# The job's defaults (pages of up to 250 ms): with 100 ms pages, ten symbols make 100 RAW pages a
# second, and the middle's cost per page, not per trade, caps the pipeline near 1k trades/s.
JOBS = (
    "exchanges:\n  binance:\n    url: {url}\n    symbols: [{symbols}]\n    datasets:\n      trades: {{mode: stream}}\n"
)


SIM_SEED = 42
SIM_HISTORY_MS = 3_600_000


def start_simulator(
    home: Path, name: str, symbols: list[str], scale: int, start: int
) -> tuple[subprocess.Popen[bytes], str, RandomWalkMarket]:
    """The simulator as its own process, and the same market in this one: the trades it made."""
    url_file = home / f"{name}.url"
    args = ["--exchange", "binance", "--symbols", ",".join(symbols), "--live-trades", "--trade-scale", str(scale),
            "--seed", str(SIM_SEED), "--start", str(start), "--port", str(free_port()), "--url-file", str(url_file)]  # fmt: skip
    truth = RandomWalkMarket(symbols, SIM_SEED, start, None, scale, True)
    with open(home / f"{name}.log", "ab") as out:
        sim = subprocess.Popen([sys.executable, "-m", SERVICE_MODULES["exchange-sim"], *args], stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while not url_file.exists():
        if sim.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((home / f"{name}.log").read_text()[-2000:])
        time.sleep(0.05)
    return sim, url_file.read_text().strip(), truth


def trades_made(truth: RandomWalkMarket, start_ms: int, end_ms: int) -> dict[str, int]:
    """Per symbol (as the warehouse names it), the trades the simulator made in [start, end)."""
    return {
        f"{listing.base_asset}/{listing.quote_asset}": truth.trade_stats(
            listing.symbol_id, start_ms, end_ms - 1, end_ms
        ).count
        for listing in truth.listings()
    }


async def check_complete(
    db_url: str, truth: RandomWalkMarket, start_ms: int, end_ms: int, timeout_s: float = 600
) -> tuple[int, float]:
    """Every trade the simulator made in the window reaches the warehouse, once (trade ids are its
    key); how long after the window closed that took says whether the pipeline kept up. Returns
    the window's trade count and when the last of them was seen as a row (ms, polled every 0.5 s)."""
    made = trades_made(truth, start_ms, end_ms)
    closed = float(end_ms)
    while True:
        rows = await fetch(
            db_url,
            "SELECT symbol, count(*) AS n FROM trades WHERE exchange = 'binance' AND symbol = ANY($3::text[]) "
            "AND ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0) GROUP BY symbol",
            start_ms,
            end_ms,
            list(made),
        )
        loaded = {str(row["symbol"]): int(row["n"]) for row in rows}
        wrong = {symbol: (n, loaded.get(symbol, 0)) for symbol, n in made.items() if loaded.get(symbol, 0) != n}
        if not wrong:
            break
        if time.time() * 1000 - closed > timeout_s * 1000 or any(got > n for n, got in wrong.values()):
            raise SystemExit(f"warehouse trades differ from the simulator's (made, loaded): {wrong}")
        await asyncio.sleep(0.5)
    complete_ms = time.time() * 1000
    log(
        f"  complete: all {sum(made.values()):,} trades the simulator made in the window are in the warehouse, "
        f"{(complete_ms - closed) / 1000:.1f}s after it closed"
    )
    return sum(made.values()), complete_ms


async def frames_sent(sim_url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{sim_url}/_sim/streams") as response:
        stats = await response.json()
    return float(stats["frames"].get("binance.trades", 0))


class LiveLatency:
    """Every trade on the live subjects: arrival time minus the trade's own time."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.measuring = False

    async def handle(self, msg: nats.aio.msg.Msg) -> None:
        arrived = time.time() * 1000
        if not self.measuring:
            return
        for trade in orjson.loads(msg.data)["data"]:
            self.samples.append(arrived - trade["timestamp"])


class StageClock:
    """Where the warehouse latency goes: when each stage's output about a page arrives, minus the
    page's newest trade time (core-NATS subscriptions on RAW, LAKE, SILVER and WAREHOUSE subjects;
    LAKE and WAREHOUSE events are tied to trade times through the events they name)."""

    STAGES = ("raw", "lake", "silver", "warehouse")

    def __init__(self) -> None:
        self.newest_of_event: dict[str, int] = {}
        # When each silver batch's Loaded arrived: its rows are committed (published after the commit).
        self.loaded_ms: dict[str, float] = {}
        self.samples: dict[str, list[float]] = {stage: [] for stage in self.STAGES}
        self.measuring = False

    async def subscribe(self, nc: nats.NATS) -> None:
        await nc.subscribe("cryptoflow.raw.trades.>", cb=self._raw)
        await nc.subscribe("cryptoflow.lake.trades.>", cb=self._lake)
        await nc.subscribe("cryptoflow.silver.trades.>", cb=self._silver)
        await nc.subscribe("cryptoflow.warehouse.trades", cb=self._warehouse)

    def _sample(self, stage: str, newest_ms: int | None) -> None:
        if self.measuring and newest_ms is not None:
            self.samples[stage].append(time.time() * 1000 - newest_ms)

    async def _raw(self, msg: nats.aio.msg.Msg) -> None:
        event = orjson.loads(msg.data)
        self.newest_of_event[event["event_id"]] = event["last_ts"]
        self._sample("raw", event["last_ts"])

    async def _lake(self, msg: nats.aio.msg.Msg) -> None:
        ids = orjson.loads(msg.data)["source_event_ids"]
        self._sample("lake", max((self.newest_of_event.get(i, 0) for i in ids), default=None) or None)

    async def _silver(self, msg: nats.aio.msg.Msg) -> None:
        event = orjson.loads(msg.data)
        self.newest_of_event[event["event_id"]] = event["max_ts"]
        self._sample("silver", event["max_ts"])

    async def _warehouse(self, msg: nats.aio.msg.Msg) -> None:
        batch = orjson.loads(msg.data)["batch_event_id"]
        self.loaded_ms.setdefault(batch, time.time() * 1000)
        self._sample("warehouse", self.newest_of_event.get(batch))

    def report(self) -> None:
        parts = [
            f"{stage} p50 {percentile(values, 50):.0f} / p99 {percentile(values, 99):.0f} ms"
            for stage, values in self.samples.items()
            if values
        ]
        log("  newest trade of a page, its age at each stage: " + ", ".join(parts))


def window_after_warmup() -> tuple[int, int]:
    """The measured window: from the first whole minute after the warm-up, SECONDS (whole minutes)
    long; whole minutes make the simulator's trade count cheap to compute here."""
    minutes = max(1, round(SECONDS / 60))
    start = -(-(int(time.time() * 1000) + int(WARMUP_S * 1000)) // 60_000) * 60_000
    return start, start + minutes * 60_000


async def sleep_until(ms: int) -> None:
    await asyncio.sleep(max(0.0, ms / 1000 - time.time()))


async def phase_1k(home: Path, env: dict[str, str], nats_url: str, db_url: str) -> tuple[list[float], list[float]]:
    symbols = [f"S{i:02d}/USDT" for i in range(SYMBOLS)]
    # The scale that makes the walk trade TARGET_PER_S over the coming window (its minutes differ).
    start = int(time.time() * 1000) - SIM_HISTORY_MS
    window_start, window_end = window_after_warmup()
    probe = RandomWalkMarket(symbols, SIM_SEED, start, None, 100, True)
    per_unit = sum(trades_made(probe, window_start, window_end).values()) / 100
    scale = max(1, round(TARGET_PER_S * (window_end - window_start) / 1000 / max(per_unit, 1)))
    sim, url, truth = start_simulator(home, "sim-1k", symbols, scale, start)
    jobs = home / "jobs-1k.yaml"
    jobs.write_text(JOBS.format(url=url, symbols=", ".join(symbols)))
    live = LiveLatency()
    nc = await nats.connect(nats_url)
    await nc.subscribe("cryptoflow.live.trades.>", cb=live.handle)
    stages = StageClock()
    await stages.subscribe(nc)
    extractor = spawn_service("extractor", {**env, "EXTRACTOR_CONFIG": str(jobs)}, home)
    try:
        log(f"phase 1: {SYMBOLS} symbols at --trade-scale {scale} (~{TARGET_PER_S}/s); {WARMUP_S:.0f}s warm-up")
        await sleep_until(window_start)
        live.measuring = stages.measuring = True
        sent_before = await frames_sent(url)
        start_ms = window_start
        await sleep_until(window_end)
        end_ms = window_end
        live.measuring = stages.measuring = False
        stages.report()
        seconds = (end_ms - start_ms) / 1000
        sent = await frames_sent(url) - sent_before
        log(f"  the simulator sent {sent / seconds:,.0f} trades/s; {len(live.samples):,} live trades measured")
        await check_complete(db_url, truth, start_ms, end_ms)
        # A row is visible once its batch's transaction committed: the Loaded event that follows it.
        rows = await fetch(
            db_url,
            "SELECT batch_id, (extract(epoch FROM ts) * 1000)::float8 AS ts_ms FROM trades "
            "WHERE ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)",
            start_ms,
            end_ms,
        )
        unseen = sum(1 for row in rows if row["batch_id"] not in stages.loaded_ms)
        if unseen:
            raise SystemExit(f"{unseen} warehouse rows of the window came in batches whose Loaded was not seen")
        warehouse = [stages.loaded_ms[row["batch_id"]] - float(row["ts_ms"]) for row in rows]
        log(f"  {len(warehouse):,} warehouse rows with trade times in the window ({len(warehouse) / seconds:,.0f}/s)")
        return live.samples, warehouse
    finally:
        extractor.stop()
        await nc.close()
        sim.terminate()
        sim.wait(30)


async def phase_max(home: Path, env: dict[str, str], db_url: str) -> float:
    symbols = [f"M{i:02d}/USDT" for i in range(SYMBOLS)]
    sim, url, truth = start_simulator(home, "sim-max", symbols, MAX_SCALE, int(time.time() * 1000) - SIM_HISTORY_MS)
    jobs = home / "jobs-max.yaml"
    jobs.write_text(JOBS.format(url=url, symbols=", ".join(symbols)))
    extractor = spawn_service("extractor", {**env, "EXTRACTOR_CONFIG": str(jobs)}, home)
    try:
        log(f"phase 2: {SYMBOLS} symbols at --trade-scale {MAX_SCALE}; {WARMUP_S:.0f}s warm-up")
        start_ms, end_ms = window_after_warmup()
        await sleep_until(start_ms)
        sent_before = await frames_sent(url)
        await sleep_until(end_ms)
        seconds = (end_ms - start_ms) / 1000
        sent = (await frames_sent(url) - sent_before) / seconds
        # The extractor keeps going until the window's every trade is a row (it may lag the market).
        count, complete_ms = await check_complete(db_url, truth, start_ms, end_ms, timeout_s=900)
    finally:
        extractor.stop()
        sim.terminate()
        sim.wait(30)
    log(f"  the simulator sent {sent:,.0f} trades/s (its walk made {count / seconds:,.0f}/s)")
    # The rate the pipeline sustained: the window's trades over the time from its start to its last row.
    return count / ((max(complete_ms, end_ms) - start_ms) / 1000)


async def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="cryptoflow-bench-stream-"))
    nats_server = await asyncio.to_thread(start_nats, home / "nats")
    postgres = await asyncio.to_thread(start_postgres, home / "pg", settings=PG_SETTINGS)
    procs: list[ServiceProc] = []
    try:
        nc = await nats.connect(nats_server.url)
        await ensure_streams(nc.jetstream())
        await nc.close()
        env = {
            **os.environ,
            "NATS_URL": nats_server.url,
            "DATABASE_URL": postgres.url,
            "LAKE_URL": f"file://{home / 'lake'}",
        }
        env["LAKE_WRITER_BATCH_TIMEOUT_S"] = env.get("LAKE_WRITER_BATCH_TIMEOUT_S", "0.1")
        for name in SERVICES:
            procs.append(spawn_service(name, env, home))
        await asyncio.sleep(3)
        check_alive(procs)
        live, warehouse = await phase_1k(home, env, nats_server.url, postgres.url)
        check_alive(procs)
        maximum = await phase_max(home, env, postgres.url)
        check_alive(procs)
    finally:
        for proc in procs:
            proc.stop()
        nats_server.stop()
        postgres.stop()
    live_p50, live_p99 = percentile(live, 50), percentile(live, 99)
    wh_p50, wh_p99 = percentile(warehouse, 50), percentile(warehouse, 99)
    log(f"live: p50 {live_p50:.1f} ms, p99 {live_p99:.1f} ms over {len(live):,} trades (aim: p99 < 50 ms)")
    log(f"warehouse: p50 {wh_p50:.0f} ms, p99 {wh_p99:.0f} ms over {len(warehouse):,} rows (aim: p99 < 1000 ms)")
    print(
        f"stream_max_trades_per_s={maximum:.0f} stream_p99_ms_live={live_p99:.1f} stream_p99_ms_warehouse={wh_p99:.0f}",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
