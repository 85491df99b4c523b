"""One bronze object → silver/quarantine keys and Parquet, and the BatchReady / DeadLetter announcing them."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from cryptoflow_contracts import Dataset, ObjectWritten, RawSnapshot, Stage
from cryptoflow_lake_writer.objects import build_objects
from cryptoflow_runtime import PoisonMessageError
from cryptoflow_runtime.lake import FileLake, sha256_hex
from cryptoflow_transformer.batches import layer_key, transform_object

MINUTE = 60_000
T0 = int(datetime(2024, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
BRONZE = "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/1717243200000-0123abcd.ndjson.zst"


@pytest.mark.parametrize("layer", ["silver", "quarantine"])
def test_layer_key_maps_bronze_to_layer(layer: str) -> None:
    assert layer_key(BRONZE, layer) == (
        f"{layer}/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/1717243200000-0123abcd.parquet"
    )


def test_layer_key_keeps_the_partition_and_name() -> None:
    silver = layer_key(BRONZE, "silver")
    assert silver.split("/")[1:-1] == BRONZE.split("/")[1:-1]
    assert silver.rsplit("/", 1)[1].removesuffix(".parquet") == BRONZE.rsplit("/", 1)[1].removesuffix(".ndjson.zst")
    assert layer_key(BRONZE, "silver") != layer_key(BRONZE, "quarantine")


@pytest.mark.parametrize("key", ["silver/ohlcv/x.parquet", "bronzeage/x.ndjson.zst", "lake/bronze/x.ndjson.zst", ""])
def test_layer_key_refuses_non_bronze_keys(key: str) -> None:
    with pytest.raises(PoisonMessageError):
        layer_key(key, "silver")


def snapshot(payload: list[Any], *, first_ts: int = T0, fetched_at: datetime | None = None) -> RawSnapshot:
    return RawSnapshot(
        dataset=Dataset.OHLCV,
        exchange="binance",
        symbol="BTC/USDT",
        timeframe="1m",
        fetched_at=fetched_at or datetime(2024, 6, 1, 13, 0, tzinfo=UTC),
        request={"symbol": "BTC/USDT", "timeframe": "1m", "since": first_ts},
        payload=payload,
        first_ts=first_ts,
        last_ts=max(int(c[0]) for c in payload),
    )


async def store_bronze(lake: FileLake, snapshots: list[RawSnapshot]) -> ObjectWritten:
    (obj,) = build_objects(snapshots)
    await lake.put(obj.key, obj.data)
    return ObjectWritten(
        dataset=obj.dataset,
        exchange=obj.exchange,
        lake_url=lake.url,
        key=obj.key,
        sha256=sha256_hex(obj.data),
        bytes=len(obj.data),
        records=len(obj.event_ids),
        source_event_ids=obj.event_ids,
    )


async def test_transform_object_writes_silver_and_quarantine(tmp_path: Path) -> None:
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    good = [[T0 + i * MINUTE, 10.0 + i, 12.0 + i, 9.0 + i, 11.0 + i, 1.0 + i] for i in range(3)]
    bad = [[T0 + 3 * MINUTE, 10.0, 12.0, 9.0, 11.0, -1.0], [T0 + 4 * MINUTE, 10.0, None, 9.0, 11.0, 1.0]]
    written = await store_bronze(lake, [snapshot(good + bad)])

    result = await transform_object(lake, written)

    batch = result.batch
    assert batch is not None
    assert batch.key == layer_key(written.key, "silver")
    assert batch.table == "ohlcv"
    assert batch.source_key == written.key
    assert batch.source_event_id == written.event_id
    assert batch.lake_url == lake.url
    assert (batch.rows, batch.quarantined_rows) == (3, 2)
    assert (batch.min_ts, batch.max_ts) == (T0, T0 + 2 * MINUTE)
    assert batch.quality_score == pytest.approx(3 / 5)
    silver = await lake.get(batch.key)
    assert sha256_hex(silver) == batch.sha256
    frame = pl.read_parquet(io.BytesIO(silver))
    assert frame["close"].to_list() == [c[4] for c in good]
    assert frame["ts"].dt.epoch("ms").to_list() == [c[0] for c in good]

    letter = result.quarantine
    assert letter is not None
    assert letter.stage is Stage.TRANSFORMER
    assert letter.source_event_id == written.event_id
    assert result.reasons == {"negative_volume": 1, "null_field": 1}
    quarantine_key = layer_key(written.key, "quarantine")
    assert letter.details["quarantine_key"] == quarantine_key
    quarantined = pl.read_parquet(io.BytesIO(await lake.get(quarantine_key)))
    assert sorted(quarantined["reason"].to_list()) == ["negative_volume", "null_field"]


async def test_transform_object_is_idempotent(tmp_path: Path) -> None:
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    written = await store_bronze(lake, [snapshot([[T0, 1.0, 2.0, 0.5, 1.5, 1.0], [T0 + 1, 1.0, 2.0, 0.5, 1.5, 1.0]])])
    first = await transform_object(lake, written)
    again = await transform_object(lake, written)  # a redelivery: same keys, same bytes, same events
    assert first.batch is not None and again.batch is not None
    assert again.batch == first.batch
    assert again.quarantine == first.quarantine


async def test_transform_object_all_bad_gives_no_batch(tmp_path: Path) -> None:
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    written = await store_bronze(lake, [snapshot([[T0, 1.0, 0.5, 0.5, 1.5, 1.0]])])
    result = await transform_object(lake, written)
    assert result.batch is None
    assert result.quarantine is not None
    assert await lake.list("silver/") == []


async def test_transform_object_refuses_a_replaced_object(tmp_path: Path) -> None:
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    written = await store_bronze(lake, [snapshot([[T0, 1.0, 2.0, 0.5, 1.5, 1.0]])])
    tampered = written.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(PoisonMessageError):
        await transform_object(lake, tampered)
    assert await lake.list("silver/") == []


def revised_pair(same_first_ts: bool) -> tuple[RawSnapshot, RawSnapshot]:
    """The same candle fetched twice; the exchange revised it in between (close and volume changed).

    same_first_ts: the extractor crashed after publishing and before moving its checkpoint, then
    re-fetched the same page. Otherwise: a re-fetch that started one candle earlier.
    """
    earlier = snapshot([[T0, 10.0, 12.0, 9.0, 11.0, 1.0]], fetched_at=datetime(2024, 6, 1, 13, 0, tzinfo=UTC))
    fetched_later = earlier.fetched_at + timedelta(minutes=30)
    if not same_first_ts:
        later = snapshot(
            [[T0 - MINUTE, 10.0, 12.0, 9.0, 10.0, 1.0], [T0, 10.0, 12.0, 9.0, 11.5, 2.0]],
            first_ts=T0 - MINUTE,
            fetched_at=fetched_later,
        )
        return earlier, later
    # Candidates differ only in the revised volume; take one whose event_id sorts before the earlier
    # snapshot's, the order build_objects then writes them in (about half of all revisions do).
    for step in range(1, 200):
        later = snapshot([[T0, 10.0, 12.0, 9.0, 11.5, 1.0 + step / 100]], fetched_at=fetched_later)
        if later.event_id < earlier.event_id:
            return earlier, later
    raise AssertionError("no candidate found")  # pragma: no cover


@pytest.mark.parametrize("same_first_ts", [True, False], ids=["crash-retry-same-page", "refetch-from-earlier"])
async def test_later_fetched_revision_of_a_candle_wins(tmp_path: Path, same_first_ts: bool) -> None:
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    earlier, later = revised_pair(same_first_ts)
    assert later.fetched_at > earlier.fetched_at
    written = await store_bronze(lake, [earlier, later])
    result = await transform_object(lake, written)
    assert result.batch is not None
    frame = pl.read_parquet(io.BytesIO(await lake.get(result.batch.key)))
    candle = frame.filter(pl.col("ts").dt.epoch("ms") == T0)
    assert candle["close"].to_list() == [11.5]
    assert candle["source_event_id"].to_list() == [later.event_id]
