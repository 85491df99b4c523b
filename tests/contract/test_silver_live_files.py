"""Live silver files and compaction, on every lake (file://, S3, S3 under a prefix, read-compare S3).

What a reader sees is what the latest manifest says: batch files less those it replaced, plus its
compacted files. Compaction rewrites a closed partition into one file without changing any
reader's rows (every version, with its lineage), commits by a never-overwrite manifest put, deletes
superseded files only after the grace period, and never touches bronze.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from cryptoflow_contracts import SILVER_SCHEMA_VERSION, BatchReady, Dataset
from cryptoflow_contracts.silver import OHLCV, SCHEMA_VERSION_METADATA_KEY, TABLE_METADATA_KEY
from cryptoflow_runtime import PoisonMessageError
from cryptoflow_runtime.lake import FileLake, Lake, MaintainedLake, sha256_hex
from cryptoflow_runtime.silver_lake import (
    Compactor,
    Manifest,
    live_silver_files,
    read_live_rows,
    read_with_retry,
)
from cryptoflow_runtime.silver_lake.frames import table_schema
from cryptoflow_warehouse_loader.app import read_batch

DAY = "2024-01-01"
PARTITION = f"silver/ohlcv/exchange=binance/symbol=BTC-USDT/date={DAY}"
OPEN_PARTITION = "silver/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-01-03"
BRONZE = f"bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date={DAY}/1704067200000-{'a' * 24}.ndjson.zst"
T0 = 1_704_067_200_000
MINUTE = 60_000
NOW = datetime(2024, 1, 3, 12, tzinfo=UTC)  # 2024-01-01 closed a day and a half ago, 2024-01-03 open


def candles(start: int, count: int, close: float, *, final: bool = True) -> pl.DataFrame:
    rows = {
        "exchange": ["binance"] * count,
        "symbol": ["BTC/USDT"] * count,
        "timeframe": ["1m"] * count,
        "ts": [datetime.fromtimestamp((start + i * MINUTE) / 1000, UTC) for i in range(count)],
        "open": [close] * count,
        "high": [close + 1] * count,
        "low": [close - 1] * count,
        "close": [close] * count,
        "volume": [1.0] * count,
        "quote_volume": [None] * count,
        "trade_count": [None] * count,
        "taker_buy_base_volume": [None] * count,
        "taker_buy_quote_volume": [None] * count,
        "resampled": [False] * count,
        "final": [final] * count,
        "source_event_id": [f"e{start}"] * count,
    }
    return pl.DataFrame(rows, schema=table_schema(OHLCV))


def parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(
        buffer, metadata={SCHEMA_VERSION_METADATA_KEY: str(SILVER_SCHEMA_VERSION), TABLE_METADATA_KEY: "ohlcv"}
    )
    return buffer.getvalue()


async def write_batches(lake: Lake, partition: str = PARTITION, start: int = T0) -> list[str]:
    """Five batch files of ten candles, each overlapping the one before by five (re-polled candles,
    the first copy not final yet): the versions a reader must rank."""
    keys = []
    for i in range(5):
        first = start + i * 5 * MINUTE
        key = f"{partition}/{first}-{i:024d}.parquet"
        await lake.put(key, parquet(candles(first, 10, 100.0 + i, final=i % 2 == 0)))
        keys.append(key)
    return keys


def maintained(lake: Lake) -> MaintainedLake:
    assert isinstance(lake, MaintainedLake)
    return lake


async def rows_seen(lake: Lake, prefix: str = "silver/") -> pl.DataFrame:
    """Every row a reader resolves now, lineage included, in one order."""

    async def read(files: list) -> pl.DataFrame:  # type: ignore[type-arg]
        return await read_live_rows(lake, files, OHLCV)

    rows = await read_with_retry(lake, prefix, read)
    return rows.sort(rows.columns)


async def test_listing_says_when_each_object_was_written_and_delete_removes_it(lake: Lake) -> None:
    store = maintained(lake)
    before = datetime.now(UTC) - timedelta(minutes=5)
    keys = await write_batches(lake)
    listed = await store.list_written("silver/")
    assert [obj.key for obj in listed] == sorted(keys)
    assert all(obj.written_ns >= before.timestamp() * 1e9 for obj in listed)
    await store.delete(keys[0])
    await store.delete(keys[0])  # a retried delete is no error
    assert await lake.list("silver/") == sorted(keys[1:])


async def test_without_a_manifest_every_batch_file_is_live_and_compacted_files_are_not(lake: Lake) -> None:
    keys = await write_batches(lake)
    # A compaction that never committed: its file is no reader's.
    await lake.put(f"{PARTITION}/_compacted/0000000001-{'f' * 24}.parquet", parquet(candles(T0, 30, 1.0)))
    live = await live_silver_files(lake)
    assert [f.key for f in live] == sorted(keys)
    assert all(f.partition == PARTITION and not f.compacted for f in live)


async def test_the_latest_manifest_decides(lake: Lake) -> None:
    keys = await write_batches(lake)
    old = Manifest(PARTITION, 1, "ohlcv", NOW, (), {keys[0]: "x"})
    new = Manifest(PARTITION, 2, "ohlcv", NOW, (), {keys[0]: "x", keys[1]: "y"})
    for manifest in (old, new):
        await lake.put(manifest.key, manifest.to_json())
    assert [f.key for f in await live_silver_files(lake)] == sorted(keys[2:])
    assert Manifest.from_json(new.to_json()) == new


async def test_compaction_rewrites_a_closed_partition_into_one_file_readers_see_the_same_rows(lake: Lake) -> None:
    keys = await write_batches(lake)
    open_keys = await write_batches(lake, OPEN_PARTITION, T0 + 2 * 24 * 60 * MINUTE)
    await lake.put(BRONZE, b"bronze bytes")
    before = await rows_seen(lake)
    assert before.height == 50 * 2

    report = await Compactor(maintained(lake)).run(now=NOW)

    assert (report.partitions_compacted, report.files_replaced, report.rows_written) == (1, 5, 50), report
    live = await live_silver_files(lake)
    compacted = [f for f in live if f.partition == PARTITION]
    assert len(compacted) == 1 and compacted[0].compacted
    assert sorted(f.key for f in live if f.partition == OPEN_PARTITION) == sorted(open_keys)  # not closed yet
    assert (await rows_seen(lake)).equals(before)
    # The compacted file is sorted by key (each key's versions in write order), in row groups.
    data = pl.read_parquet(io.BytesIO(await lake.get(compacted[0].key)))
    assert data["ts"].is_sorted()
    # Nothing deleted yet (grace period); bronze never touched.
    assert set(keys) <= set(await lake.list("silver/"))
    assert await lake.get(BRONZE) == b"bronze bytes"
    again = await Compactor(maintained(lake)).run(now=NOW)
    assert (again.partitions_compacted, again.files_deleted) == (0, 0)


async def test_replaced_files_are_deleted_only_after_the_grace_period(lake: Lake) -> None:
    keys = await write_batches(lake)
    await lake.put(BRONZE, b"bronze bytes")
    compactor = Compactor(maintained(lake), grace=timedelta(hours=1))
    await compactor.run(now=NOW)
    before = await rows_seen(lake)

    within = await compactor.run(now=NOW + timedelta(minutes=59))
    assert within.files_deleted == 0
    assert set(keys) <= set(await lake.list("silver/"))

    after = await compactor.run(now=NOW + timedelta(hours=1))
    assert after.files_deleted == 5
    remaining = await lake.list("silver/")
    assert not set(keys) & set(remaining)
    assert len(remaining) == 2  # the compacted file and its manifest
    assert (await rows_seen(lake)).equals(before)
    assert await lake.list("bronze/") == [BRONZE]


async def test_late_files_go_into_the_next_generation(lake: Lake) -> None:
    await write_batches(lake)
    compactor = Compactor(maintained(lake), grace=timedelta(0))
    await compactor.run(now=NOW)
    late = f"{PARTITION}/{T0 + 100 * MINUTE}-{'9' * 24}.parquet"
    await lake.put(late, parquet(candles(T0 + 100 * MINUTE, 3, 7.0)))
    before = await rows_seen(lake)
    assert before.height == 53

    report = await compactor.run(now=NOW)
    assert (report.partitions_compacted, report.files_replaced) == (1, 2)  # generation 1's file + the late one
    assert (await rows_seen(lake)).equals(before)
    await compactor.run(now=NOW)  # sweep: generation 1, its file, the batch files
    remaining = await lake.list("silver/")
    assert [k.rsplit("/", 1)[1] for k in remaining if "/_manifest/" in k] == ["0000000002.json"]
    assert len(remaining) == 2
    assert (await rows_seen(lake)).equals(before)


async def test_two_compactors_at_once_commit_one_generation(lake: Lake) -> None:
    await write_batches(lake)
    before = await rows_seen(lake)
    reports = await asyncio.gather(*(Compactor(maintained(lake)).run(now=NOW) for _ in range(2)))
    assert sorted(r.partitions_compacted for r in reports) in ([0, 1], [1, 1])
    assert (await rows_seen(lake)).equals(before)
    manifests = [k for k in await lake.list("silver/") if "/_manifest/" in k]
    assert len(manifests) == 1


@pytest.mark.parametrize("grace", [timedelta(0), timedelta(hours=1)])
async def test_a_reader_during_compaction_never_sees_a_row_twice_or_misses_one(lake: Lake, grace: timedelta) -> None:
    """A reader loop runs while partitions are compacted, late files compacted again, and (with no
    grace) superseded files deleted under it: every read is the same rows."""
    for day in ("2023-12-31", "2024-01-01"):
        await write_batches(lake, f"silver/ohlcv/exchange=binance/symbol=BTC-USDT/date={day}")
    expected = await rows_seen(lake)
    compactor = Compactor(maintained(lake), grace=grace)

    async def compact_and_sweep() -> None:
        for _ in range(3):
            await compactor.run(now=NOW)

    task = asyncio.create_task(compact_and_sweep())
    reads = 0
    while not task.done() or reads < 3:
        assert (await rows_seen(lake)).equals(expected), f"read {reads}"
        reads += 1
    await task
    assert (await rows_seen(lake)).equals(expected)
    assert len(await live_silver_files(lake)) == 2


async def test_a_compacted_and_deleted_batch_is_read_back_from_its_compacted_file(lake: Lake) -> None:
    """A replay of SILVER after the grace period: the loader gets the batch's own rows, in order,
    and refuses other announced bytes."""
    keys = await write_batches(lake)
    originals = {key: await lake.get(key) for key in keys}
    compactor = Compactor(maintained(lake), grace=timedelta(0))
    await compactor.run(now=NOW)
    await compactor.run(now=NOW)  # deletes the batch files
    assert not set(keys) & set(await lake.list("silver/"))

    for key in keys:
        batch = batch_ready(key, sha256_hex(originals[key]))
        rows = await read_batch(lake, batch)
        assert rows.equals(pl.read_parquet(io.BytesIO(originals[key]))), key
    with pytest.raises(PoisonMessageError, match="sha256 differs"):
        await read_batch(lake, batch_ready(keys[0], "0" * 64))
    with pytest.raises(FileNotFoundError):  # never written, never compacted: missing as before
        await read_batch(lake, batch_ready(f"{PARTITION}/{T0}-{'7' * 24}.parquet", "0" * 64))


def batch_ready(key: str, sha256: str) -> BatchReady:
    return BatchReady(
        dataset=Dataset.OHLCV,
        table="ohlcv",
        exchange="binance",
        lake_url="file:///unused",
        key=key,
        sha256=sha256,
        rows=10,
        quarantined_rows=0,
        min_ts=T0,
        max_ts=T0,
        source_key=BRONZE,
        source_event_id="e",
        quality_score=1.0,
    )


class VanishingLake(FileLake):
    """A file lake on which one key disappears when it is read (another compactor swept it)."""

    vanishing: str = ""

    async def get(self, key: str) -> bytes:
        if key == self.vanishing:
            await self.delete(key)
        return await super().get(key)


async def test_a_file_swept_under_a_compaction_is_a_lost_race_not_a_failure(tmp_path: Path) -> None:
    lake = VanishingLake(f"file://{tmp_path / 'lake'}")
    keys = await write_batches(lake)
    await write_batches(lake, "silver/ohlcv/exchange=binance/symbol=BTC-USDT/date=2023-12-31", T0 - 24 * 60 * MINUTE)
    lake.vanishing = keys[2]
    report = await Compactor(lake).run(now=NOW)
    assert (report.partitions_compacted, report.lost_races) == (1, 1)  # the other partition goes on
    assert not [k for k in await lake.list(f"{PARTITION}/") if "/_manifest/" in k]
