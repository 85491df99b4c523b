"""Binance's trades and aggTrades archives through the whole pipeline, as jobs of a jobs file.

A short random walk: the two hours before the last UTC midnight come from the simulator's daily
`trades` and `aggTrades` zips, the half hour after it (the current day has no zip yet) by REST by
trade id. The warehouse's `trades` must be the simulator's trades, each once, in order (no gap
and no overlap where archive and REST meet); `agg_trades` the simulator's aggregation of the
archived day.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from cryptoflow_exchange_sim import RandomWalkMarket, TradeWindow
from cryptoflow_exchange_sim.binance import agg_trades_body, aggregate

from .harness import Pipeline

SEED = 13
SYMBOL = "BTC/USDT"
DAY_MS = 86_400_000
MINUTE_MS = 60_000


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def jobs_file(pipe: Pipeline, since_ms: int) -> Path:
    assert pipe.sim_url
    document = {
        "exchanges": {
            "binance": {
                "url": pipe.sim_url,
                "symbols": [SYMBOL],
                "datasets": {
                    "trades": {"source": "binance-archive", "since": iso(since_ms), "poll_interval_s": 0.5},
                    "agg_trades": {"source": "binance-archive", "since": iso(since_ms), "poll_interval_s": 5},
                },
            }
        }
    }
    path = pipe.workdir / "jobs.yaml"
    path.write_text(json.dumps(document))
    return path


async def test_trade_archives_then_rest_by_id_land_in_trades_and_agg_trades_without_gap_or_overlap(
    file_pipeline: Pipeline,
) -> None:
    pipe = file_pipeline
    now = int(time.time() * 1000)
    midnight = now - now % DAY_MS
    start = midnight - 2 * 60 * MINUTE_MS
    # The market ends half an hour into the day (or a little before now, in the day's first minutes,
    # when the archived day is all there is): a fixed set of trades to compare with.
    end = min(midnight + 30 * MINUTE_MS, (now // MINUTE_MS - 2) * MINUTE_MS)
    pipe.start_simulator(["--symbols", SYMBOL, "--seed", str(SEED), "--start", str(start), "--end", str(end)])
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    pipe.start("extractor", env={"EXTRACTOR_CONFIG": str(jobs_file(pipe, start))})

    walk = RandomWalkMarket([SYMBOL], SEED, start, end)
    trades = walk.trades("BTCUSDT", TradeWindow(start_ms=start, end_ms=end - 1, limit=10**9), now)
    expected = [
        (str(t.id), t.time_ms, float(t.price), float(t.qty), "sell" if t.is_buyer_maker else "buy",
         "buy" if t.is_buyer_maker else "sell")
        for t in trades
    ]  # fmt: skip
    archived = [t for t in trades if t.time_ms < midnight]
    aggregates = [
        (str(a["a"]), a["T"], float(str(a["p"])), float(str(a["q"])), str(a["f"]), str(a["l"]),
         "sell" if a["m"] else "buy")
        for a in agg_trades_body(aggregate(archived))
    ]  # fmt: skip

    async def loaded() -> bool:
        count = await pipe.fetchval("SELECT count(*) FROM trades", default=0)
        aggs = await pipe.fetchval("SELECT count(*) FROM agg_trades", default=0)
        return bool(count >= len(expected) and aggs >= len(aggregates))

    await pipe.wait_for(f"{len(expected)} trades and {len(aggregates)} aggTrades", loaded, timeout=120)
    rows = await pipe.fetch(
        "SELECT trade_id, (extract(epoch FROM ts) * 1000)::bigint, price, amount, side, maker_side FROM trades "
        "WHERE exchange = 'binance' AND symbol = $1 ORDER BY ts, trade_id::bigint",
        SYMBOL,
    )
    assert [tuple(r.values()) for r in rows] == expected
    agg_rows = await pipe.fetch(
        "SELECT agg_id, (extract(epoch FROM ts) * 1000)::bigint, price, amount, first_trade_id, last_trade_id, side "
        "FROM agg_trades WHERE exchange = 'binance' AND symbol = $1 ORDER BY ts, agg_id::bigint",
        SYMBOL,
    )
    assert [tuple(r.values()) for r in agg_rows] == aggregates
    if end > midnight:
        # The day after the archived one came by REST, by trade id (historicalTrades).
        stats = await pipe.simulator_stats()
        assert stats.get("requests", {}).get("binance.trades", 0) >= 1, stats
