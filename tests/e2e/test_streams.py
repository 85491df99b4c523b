"""Streamed market data end to end: three exchanges' websockets through the whole pipeline.

The simulator streams trades, tickers, order books and candles in Binance's, Bybit's and Gate's
wire formats (read through ccxt pro); every exchange's trade stream is dropped once and stalled
for 30 s, and the extractor is killed with -9 midway. The warehouse must still hold exactly the
simulator's trade log (no gap, no duplicate), its closed candles, and only books that equal the
simulator's true book at the sequence number they carry.
"""

from __future__ import annotations

import time

import aiohttp
from cryptoflow_exchange_sim import INTERVALS, KlineWindow, RandomWalkMarket, TradeWindow
from cryptoflow_exchange_sim.live import LiveMarket
from prometheus_client.parser import text_string_to_metric_families

from .harness import Pipeline

SEED = 23
# About 3.5 trades a second: Bybit's REST serves only its newest 60 trades (no history), so a hole
# a reconnect has to fill must stay under 60 trades for its trade set to be complete.
SCALE = 4
EXCHANGES = ("binance", "bybit", "gate")
SYMBOL, SYMBOL_ID = "BTC/USDT", "BTCUSDT"
MINUTE = 60_000
DEPTH = 5

BLOCK = """  {exchange}:
    url: {url}
    rate_limit_ms: 20
    symbols: [{symbol}]
    datasets:
      trades: {{mode: stream, {since}stall_after_s: 5, batch_ms: 100}}
      ticker: {{mode: stream, publish_interval_s: 1}}
      orderbook: {{mode: stream, depth: {depth}, publish_interval_s: 1}}
      ohlcv: {{mode: stream, timeframes: [1m], since: {candles_since}}}
"""


def fault_args() -> list[str]:
    args = []
    for exchange in EXCHANGES:
        args += ["--stream-fault", f"drop:{exchange}.trades:after=10"]
        args += ["--stream-fault", f"stall:{exchange}.trades:after=30,seconds=30"]
    return args


async def test_streamed_markets_reach_the_warehouse_exactly_across_drops_stalls_and_a_kill(
    file_pipeline: Pipeline,
) -> None:
    pipe = file_pipeline
    now = int(time.time() * 1000)
    start = now - 3_600_000
    since = now - 90_000
    candles_since = (now // MINUTE - 5) * MINUTE
    pipe.start_simulator(
        [
            "--exchange", "all", "--symbols", SYMBOL, "--seed", str(SEED), "--start", str(start),
            "--live-trades", "--trade-scale", str(SCALE), "--book-tick-ms", "100", *fault_args(),
        ]
    )  # fmt: skip
    assert pipe.sim_url
    jobs = pipe.workdir / "jobs.yaml"
    blocks = "".join(
        BLOCK.format(
            exchange=exchange,
            url=pipe.sim_url,
            symbol=SYMBOL,
            # Bybit's newest page is all its REST has: its first trade is the oldest of those.
            since="" if exchange == "bybit" else f"since: {since}, ",
            depth=DEPTH,
            candles_since=candles_since,
        )
        for exchange in EXCHANGES
    )
    jobs.write_text(f"exchanges:\n{blocks}")
    pipe.extra_env["EXTRACTOR_CONFIG"] = str(jobs)
    procs = pipe.start_all()

    async def every_dataset_loaded() -> bool:
        for table in ("trades", "tickers", "order_books"):
            loaded = await pipe.fetchval(f"SELECT count(DISTINCT exchange) FROM {table}", default=0)
            if loaded < len(EXCHANGES):
                return False
        return True

    await pipe.wait_for("streamed trades, tickers and books from every exchange", every_dataset_loaded, timeout=90)
    # Let the drop (after 10 trade frames) and the stall (after 30) happen, then kill the extractor.
    await pipe.wait_for("the trade streams' faults", lambda: faults_spent(pipe), timeout=60)
    metrics_url = f"http://127.0.0.1:{procs['extractor'].http_port}/metrics"
    await pipe.wait_for("every trade stream's stall detected", lambda: stalls_detected(metrics_url), timeout=30)

    async def streamed_since(ms: int) -> bool:
        newest = await pipe.fetchval("SELECT min(m) FROM (SELECT max(ts) AS m FROM trades GROUP BY exchange) t")
        return newest is not None and newest.timestamp() * 1000 > ms

    # The kill comes once the stall's hole is filled: a stall (5 s unseen) and a restart (several
    # seconds on a busy machine) in one hole could pass Bybit's 60 trades, which no REST call reaches.
    stalls_seen = int(time.time() * 1000)
    await pipe.wait_for("trades streamed after the stalls", lambda: streamed_since(stalls_seen + 2000), timeout=60)
    procs["extractor"].kill9()
    restarted = pipe.start("extractor")
    killed_at = int(time.time() * 1000)
    await pipe.wait_for("trades streamed after the restart", lambda: streamed_since(killed_at + 3000), timeout=60)
    assert restarted.terminate() == 0  # it publishes what it holds before it exits
    await pipe.wait_for(
        "the pipeline drained",
        lambda: pipe.drained([("RAW", "lake-writer"), ("LAKE", "transformer"), ("SILVER", "warehouse-loader")]),
        timeout=60,
    )

    market = LiveMarket(RandomWalkMarket([SYMBOL], SEED, start, trade_scale=SCALE, live_trades=True), 100)
    for exchange in EXCHANGES:
        rows = await pipe.fetch(
            "SELECT trade_id, (extract(epoch FROM ts) * 1000)::bigint AS ts, price FROM trades WHERE exchange = $1",
            exchange,
        )
        stored = sorted(row["trade_id"] for row in rows)
        newest = max(row["ts"] for row in rows)
        first = min(row["ts"] for row in rows) if exchange == "bybit" else since
        truth = market.trades(SYMBOL_ID, TradeWindow(start_ms=first, end_ms=newest, limit=10**7), 2**62)
        assert stored == sorted(str(trade.id) for trade in truth), f"{exchange}: trades differ from the trade log"

        candles = await pipe.fetch(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts, open, high, low, close, volume FROM ohlcv "
            "WHERE exchange = $1 AND timeframe = '1m' AND final ORDER BY ts",
            exchange,
        )
        assert candles, f"{exchange}: no closed candle"
        served = market.klines(SYMBOL_ID, INTERVALS["1m"], KlineWindow(candles_since, candles[-1]["ts"], 1000), 2**62)
        assert [tuple(row.values()) for row in candles] == [
            (k.open_time, *(float(v) for v in (k.open, k.high, k.low, k.close, k.volume))) for k in served
        ], f"{exchange}: candles differ"

        books = await pipe.fetch(
            "SELECT sequence, side, level, price, amount FROM order_books WHERE exchange = $1 ORDER BY sequence, side, level",
            exchange,
        )
        assert books, f"{exchange}: no book"
        by_sequence: dict[int, dict[str, list[tuple[float, float]]]] = {}
        for row in books:
            by_sequence.setdefault(row["sequence"], {"bid": [], "ask": []})[row["side"]].append(
                (row["price"], row["amount"])
            )
        for sequence, sides in by_sequence.items():
            tick = sequence if exchange == "bybit" else market.tick_of_update_id(sequence)
            top = market.book_at(SYMBOL_ID, tick).top(DEPTH)
            assert sides["bid"] == [(float(level.price), float(level.size)) for level in top.bids], (exchange, sequence)
            assert sides["ask"] == [(float(level.price), float(level.size)) for level in top.asks], (exchange, sequence)
            assert sides["bid"][0][0] < sides["ask"][0][0]


async def stalls_detected(metrics_url: str) -> bool:
    """Has every exchange's trade stream been reconnected by the watchdog (and for the drop)?"""
    async with aiohttp.ClientSession() as session, session.get(metrics_url) as response:
        text = await response.text()
    reasons: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cryptoflow_extractor_stream_reconnects_total" and sample.value > 0:
                if sample.labels["dataset"] == "trades":
                    reasons.setdefault(sample.labels["exchange"], set()).add(sample.labels["reason"])
    return all("stall" in reasons.get(exchange, set()) and len(reasons[exchange]) >= 2 for exchange in EXCHANGES)


async def faults_spent(pipe: Pipeline) -> bool:
    assert pipe.sim_url
    async with aiohttp.ClientSession() as session, session.get(f"{pipe.sim_url}/_sim/stream_faults") as response:
        faults = (await response.json())["faults"]
    return all(fault["spent"] for fault in faults)
