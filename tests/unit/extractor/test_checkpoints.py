"""Checkpoints: key layout, and a real JetStream KV bucket behind CheckpointStore."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from cryptoflow_contracts import Dataset
from cryptoflow_extractor.checkpoints import CheckpointStore, checkpoint_key
from nats.aio.client import Client
from nats.js.api import KeyValueConfig


def test_checkpoint_key_layout() -> None:
    assert checkpoint_key("binance", "BTC/USDT", Dataset.OHLCV, "1m") == "binance.BTC-USDT.ohlcv.1m"
    assert checkpoint_key("binance", "ETH/BTC", Dataset.OHLCV, "1h") == "binance.ETH-BTC.ohlcv.1h"
    assert checkpoint_key("binance", "BTC/USDT", Dataset.TICKER, None) == "binance.BTC-USDT.ticker"


def test_checkpoint_keys_are_distinct_per_job() -> None:
    keys = {
        checkpoint_key(exchange, symbol, dataset, timeframe)
        for exchange in ("binance", "kraken")
        for symbol in ("BTC/USDT", "ETH/USDT")
        for dataset in (Dataset.OHLCV, Dataset.TRADES)
        for timeframe in ("1m", "5m")
    }
    assert len(keys) == 2 * 2 * 2 * 2


@pytest.mark.parametrize("symbol", ["BTC.X/USDT", "BTC/*", "BTC/>"])
def test_checkpoint_key_rejects_bad_symbols(symbol: str) -> None:
    with pytest.raises(ValueError):
        checkpoint_key("binance", symbol, Dataset.OHLCV, "1m")


@pytest.fixture
async def nc(fresh_nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(fresh_nats_url)
    try:
        yield client
    finally:
        await client.close()


async def test_checkpoint_store_on_jetstream_kv(nc: Client) -> None:
    js = nc.jetstream()
    kv = await js.create_key_value(KeyValueConfig(bucket="checkpoints_test", history=1))
    store = CheckpointStore(kv)
    btc = checkpoint_key("binance", "BTC/USDT", Dataset.OHLCV, "1m")
    eth = checkpoint_key("binance", "ETH/USDT", Dataset.OHLCV, "1m")

    assert await store.next_since(btc) is None  # never run

    await store.advance(btc, 1_717_243_260_000, 1_717_243_200_000)
    assert await store.next_since(btc) == 1_717_243_260_000
    assert await store.next_since(eth) is None  # jobs do not share checkpoints

    await store.advance(btc, 1_717_243_320_000, 1_717_243_260_000)
    assert await store.next_since(btc) == 1_717_243_320_000

    # A restarted extractor (new connection, bucket looked up by name) resumes from the same place.
    other = await nats.connect(nc.connected_url.geturl() if nc.connected_url else "")
    try:
        resumed = CheckpointStore(await other.jetstream().key_value("checkpoints_test"))
        assert await resumed.next_since(btc) == 1_717_243_320_000
    finally:
        await other.close()

    # A deleted checkpoint reads as never run.
    await kv.delete(btc)
    assert await store.next_since(btc) is None
