"""Issue 15, chaos matrix: a fault in the middle of a flow of all four datasets, then recovery.

Each cell runs the whole pipeline (extractor → lake-writer → transformer → loader as OS processes,
real nats-server with its file store, real PostgreSQL, the lake) against the simulator, injects
one fault while data is in flight, brings the part back, and then demands: the warehouse equals
what the simulator served (every candle and every trade exactly once, tickers and order books
with the served values), every consumer drained (nothing stuck), DLQ empty.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nats
import pytest
from contract.s3_faults import FaultPlan, faulty_s3_proxy
from cryptoflow_cli.nats_cluster import cluster_url, replication_env, start_nats_cluster, wait_for_jetstream
from cryptoflow_cli.servers import ServerProcess, start_nats, start_postgres
from cryptoflow_exchange_sim import (
    INTERVALS,
    KlineWindow,
    RandomWalkMarket,
    TradeWindow,
    book_snapshot,
    ticker_snapshot,
)

from .harness import Pipeline

pytestmark = pytest.mark.timeout(420)

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000
N = 240  # candles: with pages of 10, long enough that every fault lands mid-flow
SEED = 23
CONSUMERS = [("RAW", "lake-writer"), ("LAKE", "transformer"), ("SILVER", "warehouse-loader")]
JOBS = """
exchanges:
  binance:
    url: {url}
    rate_limit_ms: 30
    symbols: [BTC/USDT]
    datasets:
      ohlcv: {{timeframes: [1m], since: 2024-01-01T00:00:00Z, page_limit: 10, poll_interval_s: 1}}
      ticker: {{poll_interval_s: 1}}
      orderbook: {{depth: 5, poll_interval_s: 1}}
      trades: {{since: 2024-01-01T00:00:00Z, poll_interval_s: 1, page_limit: 50}}
"""


@dataclass
class Stack:
    pipe: Pipeline
    nats: ServerProcess
    postgres: ServerProcess
    proxy: FaultPlan | None = None


@asynccontextmanager
async def running_stack(tmp_path: Path, s3: tuple[str, str] | None = None) -> AsyncIterator[Stack]:
    """The pipeline on a nats-server and a PostgreSQL of its own (so a cell can restart them),
    and, given (endpoint, bucket), on S3 behind a fault-injecting proxy (so the lake can fail)."""
    with start_nats(tmp_path / "nats") as nats_server, start_postgres(tmp_path / "pg", fast_unsafe=True) as pg:
        workdir = tmp_path / "pipeline"
        workdir.mkdir()
        if s3 is None:
            pipe = Pipeline(nats_server.url, pg.url, f"file://{tmp_path / 'lake'}", workdir)
            try:
                yield Stack(pipe, nats_server, pg)
            finally:
                pipe.stop_all()
            return
        upstream, bucket = s3
        plan = FaultPlan(count=0, path_contains="/")
        async with faulty_s3_proxy(upstream, plan) as proxy_url:
            pipe = Pipeline(nats_server.url, pg.url, f"s3://{bucket}", workdir, s3_endpoint_url=proxy_url)
            try:
                yield Stack(pipe, nats_server, pg, plan)
            finally:
                # In a thread: the proxy runs on this event loop, and services shutting down
                # still talk to S3 through it.
                await asyncio.to_thread(pipe.stop_all)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


@pytest.fixture
async def s3_stack(tmp_path: Path, s3_endpoint_url: str, s3_bucket: str) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, (s3_endpoint_url, s3_bucket)) as running:
        yield running


def start_flow(pipe: Pipeline, extractor_env: dict[str, str] | None = None) -> None:
    window = ["--start", str(T0), "--end", str(T0 + N * MINUTE)]
    pipe.start_simulator(["--exchange", "binance", "--symbols", "BTC/USDT", "--seed", str(SEED), *window])
    assert pipe.sim_url
    jobs = pipe.workdir / "jobs.yaml"
    jobs.write_text(JOBS.format(url=pipe.sim_url))
    pipe.extra_env.update(
        {
            "EXTRACTOR_CONFIG": str(jobs),
            "LAKE_WRITER_BATCH_SIZE": "5",
            "WAREHOUSE_LOADER_ALERT_RULES": "[]",
            # Short waits so a held or lost delivery comes back within the cell.
            "LAKE_WRITER_ACK_WAIT_S": "5",
            "TRANSFORMER_ACK_WAIT_S": "5",
            "WAREHOUSE_LOADER_ACK_WAIT_S": "10",
        }
    )
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    pipe.start("extractor", env=extractor_env)


def served_trades() -> int:
    end = T0 + N * MINUTE
    market = RandomWalkMarket(["BTC/USDT"], SEED, T0, end)
    return len(market.trades("BTCUSDT", TradeWindow(start_ms=T0, end_ms=end, limit=10**6), int(time.time() * 1000)))


async def mid_flow(pipe: Pipeline) -> None:
    """Until data reaches the warehouse but not all of it: candles are in, trades (the longest
    part of the flow, a few hundred pages) still coming. The loader loads what waits in SILVER
    together, so the candles alone may land in one go."""
    total = served_trades()

    async def started_not_done() -> bool:
        candles = await pipe.fetchval("SELECT count(*) FROM ohlcv", default=0) or 0
        trades = await pipe.fetchval("SELECT count(*) FROM trades", default=0) or 0
        return candles > 0 and trades < total

    await pipe.wait_for("the first candles", lambda: _safe(started_not_done), interval=0.05, timeout=120)


async def complete(pipe: Pipeline, trades: int) -> bool:
    counts = await pipe.fetch(
        "SELECT (SELECT count(*) FROM ohlcv) AS candles, (SELECT count(*) FROM trades) AS trades, "
        "(SELECT count(*) FROM tickers) AS tickers, (SELECT count(*) FROM order_books) AS levels"
    )
    row = counts[0]
    return bool(row["candles"] == N and row["trades"] == trades and row["tickers"] and row["levels"])


async def assert_recovered(stack: Stack, timeout: float = 240) -> None:
    """The warehouse equals what the simulator served; nothing stuck; DLQ empty."""
    pipe = stack.pipe
    end = T0 + N * MINUTE
    market = RandomWalkMarket(["BTC/USDT"], SEED, T0, end)
    now = int(time.time() * 1000)
    served_trades = market.trades("BTCUSDT", TradeWindow(start_ms=T0, end_ms=end, limit=10**6), now)
    await pipe.wait_for(
        "the whole flow in the warehouse", lambda: _safe(complete, pipe, len(served_trades)), timeout=timeout
    )
    candles = market.klines("BTCUSDT", INTERVALS["1m"], KlineWindow(T0, end, 1000), now)
    expected = [(k.open_time, *(float(v) for v in (k.open, k.high, k.low, k.close, k.volume))) for k in candles]
    rows = await pipe.fetch(
        "SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume FROM ohlcv ORDER BY ts"
    )
    assert [tuple(r.values()) for r in rows] == expected
    trades = await pipe.fetch(
        "SELECT trade_id, (extract(epoch FROM ts) * 1000)::bigint AS ms, price, amount FROM trades ORDER BY ts, trade_id"
    )
    assert sorted((str(t.id), t.time_ms, float(t.price), float(t.qty)) for t in served_trades) == sorted(
        (r["trade_id"], r["ms"], r["price"], r["amount"]) for r in trades
    )
    ticker = ticker_snapshot(market, "BTCUSDT", now)
    assert {r["last"] for r in await pipe.fetch("SELECT last FROM tickers")} == {float(ticker.last)}
    book = book_snapshot(market, "BTCUSDT", 5, now)
    levels = {
        (r["side"], r["price"], r["amount"]) for r in await pipe.fetch("SELECT side, price, amount FROM order_books")
    }
    assert levels == {("bid", float(b.price), float(b.size)) for b in book.bids} | {
        ("ask", float(a.price), float(a.size)) for a in book.asks
    }
    await pipe.wait_for("every consumer drained", lambda: pipe.drained(CONSUMERS), timeout=60)
    letters = await pipe.stream_messages("DLQ")
    assert letters == [], [m.data[:300] for m in letters]
    for proc in pipe.procs:
        if proc.name != "exchange-sim":
            assert proc.popen.poll() is None or proc.popen.returncode in (-9, -15), proc.log()


async def _safe(probe: Callable[..., Awaitable[bool]], *args: object) -> bool:
    """The probe, or False while what it reads is down or not there yet (a restart, a migration)."""
    try:
        return await probe(*args)
    except Exception:
        return False


@pytest.mark.parametrize("victim", ["extractor", "lake-writer", "transformer", "warehouse-loader"])
async def test_chaos_service_killed_mid_flow(stack: Stack, victim: str) -> None:
    start_flow(stack.pipe)
    await mid_flow(stack.pipe)
    procs = {p.name: p for p in stack.pipe.procs}
    procs[victim].kill9()
    await asyncio.sleep(1)
    stack.pipe.start(victim)
    await assert_recovered(stack)


async def test_chaos_nats_server_restarted_mid_flow(stack: Stack) -> None:
    start_flow(stack.pipe)
    await mid_flow(stack.pipe)
    stack.nats.restart()  # file store: streams, consumers, KV come back from disk
    await assert_recovered(stack)


async def test_chaos_postgres_restarted_mid_flow(stack: Stack) -> None:
    start_flow(stack.pipe)
    await mid_flow(stack.pipe)
    stack.postgres.restart()
    await assert_recovered(stack)


async def test_chaos_loader_killed_while_postgres_restarts(stack: Stack) -> None:
    start_flow(stack.pipe)
    await mid_flow(stack.pipe)
    loader = next(p for p in stack.pipe.procs if p.name == "warehouse-loader")
    stack.postgres.stop()
    loader.kill9()
    await asyncio.sleep(2)
    stack.postgres.start()
    stack.pipe.start("warehouse-loader")
    await assert_recovered(stack)


async def raw_messages(pipe: Pipeline) -> bool:
    nc = await nats.connect(pipe.nats_url)
    try:
        return bool((await nc.jetstream().stream_info("RAW")).state.messages)
    finally:
        await nc.close()


def wall_clock_from(offset_file: Path) -> dict[str, str]:
    """libfaketime for one process: its wall clock (CLOCK_REALTIME) is the real one plus the
    offset written in `offset_file` ("+7200", "-3600"), re-read on every call; its monotonic
    clock is left alone, as when NTP steps a host's clock."""
    import libfaketime

    _, env = libfaketime.get_reload_information()
    return {**env, "DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1", "FAKETIME_TIMESTAMP_FILE": str(offset_file)}


async def test_chaos_clock_jump_on_the_extractor_host(stack: Stack) -> None:
    """The extractor host's clock steps 2 h ahead mid-flow, then 3 h back: paging follows the
    exchange's own timestamps and checkpoints, so nothing is skipped or fetched twice."""
    offset = stack.pipe.workdir / "extractor-clock"
    offset.write_text("+0\n")
    start_flow(stack.pipe, extractor_env=wall_clock_from(offset))
    # Ahead while the backfill is being fetched (its first page is out, the rest not yet) ...
    await stack.pipe.wait_for("the first snapshot", lambda: _safe(raw_messages, stack.pipe), interval=0.02)
    offset.write_text("+7200\n")
    await mid_flow(stack.pipe)
    await asyncio.sleep(2)
    # ... and behind while it polls tickers and books.
    offset.write_text("-3600\n")
    await asyncio.sleep(3)
    await assert_recovered(stack)
    # The extractor did live in both: its ticker and book polls stamp snapshots with its clock.
    now = time.time()
    fetched = [
        datetime.fromisoformat(json.loads(m.data)["fetched_at"]).timestamp()
        for m in await stack.pipe.stream_messages("RAW")
    ]
    assert max(fetched) > now + 5400, "the extractor never lived 2 h ahead"
    assert min(fetched) < now - 1800, "the extractor never lived 1 h behind"


async def test_chaos_lake_write_errors_mid_flow(s3_stack: Stack) -> None:
    stack = s3_stack
    assert stack.proxy is not None
    # 3 tries per PUT (instead of 8): the 8 failures below then exhaust a PUT's retries, so the
    # lake-writer's own nak-and-retry runs too, without ~60 s of botocore backoff.
    stack.pipe.extra_env["S3_MAX_ATTEMPTS"] = "3"
    start_flow(stack.pipe)
    await mid_flow(stack.pipe)
    stack.proxy.path_contains = "/bronze/"
    stack.proxy.count = stack.proxy.injected + 8  # the next 8 bronze PUTs fail (503 SlowDown)
    await assert_recovered(stack)
    assert stack.proxy.injected >= 8


async def test_chaos_s3_endpoint_down_60_s(s3_stack: Stack) -> None:
    stack = s3_stack
    assert stack.proxy is not None
    start_flow(stack.pipe)
    await mid_flow(stack.pipe)
    plan = stack.proxy
    plan.path_contains = "/"
    plan.methods = ("GET", "PUT", "HEAD", "POST", "DELETE")
    plan.count = 10**9  # every request refused ...
    await asyncio.sleep(60)
    plan.count = plan.injected  # ... for 60 s, then the endpoint is back
    await assert_recovered(stack, timeout=300)


async def test_chaos_nats_cluster_node_killed_mid_flow(tmp_path: Path) -> None:
    """Three nats-servers routed on loopback, every stream and KV bucket at 3 replicas: a node
    killed with -9 mid-flow and restarted later loses and doubles nothing, and no service is
    restarted (the clients fail over to the other servers)."""
    with start_nats_cluster(tmp_path / "nats", 3) as nodes, start_postgres(tmp_path / "pg", fast_unsafe=True) as pg:
        url = cluster_url(nodes)
        await wait_for_jetstream(url)
        workdir = tmp_path / "pipeline"
        workdir.mkdir()
        pipe = Pipeline(url, pg.url, f"file://{tmp_path / 'lake'}", workdir, extra_env=replication_env(3))
        try:
            start_flow(pipe)
            await mid_flow(pipe)
            services = {p.name: p.popen.pid for p in pipe.procs if p.name != "exchange-sim"}
            nodes[0].kill()  # -9: the node every client connected to first
            await asyncio.sleep(10)
            nodes[0].start()
            await assert_recovered(Stack(pipe, nodes[0], pg))
            alive = {p.name: p.popen.pid for p in pipe.procs if p.name != "exchange-sim" and p.popen.poll() is None}
            assert alive == services, "a service was restarted or died"
        finally:
            pipe.stop_all()
