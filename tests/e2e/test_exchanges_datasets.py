"""Four datasets × three exchanges: the simulator's values reach the warehouse (ohlcv) and RAW."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import zstandard
from cryptoflow_exchange_sim import (
    INTERVALS,
    KlineWindow,
    RandomWalkMarket,
    TradeWindow,
    book_snapshot,
    ticker_snapshot,
)

from .harness import Pipeline

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000
N = 120
SEED = 11
EXCHANGES = ("binance", "bybit", "gate")

JOBS = """
exchanges:
{blocks}
"""
BLOCK = """  {exchange}:
    url: {url}
    rate_limit_ms: 20
    symbols: [BTC/USDT]
    datasets:
      ohlcv: {{timeframes: [1m], since: 2024-01-01T00:00:00Z, page_limit: 50, poll_interval_s: 1}}
      ticker: {{poll_interval_s: 1}}
      orderbook: {{depth: 5, poll_interval_s: 1}}
      trades: {{since: 2024-01-01T00:00:00Z, poll_interval_s: 1, page_limit: 200}}
"""


def write_jobs(path: Path, sim_url: str) -> None:
    blocks = "".join(BLOCK.format(exchange=exchange, url=sim_url) for exchange in EXCHANGES)
    path.write_text(JOBS.format(blocks=blocks))


async def test_four_datasets_from_three_exchanges_equal_what_the_simulator_served(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    end = T0 + N * MINUTE
    pipe.start_simulator(
        ["--exchange", "all", "--symbols", "BTC/USDT", "--seed", str(SEED), "--start", str(T0), "--end", str(end)]
    )
    assert pipe.sim_url
    jobs = pipe.workdir / "jobs.yaml"
    write_jobs(jobs, pipe.sim_url)
    pipe.extra_env["EXTRACTOR_CONFIG"] = str(jobs)
    pipe.start_all()

    async def ohlcv_complete() -> bool:
        return await pipe.ohlcv_count() == len(EXCHANGES) * N

    await pipe.wait_for("ohlcv from every exchange", ohlcv_complete, timeout=120)

    market = RandomWalkMarket(["BTC/USDT"], SEED, T0, end)
    now = int(time.time() * 1000)
    served = market.klines("BTCUSDT", INTERVALS["1m"], KlineWindow(T0, end, 1000), now)
    expected_candles = [(k.open_time, *(float(v) for v in (k.open, k.high, k.low, k.close, k.volume))) for k in served]
    assert len(expected_candles) == N
    for exchange in EXCHANGES:
        rows = await pipe.fetch(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume FROM ohlcv "
            "WHERE exchange = $1 ORDER BY ts",
            exchange,
        )
        assert [tuple(r.values()) for r in rows] == expected_candles, exchange

    # Issue 11: Binance's klines carry more than ccxt's six fields; the warehouse keeps them, from
    # the native bronze. Bybit's and Gate's candles have none of them.
    extras = "quote_volume, trade_count, taker_buy_base_volume, taker_buy_quote_volume"
    for exchange in EXCHANGES:
        rows = await pipe.fetch(f"SELECT {extras} FROM ohlcv WHERE exchange = $1 ORDER BY ts", exchange)
        if exchange == "binance":
            expected = [
                (float(k.quote_volume), k.trade_count, float(k.taker_buy_base_volume), float(k.taker_buy_quote_volume))
                for k in served
            ]
            assert [tuple(r.values()) for r in rows] == expected
            assert all(r["trade_count"] > 0 for r in rows)
        else:
            assert all(set(r.values()) == {None} for r in rows), exchange

    ticker = ticker_snapshot(market, "BTCUSDT", now)
    book = book_snapshot(market, "BTCUSDT", 5, now)
    sim_trades = {t.id: t for t in market.trades("BTCUSDT", TradeWindow(start_ms=T0, end_ms=end, limit=10**6), now)}

    async def every_dataset_in_raw() -> bool:
        kinds = {
            (e["exchange"], e["dataset"])
            for e in map(orjson.loads, [m.data for m in await pipe.stream_messages("RAW")])
        }
        return all((ex, ds) in kinds for ex in EXCHANGES for ds in ("ticker", "orderbook", "trades"))

    await pipe.wait_for("ticker, orderbook and trades from every exchange", every_dataset_in_raw, timeout=60)

    async def binance_trades_complete() -> bool:
        # Binance pages trade history by time: all of it arrives, page by page (a CI run once
        # looked while the last pages were still being fetched).
        pages = [orjson.loads(m.data) for m in await pipe.stream_messages("RAW")]
        trades = {
            t["id"] for e in pages if (e["exchange"], e["dataset"]) == ("binance", "trades") for t in e["payload"]
        }
        return len(trades) >= len(sim_trades)

    await pipe.wait_for("every binance trade in RAW", binance_trades_complete, timeout=60)
    raw = [orjson.loads(m.data) for m in await pipe.stream_messages("RAW")]
    for exchange in EXCHANGES:
        tickers = [e["payload"] for e in raw if e["exchange"] == exchange and e["dataset"] == "ticker"]
        assert tickers and all(t["last"] == float(ticker.last) for t in tickers), exchange
        assert all(t["symbol"] == "BTC/USDT" for t in tickers)

        books = [e["payload"] for e in raw if e["exchange"] == exchange and e["dataset"] == "orderbook"]
        assert books, exchange
        for payload in books:
            assert payload["bids"] == [[float(level.price), float(level.size)] for level in book.bids], exchange
            assert payload["asks"] == [[float(level.price), float(level.size)] for level in book.asks], exchange

        trades = [t for e in raw if e["exchange"] == exchange and e["dataset"] == "trades" for t in e["payload"]]
        ids = [str(t["id"]) for t in trades]
        assert trades and len(ids) == len(set(ids)), f"{exchange}: duplicate trades across pages"
        for trade in trades:
            source = sim_trades[int(trade["id"])]
            assert (trade["timestamp"], trade["price"], trade["amount"]) == (
                source.time_ms,
                float(source.price),
                float(source.qty),
            ), exchange
        if exchange == "binance":
            # Binance pages history by time: every trade since the start, exactly once.
            assert sorted(int(i) for i in ids) == sorted(sim_trades)

    # Issue 11: trades keep the exchange's own maker side where it states it (Binance's
    # isBuyerMaker, read from the native body): the warehouse's equals the simulator's.
    async def binance_trades_loaded() -> bool:
        count = await pipe.fetchval("SELECT count(*) FROM trades WHERE exchange = 'binance'", default=0)
        return int(count) >= len(sim_trades)

    await pipe.wait_for("every binance trade in the warehouse", binance_trades_loaded, timeout=60)
    loaded = await pipe.fetch("SELECT exchange, trade_id, side, maker_side FROM trades")
    binance_sides = {r["trade_id"]: r["maker_side"] for r in loaded if r["exchange"] == "binance"}
    assert binance_sides == {
        str(trade_id): "buy" if trade.is_buyer_maker else "sell" for trade_id, trade in sim_trades.items()
    }
    assert all(r["maker_side"] != r["side"] for r in loaded if r["exchange"] == "binance")
    others = [r for r in loaded if r["exchange"] != "binance"]
    assert others and all(r["maker_side"] is None for r in others)

    # Issue 11: bronze keeps what the exchange sent. Binance's klines as received: all twelve
    # fields (quote volume, trade count, taker volumes...), with the request and its weight.
    lake = Path(pipe.lake_url.removeprefix("file://"))
    objects = sorted((lake / "bronze" / "ohlcv" / "exchange=binance").rglob("*.ndjson.zst"))
    snapshots = [
        orjson.loads(line)
        for path in objects
        for line in zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 30).splitlines()
    ]
    assert snapshots and all(s["schema_version"] == 2 for s in snapshots)
    native_klines = {}
    for snapshot in snapshots:
        (call,) = snapshot["native"]
        assert call["method"] == "fetchOHLCV" and call["market"]["id"] == "BTCUSDT"
        (response,) = call["responses"]
        assert (response["method"], response["path"], response["status"]) == ("GET", "/api/v3/klines", 200)
        assert response["params"]["symbol"] == "BTCUSDT" and int(response["headers"]["x-mbx-used-weight-1m"]) > 0
        native_klines.update({row[0]: row for row in orjson.loads(response["body"])})
    served_klines = {k.open_time: list(k) for k in served}
    assert all(len(row) == 12 for row in native_klines.values())
    assert {ts: native_klines[ts] for ts in served_klines} == served_klines
