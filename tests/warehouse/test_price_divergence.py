"""price_divergence and the asset registry on a small set worked out by hand, and its alert rule.

Minute M (10 minutes before now, whole): 1m candles of M − 1 min (closed at M) and of M:
    binance BTC/USDT  close 100 (M−1), 104 (M);  kraken BTC/USD close 98 (M−1);  binance FOO/USDT close 2 (M−1)
    binance BTC/USDT 5m candle close 50 (M−1): not a 1m candle, never compared.
Snapshots:
    coingecko bitcoin        BTC  at M      price 101   → registry BTC: vs binance 100 → +1 %, vs kraken 98 → +3.0612… %
    coingecko bitcoin        BTC  at M+30s  price 97    → the same candle (M−1): −3 % and −1.0204… %
    coingecko bitcoin-cash-x BTC  at M      price 0.5   → its ticker BTC is the registry's bitcoin's: collision, no row
    coingecko foo-token      FOO  at M      price 2.1   → unregistered, the only FOO: unique_ticker FOO → +5 %
    coinpaprika btc-bitcoin  BTC  at M+1min price 104   → candle M: binance 104 → 0 % (kraken has no M candle)
A rule at 2.5 %: +3.06 % (kraken, M), −3 % (binance, M+30s) and +5 % (FOO) alert; the others do not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import polars as pl
import pytest
from cryptoflow_contracts import BatchReady, Dataset
from cryptoflow_warehouse_loader import alerts
from cryptoflow_warehouse_loader.config import AlertRule
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch

from .support import sample

MINUTE = timedelta(minutes=1)
M = datetime.now(UTC).replace(second=0, microsecond=0) - 10 * MINUTE


def batch(table: str, name: str, rows: int) -> BatchReady:
    return BatchReady(
        dataset=Dataset.MARKET_SNAPSHOT if table == "market_snapshots" else Dataset.OHLCV,
        table=table,
        exchange=name.split("-")[0],
        lake_url="file:///lake",
        key=f"silver/{table}/{name}.parquet",
        sha256="0" * 64,
        rows=rows,
        quarantined_rows=0,
        min_ts=None,
        max_ts=None,
        source_key=f"bronze/{name}.ndjson.zst",
        source_event_id=f"ObjectWritten-{name}",
        quality_score=1.0,
    )


def candles(exchange: str, symbol: str, timeframe: str, closes: dict[datetime, float]) -> pl.DataFrame:
    frame = sample("ohlcv", len(closes), exchange=exchange, symbol=symbol)
    ts = list(closes)
    values = list(closes.values())
    return frame.with_columns(
        pl.Series("timeframe", [timeframe] * len(ts)),
        pl.Series("ts", ts, dtype=frame.schema["ts"]),
        pl.Series("open", values),
        pl.Series("high", [v + 1 for v in values]),
        pl.Series("low", [v - 1 for v in values]),
        pl.Series("close", values),
    )


def snapshots(source: str, coins: list[tuple[str, str, datetime, float]]) -> pl.DataFrame:
    frame = sample("market_snapshots", len(coins), exchange=source)
    return frame.with_columns(
        pl.Series("symbol", [c[0] for c in coins]),
        pl.Series("asset_symbol", [c[1] for c in coins]),
        pl.Series("ts", [c[2] for c in coins], dtype=frame.schema["ts"]),
        pl.Series("price_usd", [c[3] for c in coins]),
    ).sort("symbol", "ts")


@pytest.fixture
async def loaded(warehouse: asyncpg.Connection) -> asyncpg.Connection:
    parts = [
        ("ohlcv", "binance-btc", candles("binance", "BTC/USDT", "1m", {M - MINUTE: 100.0, M: 104.0})),
        ("ohlcv", "binance-btc5m", candles("binance", "BTC/USDT", "5m", {M - MINUTE: 50.0})),
        ("ohlcv", "kraken-btc", candles("kraken", "BTC/USD", "1m", {M - MINUTE: 98.0})),
        ("ohlcv", "binance-foo", candles("binance", "FOO/USDT", "1m", {M - MINUTE: 2.0})),
        (
            "market_snapshots",
            "coingecko-1",
            snapshots(
                "coingecko",
                [
                    ("bitcoin", "BTC", M, 101.0),
                    ("bitcoin", "BTC", M + MINUTE / 2, 97.0),
                    ("bitcoin-cash-x", "BTC", M, 0.5),
                    ("foo-token", "FOO", M, 2.1),
                ],
            ),
        ),
        ("market_snapshots", "coinpaprika-1", snapshots("coinpaprika", [("btc-bitcoin", "BTC", M + MINUTE, 104.0)])),
    ]
    for table, name, frame in parts:
        await load_batch(warehouse, TABLES[table], frame, batch(table, name, frame.height))
    return warehouse


async def test_the_registry_maps_named_and_unique_coins_and_refuses_a_shared_ticker(loaded: asyncpg.Connection) -> None:
    mapping = {
        (r["source"], r["asset_id"]): (r["base"], r["mapping"])
        for r in await loaded.fetch("SELECT source, asset_id, base, mapping FROM asset_map")
    }
    assert mapping == {
        ("coingecko", "bitcoin"): ("BTC", "registry"),
        ("coingecko", "bitcoin-cash-x"): (None, "collision"),
        ("coingecko", "foo-token"): ("FOO", "unique_ticker"),
        ("coinpaprika", "btc-bitcoin"): ("BTC", "registry"),
    }
    # The operator settles the collision the other way round: the registry wins.
    await loaded.execute("UPDATE asset_registry SET base = 'BTCX' WHERE source = 'coingecko' AND asset_id = 'bitcoin'")
    await loaded.execute("INSERT INTO asset_registry VALUES ('coingecko', 'bitcoin-cash-x', 'BCX', 'test')")
    remapped = await loaded.fetch("SELECT asset_id, base FROM asset_map WHERE source = 'coingecko' ORDER BY asset_id")
    assert [(r["asset_id"], r["base"]) for r in remapped] == [
        ("bitcoin", "BTCX"),
        ("bitcoin-cash-x", "BCX"),
        ("foo-token", "FOO"),
    ]
    readable = await loaded.fetchrow(
        "SELECT source, asset_id, symbol, base, mapping, price_usd FROM asset_market_snapshots "
        "WHERE asset_id = 'foo-token'"
    )
    assert dict(readable) == {
        "source": "coingecko",
        "asset_id": "foo-token",
        "symbol": "FOO",
        "base": "FOO",
        "mapping": "unique_ticker",
        "price_usd": 2.1,
    }


async def test_price_divergence_against_the_close_of_the_minute_before(loaded: asyncpg.Connection) -> None:
    rows = await loaded.fetch(
        "SELECT source, asset_id, exchange, symbol, ts, candle_ts, aggregator_price, exchange_close, divergence_pct "
        "FROM price_divergence ORDER BY source, asset_id, ts, exchange"
    )
    got = [
        (r["source"], r["asset_id"], r["exchange"], r["symbol"], r["ts"], r["candle_ts"], r["exchange_close"])
        for r in rows
    ]
    assert got == [
        ("coingecko", "bitcoin", "binance", "BTC/USDT", M, M - MINUTE, 100.0),
        ("coingecko", "bitcoin", "kraken", "BTC/USD", M, M - MINUTE, 98.0),
        ("coingecko", "bitcoin", "binance", "BTC/USDT", M + MINUTE / 2, M - MINUTE, 100.0),
        ("coingecko", "bitcoin", "kraken", "BTC/USD", M + MINUTE / 2, M - MINUTE, 98.0),
        ("coingecko", "foo-token", "binance", "FOO/USDT", M, M - MINUTE, 2.0),
        ("coinpaprika", "btc-bitcoin", "binance", "BTC/USDT", M + MINUTE, M, 104.0),
    ]
    assert [r["divergence_pct"] for r in rows] == pytest.approx(
        [1.0, (101 / 98 - 1) * 100, -3.0, (97 / 98 - 1) * 100, 5.0, 0.0]
    )


async def test_a_divergence_rule_alerts_once_per_snapshot_and_market(loaded: asyncpg.Connection) -> None:
    rule = AlertRule(name="diverged", kind="price_divergence", threshold=2.5, window="1h")
    assert await alerts.evaluate(loaded, [rule]) == 3
    assert await alerts.evaluate(loaded, [rule]) == 0  # the same data: the same alerts, not new ones
    fired = await loaded.fetch(
        "SELECT symbol, exchanges, table_name, timeframe, observed_at, value, threshold FROM alerts ORDER BY value"
    )
    assert [(r["symbol"], r["exchanges"], r["observed_at"]) for r in fired] == [
        ("BTC/USDT", "binance,coingecko", M + MINUTE / 2),
        ("BTC/USD", "kraken,coingecko", M),
        ("FOO/USDT", "binance,coingecko", M),
    ]
    assert [r["value"] for r in fired] == pytest.approx([-3.0, (101 / 98 - 1) * 100, 5.0])
    assert {(r["table_name"], r["timeframe"], r["threshold"]) for r in fired} == {("market_snapshots", "1m", 2.5)}
    # Outside the rule's window nothing is looked at.
    stale = AlertRule(name="diverged-old", kind="price_divergence", threshold=2.5, window="1h")
    await loaded.execute("UPDATE market_snapshots_data SET ts = ts - interval '2 hours'")
    assert await alerts.evaluate(loaded, [stale]) == 0
    (pending,) = [p for p in await alerts.pending(loaded) if p.alert.symbol == "FOO/USDT"]
    assert pending.alert.kind == "price_divergence" and pending.alert.exchanges == ["binance", "coingecko"]
