"""Marts and alert rules on a small data set whose numbers are worked out by hand below."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import nats
import orjson
import polars as pl
import pytest
from cryptoflow_contracts import BatchReady, Dataset, KnownGap, Stream
from cryptoflow_runtime import ensure_streams
from cryptoflow_warehouse_loader import alerts, marts
from cryptoflow_warehouse_loader.config import AlertRule
from cryptoflow_warehouse_loader.gaps import record_gap
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch
from faststream.nats import NatsBroker

T = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
LAST = 744  # the latest candle: T + 744 h (31 days)

# binance BTC/USDT, 1h candles k = 0..744, close 100 except:
BINANCE_CLOSES = {LAST: 110.0, LAST - 24: 88.0, LAST - 168: 55.0, LAST - 720: 220.0}
# Worked out by hand:
#   last price 110; 1h ago (k=743) 100 → +10 %; 24h ago (k=720) 88 → 110/88 − 1 = +25 %;
#   7d ago (k=576) 55 → +100 %; 30d ago (k=24) 220 → −50 %.
#   24h window = k 721..744: volume 23 × 1 + 5 = 28, high max(101, 111) = 111, low 99, 24 candles.
# kraken BTC/USDT: k=743 close 100, k=744 close 111.1 → no candle 24h back: change unknown;
#   24h volume 1 + 5 = 6 (every 1h series has volume 5 on its k=744 candle, 1 elsewhere);
#   spread at T+744h: |110 − 111.1| / 110 = 1.0 %.
# A 4h resampled binance series (close 500) must be ignored: the overview uses the finest timeframe.


def candles(
    exchange: str, symbol: str, timeframe: str, ks: range, closes: dict[int, float], **extra: object
) -> pl.DataFrame:
    step = {"1h": 1, "4h": 4}[timeframe]
    rows = []
    for k in ks:
        close = closes.get(k, 100.0)
        rows.append(
            {
                "exchange": exchange,
                "symbol": symbol,
                "timeframe": timeframe,
                "ts": T + k * step * HOUR,
                "open": close,
                "high": close + 1,
                "low": close - 1,
                "close": close,
                "volume": 5.0 if (k == LAST and timeframe == "1h") else 1.0,
                "resampled": timeframe != "1h",
                "final": True,
                "source_event_id": f"RawSnapshot-{exchange}-{k}",
                **extra,
            }
        )
    return pl.DataFrame(rows)


def batch(name: str, rows: int, quality: float) -> BatchReady:
    return BatchReady(
        dataset=Dataset.OHLCV,
        table="ohlcv",
        exchange=name.split("-")[0],
        lake_url="file:///lake",
        key=f"silver/ohlcv/exchange={name.split('-')[0]}/symbol=BTC-USDT/{name}.parquet",
        sha256="0" * 64,
        rows=rows,
        quarantined_rows=0,
        min_ts=None,
        max_ts=None,
        source_key=f"bronze/ohlcv/{name}.ndjson.zst",
        source_event_id=f"ObjectWritten-{name}",
        quality_score=quality,
    )


@pytest.fixture
async def loaded(warehouse: asyncpg.Connection) -> asyncpg.Connection:
    ohlcv = TABLES["ohlcv"]
    parts = [
        ("binance-1", candles("binance", "BTC/USDT", "1h", range(0, 401), BINANCE_CLOSES), 1.0),
        ("binance-2", candles("binance", "BTC/USDT", "1h", range(401, LAST + 1), BINANCE_CLOSES), 0.8),
        (
            "binance-4h",
            candles(
                "binance", "BTC/USDT", "4h", range(0, LAST // 4 + 1), {}, close=500.0, open=500.0, high=501.0, low=499.0
            ),
            1.0,
        ),
        ("kraken-1", candles("kraken", "BTC/USDT", "1h", range(LAST - 1, LAST + 1), {LAST: 111.1}), 1.0),
        ("coinbase-1", candles("coinbase", "ETH/USDT", "1h", range(LAST, LAST + 1), {LAST: 3000.0}), 1.0),
    ]
    for name, frame, quality in parts:
        await load_batch(warehouse, ohlcv, frame, batch(name, frame.height, quality))
    await record_gap(
        warehouse,
        KnownGap(
            exchange="binance",
            symbol="BTC/USDT",
            dataset=Dataset.OHLCV,
            timeframe="1h",
            start_ts=int((T + 10 * HOUR).timestamp() * 1000),
            end_ts=int((T + 12 * HOUR).timestamp() * 1000),
            missing=3,
            detected_at=T + 800 * HOUR,
        ),
    )
    await marts.refresh(warehouse)
    return warehouse


async def test_market_overview(loaded: asyncpg.Connection) -> None:
    rows = {(r["exchange"], r["symbol"]): dict(r) for r in await loaded.fetch("SELECT * FROM market_overview")}
    assert set(rows) == {("binance", "BTC/USDT"), ("kraken", "BTC/USDT"), ("coinbase", "ETH/USDT")}
    binance = rows[("binance", "BTC/USDT")]
    assert (binance["timeframe"], binance["as_of"]) == ("1h", T + LAST * HOUR)
    assert (binance["last_price"], binance["price_24h_ago"]) == (110.0, 88.0)
    assert binance["change_24h_pct"] == pytest.approx(25.0)
    assert (binance["volume_24h"], binance["high_24h"], binance["low_24h"], binance["candles_24h"]) == (
        28.0,
        111.0,
        99.0,
        24,
    )
    kraken = rows[("kraken", "BTC/USDT")]
    assert (kraken["last_price"], kraken["price_24h_ago"], kraken["change_24h_pct"]) == (111.1, None, None)
    assert (kraken["volume_24h"], kraken["candles_24h"]) == (6.0, 2)
    assert rows[("coinbase", "ETH/USDT")]["last_price"] == 3000.0


async def test_performance(loaded: asyncpg.Connection) -> None:
    row = await loaded.fetchrow("SELECT * FROM performance WHERE exchange = 'binance' AND symbol = 'BTC/USDT'")
    assert row is not None
    assert row["last_price"] == 110.0
    assert row["return_1h_pct"] == pytest.approx(10.0)
    assert row["return_24h_pct"] == pytest.approx(25.0)
    assert row["return_7d_pct"] == pytest.approx(100.0)
    assert row["return_30d_pct"] == pytest.approx(-50.0)
    kraken = await loaded.fetchrow("SELECT * FROM performance WHERE exchange = 'kraken'")
    assert kraken is not None
    assert kraken["return_1h_pct"] == pytest.approx(11.1)
    assert kraken["return_24h_pct"] is None


async def test_cross_exchange_spread(loaded: asyncpg.Connection) -> None:
    rows = [dict(r) for r in await loaded.fetch("SELECT * FROM cross_exchange_spread")]
    assert len(rows) == 1
    spread = rows[0]
    assert (spread["symbol"], spread["exchange_a"], spread["exchange_b"]) == ("BTC/USDT", "binance", "kraken")
    assert (spread["as_of"], spread["price_a"], spread["price_b"]) == (T + LAST * HOUR, 110.0, 111.1)
    assert spread["spread_pct"] == pytest.approx(1.0)


async def test_data_freshness_and_quality(loaded: asyncpg.Connection) -> None:
    row = await loaded.fetchrow(
        "SELECT * FROM data_freshness WHERE exchange = 'binance' AND symbol = 'BTC/USDT' AND timeframe = '1h'"
    )
    assert row is not None
    assert (row["table_name"], row["dataset"], row["first_ts"], row["last_ts"]) == (
        "ohlcv",
        "ohlcv",
        T,
        T + LAST * HOUR,
    )
    assert row["covered_until"] == T + (LAST + 1) * HOUR
    assert row["rows_received"] == LAST + 1
    assert (row["batches"], row["min_quality"], row["last_quality"]) == (2, 0.8, 0.8)
    assert row["avg_quality"] == pytest.approx(0.9)
    assert (row["known_gaps"], row["known_missing"]) == (1, 3)
    assert row["lag"] > timedelta(days=365)


RULES = [
    AlertRule(name="move-24h", kind="price_move", threshold=20.0, window="24h"),
    AlertRule(name="move-1h", kind="price_move", threshold=15.0, window="1h"),
    AlertRule(name="spread", kind="spread", threshold=0.5),
    AlertRule(name="stale", kind="staleness", threshold=3600.0, tables=["ohlcv"]),
]


async def test_alert_rules_fire_once_and_are_published(loaded: asyncpg.Connection, fresh_nats_url: str) -> None:
    # move-24h: binance +25 % ≥ 20 (kraken and coinbase have no 24h price); move-1h: 10 % and 11.1 % < 15;
    # spread: 1.0 % ≥ 0.5; stale: all four ohlcv series (binance 1h and 4h, kraken, coinbase) are from 2024.
    assert await alerts.evaluate(loaded, RULES) == 6
    assert await alerts.evaluate(loaded, RULES) == 0  # the same data: the same alerts, not new ones
    by_rule = {}
    for r in await loaded.fetch("SELECT * FROM alerts ORDER BY id"):
        by_rule.setdefault(r["rule"], []).append(dict(r))
    assert {rule: len(found) for rule, found in by_rule.items()} == {"move-24h": 1, "spread": 1, "stale": 4}
    move = by_rule["move-24h"][0]
    assert (move["exchanges"], move["symbol"], move["observed_at"]) == ("binance", "BTC/USDT", T + LAST * HOUR)
    assert move["value"] == pytest.approx(25.0)
    assert "moved 25.00% over 24h" in move["message"]
    assert by_rule["spread"][0]["exchanges"] == "binance,kraken"

    broker = NatsBroker(fresh_nats_url)
    await broker.connect()
    nc = await nats.connect(fresh_nats_url)
    try:
        await ensure_streams(nc.jetstream())
        assert await alerts.publish_pending(loaded, broker) == 6
        assert await alerts.publish_pending(loaded, broker) == 0
        info = await nc.jetstream().stream_info(Stream.ALERTS.value)
        assert info.state.messages == 6
        sub = await nc.jetstream().subscribe(
            "cryptoflow.alerts.move-24h", stream=Stream.ALERTS.value, ordered_consumer=True
        )
        event = orjson.loads((await sub.next_msg(timeout=5)).data)
        assert (event["rule"], event["kind"], event["exchanges"], event["symbol"]) == (
            "move-24h",
            "price_move",
            ["binance"],
            "BTC/USDT",
        )
        assert event["value"] == pytest.approx(25.0)
    finally:
        await nc.close()
        await broker.stop()
    assert await loaded.fetchval("SELECT count(*) FROM alerts WHERE published_at IS NULL OR event_id IS NULL") == 0
