"""`make soak MINUTES=N [RATE=S]`: the stack under a random fault every ~30 s, invariants checked.

The whole pipeline (extractor → lake-writer → transformer → loader, OS processes) runs against
the simulator (RATE symbols on binance, four datasets, candles and trades generated up to the
wall clock) on a nats-server (file store) and a PostgreSQL of its own. Every ~30 s one fault
from the chaos matrix (tests/e2e/test_chaos.py) hits it: a service killed with -9 and restarted,
nats-server restarted, PostgreSQL restarted, or the loader killed while PostgreSQL restarts.

Continuously: the freshness of the warehouse (now − newest ticker row) is sampled as the lag.
At the end (faults stop, the stack drains): every candle and every trade the simulator served
in the soak's window is in the warehouse exactly once (lost / duplicated), DLQ is empty, and
the services' memory did not grow without bound. Last line:

    soak: minutes=… events=… faults=… lost=0 duplicated=0 max_lag_s=… rss_growth_mb=…

Exit status 1 on any loss, duplicate, dead letter, lag above SOAK_MAX_LAG_S (default 120) or RSS
growth above SOAK_MAX_RSS_GROWTH_MB (default 300).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cryptoflow_cli.servers import ServerProcess, start_nats, start_postgres
from cryptoflow_exchange_sim import INTERVALS, KlineWindow, RandomWalkMarket, TradeWindow
from e2e.harness import Pipeline, Proc

MINUTE = 60_000
SEED = 7
SERVICES = ("extractor", "lake-writer", "transformer", "warehouse-loader")
CONSUMERS = [("RAW", "lake-writer"), ("LAKE", "transformer"), ("SILVER", "warehouse-loader")]
JOBS = """
exchanges:
  binance:
    url: {url}
    rate_limit_ms: 20
    symbols: [{symbols}]
    datasets:
      ohlcv: {{timeframes: [1m], since: {since}, page_limit: 200, poll_interval_s: 2}}
      ticker: {{poll_interval_s: 1}}
      orderbook: {{depth: 10, poll_interval_s: 1}}
      trades: {{since: {since}, poll_interval_s: 1, page_limit: 500}}
"""


def symbols(count: int) -> list[str]:
    bases = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC", "DOT", "LINK", "AVAX", "ATOM", "TRX"]
    return [f"{base}/USDT" for base in bases[:count]]


def rss_mb(proc: Proc) -> float:
    try:
        for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Soak:
    def __init__(self, pipe: Pipeline, nats_server: ServerProcess, postgres: ServerProcess, rng: random.Random) -> None:
        self.pipe = pipe
        self.nats = nats_server
        self.postgres = postgres
        self.rng = rng
        self.faults: list[str] = []
        self.max_lag_s = 0.0

    def proc(self, name: str) -> Proc:
        return [p for p in self.pipe.procs if p.name == name][-1]

    async def kill_and_restart(self, name: str) -> None:
        self.proc(name).kill9()
        await asyncio.sleep(self.rng.uniform(0.5, 3))
        self.pipe.start(name)

    async def restart_nats(self) -> None:
        await asyncio.to_thread(self.nats.restart)

    async def restart_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.restart)

    async def loader_killed_while_postgres_restarts(self) -> None:
        await asyncio.to_thread(self.postgres.stop)
        self.proc("warehouse-loader").kill9()
        await asyncio.sleep(self.rng.uniform(1, 4))
        await asyncio.to_thread(self.postgres.start)
        self.pipe.start("warehouse-loader")

    def matrix(self) -> dict[str, Callable[[], Awaitable[None]]]:
        cells: dict[str, Callable[[], Awaitable[None]]] = {
            f"kill -9 {name}": (lambda name=name: self.kill_and_restart(name)) for name in SERVICES
        }
        cells["restart nats-server"] = self.restart_nats
        cells["restart postgresql"] = self.restart_postgres
        cells["kill loader while postgresql restarts"] = self.loader_killed_while_postgres_restarts
        return cells

    async def inject(self, until: float) -> None:
        cells = self.matrix()
        while time.monotonic() + 30 < until:
            await asyncio.sleep(self.rng.uniform(20, 40))
            name = self.rng.choice(sorted(cells))
            print(f"soak: fault {len(self.faults) + 1}: {name}", flush=True)
            await cells[name]()
            self.faults.append(name)

    async def watch_lag(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(5)
            try:
                newest = await self.pipe.fetchval("SELECT extract(epoch FROM max(ts)) FROM tickers")
            except Exception:
                continue  # the database is restarting: the lag shows once it is back
            if newest is not None:
                self.max_lag_s = max(self.max_lag_s, time.time() - float(newest))


async def run(minutes: float, rate: int, workdir: Path) -> int:
    rng = random.Random(SEED)
    start_ms = (int(time.time() * 1000) // MINUTE - 30) * MINUTE  # half an hour of history first
    markets = symbols(rate)
    with start_nats(workdir / "nats") as nats_server, start_postgres(workdir / "pg", fast_unsafe=True) as pg:
        (workdir / "pipeline").mkdir()
        pipe = Pipeline(nats_server.url, pg.url, f"file://{workdir / 'lake'}", workdir / "pipeline")
        pipe.start_simulator(
            ["--exchange", "binance", "--symbols", ",".join(markets), "--seed", str(SEED), "--start", str(start_ms)]
        )
        assert pipe.sim_url
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_ms / 1000))
        jobs = workdir / "jobs.yaml"
        jobs.write_text(JOBS.format(url=pipe.sim_url, symbols=", ".join(markets), since=since))
        pipe.extra_env.update(
            {
                "EXTRACTOR_CONFIG": str(jobs),
                "WAREHOUSE_LOADER_ALERT_RULES": "[]",
                "LAKE_WRITER_ACK_WAIT_S": "10",
                "TRANSFORMER_ACK_WAIT_S": "20",
                "WAREHOUSE_LOADER_ACK_WAIT_S": "30",
            }
        )
        try:
            pipe.start_all()
            began = time.monotonic()
            until = began + minutes * 60
            await asyncio.sleep(min(60.0, minutes * 60 / 4))  # warm up before the first RSS sample
            rss_start = sum(rss_mb(pipe.procs[i]) for i in range(len(pipe.procs)) if pipe.procs[i].name in SERVICES)
            soak = Soak(pipe, nats_server, pg, rng)
            await asyncio.gather(soak.inject(until), soak.watch_lag(until))
            end_ms = (int(time.time() * 1000) // MINUTE - 1) * MINUTE  # the last closed minute
            live = [p for p in pipe.procs if p.name in SERVICES and p.popen.poll() is None]
            rss_end = sum(rss_mb(p) for p in live)
            await pipe.wait_for("the stack drained", lambda: pipe.drained(CONSUMERS), timeout=300, interval=1)
            await asyncio.sleep(5)
            await pipe.wait_for("the stack drained", lambda: pipe.drained(CONSUMERS), timeout=300, interval=1)
            lost, duplicated, events = await check(pipe, markets, start_ms, end_ms)
            letters = await pipe.stream_messages("DLQ")
        finally:
            pipe.stop_all()
    growth = max(0.0, rss_end - rss_start)
    for letter in letters[:5]:
        print(f"soak: dead letter: {letter.data[:300]!r}", flush=True)
    print(
        f"soak: minutes={minutes:g} events={events} faults={len(soak.faults)} lost={lost} duplicated={duplicated} "
        f"max_lag_s={soak.max_lag_s:.1f} rss_growth_mb={growth:.0f}",
        flush=True,
    )
    ok = (
        lost == 0
        and duplicated == 0
        and not letters
        and soak.max_lag_s <= float(_env("SOAK_MAX_LAG_S", "120"))
        and growth <= float(_env("SOAK_MAX_RSS_GROWTH_MB", "300"))
    )
    return 0 if ok else 1


async def check(pipe: Pipeline, markets: list[str], start_ms: int, end_ms: int) -> tuple[int, int, int]:
    """(lost, duplicated, events): candles and trades served in [start, end) against the warehouse."""
    market = RandomWalkMarket(markets, SEED, start_ms, None)
    now = int(time.time() * 1000)
    lost = duplicated = events = 0
    for symbol in markets:
        symbol_id = symbol.replace("/", "")
        served = market.klines(symbol_id, INTERVALS["1m"], KlineWindow(start_ms, end_ms - 1, 100_000), now)
        candles = {k.open_time for k in served}
        rows = await pipe.fetch(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint AS ms FROM ohlcv WHERE symbol = $1 AND ts >= to_timestamp($2)"
            " AND ts < to_timestamp($3)",
            symbol,
            start_ms / 1000,
            end_ms / 1000,
        )
        stored = [r["ms"] for r in rows]
        lost += len(candles - set(stored))
        duplicated += len(stored) - len(set(stored)) + len(set(stored) - candles)
        trades = market.trades(symbol_id, TradeWindow(start_ms=start_ms, end_ms=end_ms - 1, limit=10**7), now)
        ids = {str(t.id) for t in trades}
        kept = [
            r["trade_id"]
            for r in await pipe.fetch(
                "SELECT trade_id FROM trades WHERE symbol = $1 AND ts >= to_timestamp($2) AND ts < to_timestamp($3)",
                symbol,
                start_ms / 1000,
                end_ms / 1000,
            )
        ]
        lost += len(ids - set(kept))
        duplicated += len(kept) - len(set(kept)) + len(set(kept) - ids)
        events += len(candles) + len(ids)
    events += int(await pipe.fetchval("SELECT count(*) FROM tickers") or 0)
    events += int(await pipe.fetchval("SELECT count(DISTINCT (symbol, ts)) FROM order_books") or 0)
    return lost, duplicated, events


def _env(name: str, default: str) -> str:
    import os

    return os.environ.get(name, default)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=float(_env("MINUTES", "5")))
    parser.add_argument("--rate", type=int, default=int(_env("RATE", "4")), help="symbols polled (1-12)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cryptoflow-soak-") as tmp:
        return asyncio.run(run(args.minutes, max(1, min(args.rate, 12)), Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
