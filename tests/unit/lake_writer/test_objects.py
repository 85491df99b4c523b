"""Bronze objects: deterministic grouping, keys and bytes."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import zstandard
from cryptoflow_contracts import Dataset, RawSnapshot
from cryptoflow_lake_writer.objects import BronzeObject, build_objects, read_object

MINUTE = 60_000
DAY1 = int(datetime(2024, 6, 1, tzinfo=UTC).timestamp() * 1000)
DAY2 = int(datetime(2024, 6, 2, tzinfo=UTC).timestamp() * 1000)
KEY_RE = re.compile(
    r"bronze/(?P<dataset>[a-z]+)/exchange=(?P<exchange>[^/]+)/symbol=(?P<symbol>[^/]+)"
    r"/date=(?P<date>\d{4}-\d{2}-\d{2})/(?P<name>[^/]+)"
)


def candles(first_ts: int, n: int, base: float = 100.0) -> list[list[float | int]]:
    return [
        [first_ts + i * MINUTE, base + i, base + i + 2, base + i - 1, base + i + 1, 1.5 * (i + 1)] for i in range(n)
    ]


def ohlcv(symbol: str, first_ts: int, n: int = 3, *, exchange: str = "binance", base: float = 100.0) -> RawSnapshot:
    payload = candles(first_ts, n, base)
    return RawSnapshot(
        dataset=Dataset.OHLCV,
        exchange=exchange,
        symbol=symbol,
        timeframe="1m",
        fetched_at=datetime.fromtimestamp((first_ts + n * MINUTE) / 1000, UTC) + timedelta(seconds=2),
        request={"symbol": symbol, "timeframe": "1m", "since": first_ts, "limit": 1000},
        payload=payload,
        first_ts=first_ts,
        last_ts=payload[-1][0],
    )


def ticker(symbol: str, fetched_at: datetime) -> RawSnapshot:
    return RawSnapshot(
        dataset=Dataset.TICKER,
        exchange="binance",
        symbol=symbol,
        fetched_at=fetched_at,
        payload={"symbol": symbol, "bid": 1.0, "ask": 1.1},
    )


def sample() -> list[RawSnapshot]:
    return [
        ohlcv("BTC/USDT", DAY1),
        ohlcv("BTC/USDT", DAY1 + 3 * MINUTE),
        ohlcv("BTC/USDT", DAY2 - 2 * MINUTE, n=2),  # last two minutes of day 1
        ohlcv("BTC/USDT", DAY2),
        ohlcv("ETH/USDT", DAY1, base=3000.0),
        ohlcv("ETH/BTC", DAY1, base=0.05),
        ohlcv("BTC/USDT", DAY1, exchange="kraken"),
        ticker("BTC/USDT", datetime(2024, 6, 1, 23, 59, 59, tzinfo=UTC)),
    ]


def as_pairs(objects: list[BronzeObject]) -> list[tuple[str, bytes]]:
    return [(o.key, o.data) for o in objects]


def expected_date(snapshot: RawSnapshot) -> str:
    if snapshot.first_ts is not None:
        return datetime.fromtimestamp(snapshot.first_ts / 1000, UTC).date().isoformat()
    return snapshot.fetched_at.astimezone(UTC).date().isoformat()


def test_same_snapshots_in_any_order_with_duplicates_give_same_keys_and_bytes() -> None:
    snapshots = sample()
    reference = as_pairs(build_objects(snapshots))
    rng = random.Random(20240601)
    for _ in range(10):
        shuffled = snapshots + rng.sample(snapshots, k=4)  # duplicates: the same events again
        rng.shuffle(shuffled)
        assert as_pairs(build_objects(shuffled)) == reference
    # Re-parsed copies (a redelivered message) are the same events too.
    copies = [RawSnapshot.from_json(s.to_json()) for s in reversed(snapshots)]
    assert as_pairs(build_objects(copies)) == reference


def test_one_object_per_partition() -> None:
    snapshots = sample()
    objects = build_objects(snapshots)
    partitions: dict[tuple[str, str, str, str], set[str]] = {}
    for s in snapshots:
        part = (s.dataset.value, s.exchange, s.symbol.replace("/", "-"), expected_date(s))
        partitions.setdefault(part, set()).add(s.event_id)
    assert len(objects) == len(partitions)
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        match = KEY_RE.fullmatch(obj.key)
        assert match, obj.key
        part = (match["dataset"], match["exchange"], match["symbol"], match["date"])
        assert part in partitions, obj.key
        assert part not in seen
        seen.add(part)
        assert obj.dataset.value == match["dataset"]
        assert obj.exchange == match["exchange"]
        assert set(obj.event_ids) == partitions[part]
        assert len(obj.event_ids) == len(partitions[part])
        assert match["name"].endswith(".ndjson.zst")


def test_key_layout() -> None:
    (obj,) = build_objects([ohlcv("BTC/USDT", DAY2 + 5 * MINUTE)])
    prefix = "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-02/"
    assert obj.key.startswith(prefix)
    name = obj.key.removeprefix(prefix)
    assert "/" not in name
    assert name.endswith(".ndjson.zst")


def test_partition_date_is_utc_of_first_candle() -> None:
    just_before_midnight = ohlcv("BTC/USDT", DAY2 - MINUTE, n=3)  # spans midnight: first candle decides
    (obj,) = build_objects([just_before_midnight])
    assert "/date=2024-06-01/" in obj.key


def test_snapshot_without_first_ts_is_partitioned_by_fetch_date() -> None:
    (obj,) = build_objects([ticker("ETH/USDT", datetime(2024, 6, 3, 0, 0, 1, tzinfo=UTC))])
    assert obj.key.startswith("bronze/ticker/exchange=binance/symbol=ETH-USDT/date=2024-06-03/")


def test_read_object_returns_the_snapshots() -> None:
    snapshots = sample()
    by_id = {s.event_id: s for s in snapshots}
    read_back: list[RawSnapshot] = []
    for obj in build_objects(snapshots):
        restored = read_object(obj.data)
        assert [s.event_id for s in restored] == obj.event_ids
        for snapshot in restored:
            assert snapshot == by_id[snapshot.event_id]
        read_back.extend(restored)
    assert sorted(s.event_id for s in read_back) == sorted(by_id)


def test_object_is_zstd_ndjson_of_raw_snapshots() -> None:
    (obj,) = build_objects([ohlcv("BTC/USDT", DAY1), ohlcv("BTC/USDT", DAY1 + 3 * MINUTE)])
    lines = zstandard.ZstdDecompressor().decompress(obj.data, max_output_size=1 << 20).splitlines()
    assert len(lines) == 2
    assert [RawSnapshot.from_json(line).event_id for line in lines] == obj.event_ids
    # Within a partition, snapshots are in candle-time order.
    assert [RawSnapshot.from_json(line).first_ts for line in lines] == [DAY1, DAY1 + 3 * MINUTE]


def test_different_content_gives_a_different_key() -> None:
    (a,) = build_objects([ohlcv("BTC/USDT", DAY1)])
    (b,) = build_objects([ohlcv("BTC/USDT", DAY1, base=101.0)])
    assert a.key != b.key
    assert a.data != b.data


def test_empty_input_gives_no_objects() -> None:
    assert build_objects([]) == []


def test_same_event_fetched_twice_gives_same_bytes_in_any_order() -> None:
    first = ohlcv("BTC/USDT", DAY1)
    refetch = RawSnapshot(
        **{**first.model_dump(exclude={"event_id"}), "fetched_at": first.fetched_at + timedelta(minutes=20)}
    )
    assert refetch.event_id == first.event_id  # the same event, by the contract
    assert as_pairs(build_objects([first, refetch])) == as_pairs(build_objects([refetch, first]))
