"""CoinGecko and CoinPaprika end to end over the simulator: listings into `market_snapshots`, a
coin's price history into `aggregator_prices` and its candles into `aggregator_candles`.

The simulator's coins are its USD markets, priced at the close of their last closed 1m candle, with
provider keys required and the first requests of each provider answered 429 + Retry-After. The
extractor lists both providers (keys from its settings) and Binance's 1m candles; the warehouse
then holds every coin of both listings value for value, the registry maps bitcoin and btc-bitcoin
to BTC and leaves the colliding "classic" coin unmatched, and price_divergence finds each mapped
coin's aggregator price equal to the exchange's close of the minute before it. Bitcoin's hourly
price history and its closed candles (CoinGecko's 4-hour, CoinPaprika's daily) equal the
simulator's, value for value. The key appears in no log line and no bronze object.
"""

from __future__ import annotations

import functools
import json
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
from cryptoflow_exchange_sim import RandomWalkMarket
from cryptoflow_exchange_sim.aggregators import DAY_MS, HOUR_MS, coin_candles, coin_history, coins, grid
from cryptoflow_exchange_sim.intervals import INTERVALS
from cryptoflow_extractor.aggregators import provider_api
from cryptoflow_extractor.jobs import AggregatorSpec

from .harness import Pipeline

KEY = "cf-test-key-7c1d9e0a55b2"
SEED = 11
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


CANDLES = {"coingecko": ("bitcoin", INTERVALS["4h"]), "coinpaprika": ("btc-bitcoin", INTERVALS["1d"])}


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def jobs_file(pipe: Pipeline, start_ms: int, market_start_ms: int) -> Path:
    assert pipe.sim_url
    since = iso(start_ms)
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
                "candles": ["bitcoin"], "candles_since": iso(market_start_ms),
            },
            "coinpaprika": {
                "url": pipe.sim_url, "top": 10, "poll_interval_s": 1, "min_request_interval_s": 0.1,
                "history": ["btc-bitcoin"], "history_since": since,
                "candles": ["btc-bitcoin"], "candles_since": iso(market_start_ms),
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
    # Three hours of 1m candles and two or three hourly points of price history; the market itself
    # opened two days ago at midnight (UTC), so each provider has closed candles of bitcoin.
    start = (int(time.time() * 1000) // 60_000 - 180) * 60_000
    market_start = (start // DAY_MS - 2) * DAY_MS
    faults = ["--aggregator-rate-limited", "coingecko:2", "--aggregator-rate-limited", "coinpaprika:1"]
    pipe.start_simulator(
        ["--symbols", ",".join(SYMBOLS), "--seed", str(SEED), "--start", str(market_start), "--aggregator-key", KEY,
         *faults]
    )  # fmt: skip
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    pipe.start(
        "extractor",
        env={
            "EXTRACTOR_CONFIG": str(jobs_file(pipe, start, market_start)),
            "EXTRACTOR_COINGECKO_API_KEY": KEY,
            "EXTRACTOR_COINPAPRIKA_API_KEY": KEY,
        },
    )

    market = RandomWalkMarket(SYMBOLS, SEED, market_start)
    hours = grid(start, int(time.time() * 1000), HOUR_MS)
    (bitcoin,) = [c for c in coins(market, int(time.time() * 1000)) if c.coingecko_id == "bitcoin"]
    settle_ms = {p: int(provider_api(p, AggregatorSpec(), keyed=True).candle_settle_s * 1000) for p in CANDLES}

    def settled_candles(provider: str, now_ms: int) -> list[tuple[object, ...]]:
        """The provider's closed (and settled) candles of bitcoin from the market's start, as rows."""
        coin_id, interval = CANDLES[provider]
        found = coin_candles(market, bitcoin, interval, market_start, None, now_ms)
        return [
            (provider, coin_id, interval.name, c.open_time, float(c.open), float(c.high), float(c.low),
             float(c.close), *((float(c.volume_usd), float(c.market_cap)) if provider == "coinpaprika" else (None, None)))
            for c in found
            if c.closed(now_ms - settle_ms[provider])
        ]  # fmt: skip

    at_least = {p: len(settled_candles(p, int(time.time() * 1000))) for p in CANDLES}
    assert at_least["coingecko"] >= 6 and at_least["coinpaprika"] >= 1

    async def both_listed_and_diverging() -> bool:
        sources = await pipe.fetchval("SELECT count(DISTINCT exchange) FROM market_snapshots", default=0)
        divergences = await pipe.fetchval("SELECT count(DISTINCT source) FROM price_divergence", default=0)
        history = await pipe.fetchval("SELECT count(*) FROM aggregator_prices", default=0)
        candles = [
            await pipe.fetchval("SELECT count(*) FROM aggregator_candles WHERE exchange = $1", p, default=0) >= n
            for p, n in at_least.items()
        ]
        return bool(sources == 2 and divergences == 2 and history >= 2 * len(hours) and all(candles))

    await pipe.wait_for("both listings and their divergences", both_listed_and_diverging, timeout=120)

    # Every stored coin equals what the simulator listed at that minute (its market is a pure
    # function of seed, start and time).
    rows = await pipe.fetch(
        "SELECT exchange, symbol, (extract(epoch FROM ts) * 1000)::bigint AS ts, asset_symbol, name, price_usd, "
        "market_cap_usd, volume_24h_usd, circulating_supply, total_supply, max_supply, rank, pct_change_24h "
        "FROM market_snapshots ORDER BY ts, exchange, rank"
    )
    assert rows
    listings = functools.cache(lambda minute: coins(market, minute + 30_000))  # mid-minute: as of that minute
    for row in rows:
        listed = listings(row["ts"])
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
    # The candles: closed and settled ones only, from the first, value for value (a candle that
    # settled since the job's last poll may still be missing at the end).
    stored = await pipe.fetch(
        "SELECT exchange, symbol, timeframe, (extract(epoch FROM ts) * 1000)::bigint AS ts, open, high, low, close, "
        "volume, market_cap FROM aggregator_candles ORDER BY exchange, ts"
    )
    for provider in CANDLES:
        candles = [tuple(r.values()) for r in stored if r["exchange"] == provider]
        assert len(candles) >= at_least[provider]
        assert candles == settled_candles(provider, int(time.time() * 1000))[: len(candles)]
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
