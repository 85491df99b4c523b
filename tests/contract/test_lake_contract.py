"""One contract, every lake: file://, S3 (moto server) with conditional PUTs, under a prefix, and the
read-compare fallback. An object, once written, never changes; a conflicting PUT is refused and reported."""

from __future__ import annotations

import asyncio
import logging

import pytest
from cryptoflow_runtime.lake import Lake, ObjectConflictError, S3Lake, sha256_hex
from prometheus_client import REGISTRY

OBJECTS = {
    "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/1-a.ndjson.zst": b"btc day 1",
    "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-02/2-b.ndjson.zst": b"btc day 2",
    "bronze/ohlcv/exchange=binance/symbol=BTC-USDTX/date=2024-06-01/3-c.ndjson.zst": b"neighbour symbol",
    "bronze/trades/exchange=binance/symbol=ETH-USDT/date=2024-06-01/1-d.ndjson.zst": b"eth trades",
    "silver/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/1-a.parquet": b"PAR1 \x00\xff binary",
    "quarantine/x.parquet": b"",
}


def conflicts(layer: str) -> float:
    return REGISTRY.get_sample_value("cryptoflow_lake_conflicts_total", {"layer": layer}) or 0.0


async def test_put_then_get_every_object(lake: Lake) -> None:
    for key, data in OBJECTS.items():
        await lake.put(key, data)
    for key, data in OBJECTS.items():
        assert await lake.get(key) == data


async def test_exists(lake: Lake) -> None:
    key = "bronze/a/obj.bin"
    assert not await lake.exists(key)
    await lake.put(key, b"x")
    assert await lake.exists(key)
    assert not await lake.exists("bronze/a/obj.bi")
    assert not await lake.exists("bronze/a/obj.bin2")
    assert not await lake.exists("bronze/a")  # a folder is a prefix, not an object


async def test_get_of_a_missing_key_is_file_not_found(lake: Lake) -> None:
    with pytest.raises(FileNotFoundError):
        await lake.get("bronze/nothing/here")
    await lake.put("bronze/a/obj.bin", b"x")
    for missing in ("bronze/a/obj.bin2", "bronze/a"):
        with pytest.raises(FileNotFoundError):
            await lake.get(missing)


async def test_same_bytes_again_is_an_idempotent_no_op(lake: Lake) -> None:
    key, data = "bronze/a/obj.bin", b"same bytes"
    before = conflicts("bronze")
    for _ in range(3):
        await lake.put(key, bytes(data))
    assert await lake.get(key) == data
    assert await lake.list("") == [key]
    assert conflicts("bronze") == before


async def test_different_bytes_are_refused_and_reported(lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    key = "silver/ohlcv/obj.parquet"
    await lake.put(key, b"original")
    before = conflicts("silver")
    with caplog.at_level(logging.ERROR, logger="cryptoflow_runtime.lake.conflicts"):
        with pytest.raises(ObjectConflictError) as refused:
            await lake.put(key, b"ORIGINAL")  # same length: not a size check
    assert refused.value.key == key
    assert refused.value.existing_sha256 == sha256_hex(b"original")
    assert refused.value.new_sha256 == sha256_hex(b"ORIGINAL")
    assert key in str(refused.value)
    assert await lake.get(key) == b"original"
    assert conflicts("silver") == before + 1
    logged = [r for r in caplog.records if r.getMessage().startswith("lake object conflict")]
    assert len(logged) == 1 and logged[0].__dict__["key"] == key


async def test_an_empty_object_is_an_object(lake: Lake) -> None:
    await lake.put("quarantine/empty", b"")
    assert await lake.exists("quarantine/empty")
    assert await lake.get("quarantine/empty") == b""
    with pytest.raises(ObjectConflictError):
        await lake.put("quarantine/empty", b"x")


async def test_list_returns_exactly_the_keys_under_a_prefix_sorted(lake: Lake) -> None:
    assert await lake.list("") == []
    for key in sorted(OBJECTS, reverse=True):
        await lake.put(key, OBJECTS[key])
    prefixes = [
        "",
        "bronze/",
        "bronze/ohlcv/exchange=binance/",
        "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/",  # must not include symbol=BTC-USDTX
        "bronze/ohlcv/exchange=binance/symbol=BTC-USDT",  # a string prefix does include it
        "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-02/",
        "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-0",
        "silver/",
        "quarantine/x",
        "gold/",
        "bronze/nothing/",
    ]
    for prefix in prefixes:
        assert await lake.list(prefix) == sorted(k for k in OBJECTS if k.startswith(prefix)), prefix


async def test_concurrent_puts_of_the_same_bytes_all_succeed(lake: Lake) -> None:
    key, data = "bronze/race/same.bin", b"x" * 100_000
    await asyncio.gather(*(lake.put(key, data) for _ in range(8)))
    assert await lake.get(key) == data
    assert await lake.list("bronze/race/") == [key]


async def test_concurrent_puts_of_different_bytes_have_exactly_one_winner(lake: Lake) -> None:
    if isinstance(lake, S3Lake) and lake.conditional_writes is False:
        pytest.skip("the read-compare fallback is check-then-act: racing writers are only caught by conditional PUTs")
    key = "bronze/race/different.bin"
    payloads = [bytes([i]) * 50_000 for i in range(8)]
    results = await asyncio.gather(*(lake.put(key, p) for p in payloads), return_exceptions=True)
    winners = [p for p, r in zip(payloads, results, strict=True) if r is None]
    assert len(winners) == 1, results
    assert all(isinstance(r, ObjectConflictError) for r in results if r is not None)
    assert await lake.get(key) == winners[0]
