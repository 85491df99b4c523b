"""CoinGecko and CoinPaprika end to end over the simulator: listings into `market_snapshots`.

The simulator's coins are its USD markets, priced at the close of their last closed 1m candle, with
provider keys required and the first requests of each provider answered 429 + Retry-After. The
extractor lists both providers (keys from its settings) and Binance's 1m candles; the warehouse
then holds every coin of both listings value for value, the registry maps bitcoin and btc-bitcoin
to BTC and leaves the colliding "classic" coin unmatched, and price_divergence finds each mapped
coin's aggregator price equal to the exchange's close of the minute before it. The key appears in
no log line and no bronze object.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
from cryptoflow_exchange_sim import RandomWalkMarket
from cryptoflow_exchange_sim.aggregators import HOUR_MS, coin_history, coins, grid

from .harness import Pipeline

KEY = "cf-test-key-7c1d9e0a55b2"
SEED = 11
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def jobs_file(pipe: Pipeline, start_ms: int) -> Path:
    assert pipe.sim_url
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_ms / 1000))
    document = {
        "exchanges": {
            "binance": {
                "url": pipe.sim_url,
                "symbols": SYMBOLS,
                "datasets": {"ohlcv": {"timeframes": ["1m"], "since": since, "poll_interval_s": 0.5}},
            }
        },
        "aggregators": {
            "coingecko": {
                "url": pipe.sim_url, "top": 10, "poll_interval_s": 1, "min_request_interval_s": 0.1,
                "history": ["bitcoin"], "history_since": since,
            },
            "coinpaprika": {
                "url": pipe.sim_url, "top": 10, "poll_interval_s": 1, "min_request_interval_s": 0.1,
                "history": ["btc-bitcoin"], "history_since": since,
            },
        },
    }  # fmt: skip
    path = pipe.workdir / "jobs.yaml"
    path.write_text(json.dumps(document))
    return path


async def test_both_aggregators_land_in_market_snapshots_with_429s_mapped_and_diverging_by_nothing(
    file_pipeline: Pipeline,
) -> None:
    pipe = file_pipeline
    # Three hours of market: 1m candles, and two or three hourly points of price history.
    start = (int(time.time() * 1000) // 60_000 - 180) * 60_000
    faults = ["--aggregator-rate-limited", "coingecko:2", "--aggregator-rate-limited", "coinpaprika:1"]
    pipe.start_simulator(
        ["--symbols", ",".join(SYMBOLS), "--seed", str(SEED), "--start", str(start), "--aggregator-key", KEY, *faults]
    )
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    pipe.start(
        "extractor",
        env={
            "EXTRACTOR_CONFIG": str(jobs_file(pipe, start)),
            "EXTRACTOR_COINGECKO_API_KEY": KEY,
            "EXTRACTOR_COINPAPRIKA_API_KEY": KEY,
        },
    )

    market = RandomWalkMarket(SYMBOLS, SEED, start)
    hours = grid(start, int(time.time() * 1000), HOUR_MS)

    async def both_listed_and_diverging() -> bool:
        sources = await pipe.fetchval("SELECT count(DISTINCT exchange) FROM market_snapshots", default=0)
        divergences = await pipe.fetchval("SELECT count(DISTINCT source) FROM price_divergence", default=0)
        history = await pipe.fetchval("SELECT count(*) FROM aggregator_prices", default=0)
        return bool(sources == 2 and divergences == 2 and history >= 2 * len(hours))

    await pipe.wait_for("both listings and their divergences", both_listed_and_diverging, timeout=120)

    # Every stored coin equals what the simulator listed at that minute (its market is a pure
    # function of seed, start and time).
    rows = await pipe.fetch(
        "SELECT exchange, symbol, (extract(epoch FROM ts) * 1000)::bigint AS ts, asset_symbol, name, price_usd, "
        "market_cap_usd, volume_24h_usd, circulating_supply, total_supply, max_supply, rank, pct_change_24h "
        "FROM market_snapshots ORDER BY ts, exchange, rank"
    )
    assert rows
    for row in rows:
        listed = coins(market, row["ts"] + 30_000)  # mid-minute: the coins as of that whole minute
        rank = row["rank"]
        coin = listed[rank - 1]
        assert coin.updated_ms == row["ts"]
        asset_id = coin.coingecko_id if row["exchange"] == "coingecko" else coin.coinpaprika_id
        assert (row["symbol"], row["asset_symbol"], row["name"]) == (asset_id, coin.symbol, coin.name)
        assert row["price_usd"] == float(coin.price)
        assert row["market_cap_usd"] == float(coin.market_cap)
        assert row["circulating_supply"] == float(coin.circulating)
        assert row["total_supply"] == float(coin.total)
        assert row["max_supply"] == (float(coin.max_supply) if coin.max_supply is not None else None)
        assert row["volume_24h_usd"] == float(Decimal(coin.volume_24h_usd))
        assert row["pct_change_24h"] == round(coin.change_24h_pct, 5 if row["exchange"] == "coingecko" else 2)
    # The price histories: bitcoin's hourly points from both providers, value for value.
    (bitcoin,) = [c for c in coins(market, int(time.time() * 1000)) if c.coingecko_id == "bitcoin"]
    expected = coin_history(market, bitcoin, hours, int(time.time() * 1000))
    assert len(expected) == len(hours) >= 2
    for source, coin_id in (("coingecko", "bitcoin"), ("coinpaprika", "btc-bitcoin")):
        history = await pipe.fetch(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts, price_usd, market_cap_usd, volume_24h_usd "
            "FROM aggregator_prices WHERE exchange = $1 AND symbol = $2 ORDER BY ts",
            source,
            coin_id,
        )
        assert [tuple(r.values()) for r in history][: len(expected)] == [
            (p.ts, float(p.price), float(p.market_cap), float(p.volume_24h_usd)) for p in expected
        ]
    latest = {(r["exchange"], r["symbol"]) for r in rows}
    assert {("coingecko", "bitcoin"), ("coingecko", "ethereum"), ("coinpaprika", "btc-bitcoin")} <= latest

    # The registry: the named coins map to their base, the coin sharing a ticker maps to nothing.
    mapping = {
        (r["source"], r["asset_id"]): (r["base"], r["mapping"])
        for r in await pipe.fetch("SELECT source, asset_id, base, mapping FROM asset_map")
    }
    assert mapping[("coingecko", "bitcoin")] == ("BTC", "registry")
    assert mapping[("coinpaprika", "eth-ethereum")] == ("ETH", "registry")
    classic = [key for key in mapping if key[1].endswith("-classic")]
    assert len(classic) == 2 and all(mapping[key] == (None, "collision") for key in classic)

    # The aggregator's price is the close of the minute before it: no divergence at all.
    divergences = await pipe.fetch("SELECT source, asset_id, symbol, divergence_pct FROM price_divergence")
    assert {(r["source"], r["symbol"]) for r in divergences} >= {
        ("coingecko", "BTC/USDT"),
        ("coinpaprika", "ETH/USDT"),
    }
    assert all(r["divergence_pct"] == 0 for r in divergences), divergences
    assert not any(r["asset_id"].endswith("-classic") for r in divergences)

    # 429s answered with Retry-After were waited out, and the key was sent (the simulator refuses
    # any request without it) but never written anywhere.
    async with aiohttp.ClientSession() as http, http.get(f"{pipe.sim_url}/_sim/aggregators") as response:
        aggregators = await response.json()
    assert aggregators["statuses"]["coingecko.429"] == 2 and aggregators["statuses"]["coinpaprika.429"] == 1
    assert not any(status.endswith(".401") for status in aggregators["statuses"])
    assert aggregators["keys_seen"]["coingecko"] >= 3 and aggregators["keys_seen"]["coinpaprika"] >= 2
    extractor_log = next(p for p in pipe.procs if p.name == "extractor").log().splitlines()
    records = [json.loads(line) for line in extractor_log if line.startswith("{")]
    waited = {r.get("provider") for r in records if r.get("msg") == "rate limited"}
    assert waited == {"coingecko", "coinpaprika"}, extractor_log[-40:]
    pipe.stop_all()
    leaked = [p.log_path.name for p in pipe.procs if KEY in p.log()]
    assert leaked == [], f"the API key is in {leaked}"
    lake = Path(pipe.lake_url.removeprefix("file://"))
    bronze = list(lake.rglob("*"))
    assert any("market_snapshot" in str(path) for path in bronze)
    assert not [path for path in bronze if path.is_file() and KEY.encode() in path.read_bytes()]
