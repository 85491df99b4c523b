"""OHLCV bronze → validated silver frame: one reason per bad row, exact values for good rows."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from cryptoflow_contracts import SILVER_SCHEMA_VERSION, Dataset, RawSnapshot
from cryptoflow_contracts.silver import OHLCV
from cryptoflow_native import OHLCV_EXTRAS
from cryptoflow_transformer.ohlcv import (
    SILVER_SCHEMA,
    frame_from_bronze,
    read_parquet,
    to_parquet,
    validate_ohlcv,
)

MINUTE = 60_000
T0 = int(datetime(2024, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)

# The silver OHLCV columns every consumer relies on, with their types (the brief's contract).
CORE_SCHEMA: dict[str, pl.DataType] = {
    "exchange": pl.String(),
    "symbol": pl.String(),
    "timeframe": pl.String(),
    "ts": pl.Datetime("ms", "UTC"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "source_event_id": pl.String(),
}


def snapshot(payload: list[Any], *, timeframe: str = "1m", symbol: str = "BTC/USDT", minute: int = 0) -> RawSnapshot:
    return RawSnapshot(
        dataset=Dataset.OHLCV,
        exchange="binance",
        symbol=symbol,
        timeframe=timeframe,
        fetched_at=datetime(2024, 6, 1, 13, minute, tzinfo=UTC),
        request={"symbol": symbol, "timeframe": timeframe},
        payload=payload,
        first_ts=T0,
        last_ts=T0 + 20 * MINUTE,
    )


def ndjson(*snapshots: RawSnapshot) -> bytes:
    return b"".join(s.to_json() + b"\n" for s in snapshots)


# Good candles: (ts, open, high, low, close, volume).
GOOD = [
    (T0, 0.09946999000000001, 0.1, 0.0994, 0.0995, 12.5),
    (T0 + MINUTE, 67000.5, 67010.0, 66990.25, 67005.0, 0.0),  # zero volume is fine
    (T0 + 2 * MINUTE, 10.0, 12.0, 9.0, 11.0, 1.0),  # revised by the later snapshot below
    (T0 + 3 * MINUTE, 5.0, 5.0, 5.0, 5.0, 3.0),  # flat candle: high == low == open == close
]
REVISED = (T0 + 2 * MINUTE, 10.0, 12.5, 9.0, 11.5, 2.25)

# Bad candles, each with a ts of its own (or a marker) and the one reason it must be rejected for.
BAD: list[tuple[list[Any], str]] = [
    ([T0 + 4 * MINUTE, 1.0, None, 0.5, 1.5, 1.0], "null_field"),
    ([None, 1.0, 2.0, 0.5, 1.5, 1.0], "null_field"),
    ([T0 + 5 * MINUTE, "abc", 2.0, 0.5, 1.5, 1.0], "null_field"),  # unparsable string price → null
    ([T0 + 6 * MINUTE, 1.0, 2.0, 0.5, 1.5], "malformed_row"),
    ([T0 + 7 * MINUTE, 1.0, 2.0, 0.5, 1.5, 1.0, 99.0], "malformed_row"),
    ([T0 + 8 * MINUTE, 0.0, 2.0, 0.5, 1.5, 1.0], "non_positive_price"),
    ([T0 + 9 * MINUTE, 1.0, 2.0, -0.5, 1.5, 1.0], "non_positive_price"),
    ([T0 + 10 * MINUTE, 1.0, 1.4, 0.9, 1.5, 1.0], "high_below_open_close"),  # high < close
    ([T0 + 11 * MINUTE, 1.6, 1.5, 0.9, 1.2, 1.0], "high_below_open_close"),  # high < open
    ([T0 + 12 * MINUTE, 1.0, 2.0, 1.1, 1.5, 1.0], "low_above_open_close"),  # low > open
    ([T0 + 13 * MINUTE, 1.5, 2.0, 1.1, 1.0, 1.0], "low_above_open_close"),  # low > close
    ([T0 + 14 * MINUTE, 1.0, 2.0, 0.5, 1.5, -0.1], "negative_volume"),
    ([T0 + 15 * MINUTE + 1, 1.0, 2.0, 0.5, 1.5, 1.0], "ts_not_aligned_to_timeframe"),
    ([T0 + 16 * MINUTE + 30_000, 1.0, 2.0, 0.5, 1.5, 1.0], "ts_not_aligned_to_timeframe"),
]


def reason_code(reason: str) -> str:
    return reason.split(":")[0]


@pytest.fixture
def bronze() -> tuple[bytes, RawSnapshot, RawSnapshot, RawSnapshot]:
    first = snapshot([list(c) for c in GOOD] + [row for row, _ in BAD], minute=0)
    later = snapshot([list(REVISED)], minute=5)
    unknown_tf = snapshot([[T0, 1.0, 2.0, 0.5, 1.5, 1.0]], timeframe="7m")
    return ndjson(first, later, unknown_tf), first, later, unknown_tf


def test_frame_from_bronze_has_one_row_per_candle(bronze: tuple[bytes, RawSnapshot, RawSnapshot, RawSnapshot]) -> None:
    data, first, later, unknown_tf = bronze
    frame = frame_from_bronze(data)
    assert frame.height == len(first.payload) + len(later.payload) + len(unknown_tf.payload)
    assert frame["source_event_id"].to_list() == (
        [first.event_id] * len(first.payload) + [later.event_id] + [unknown_tf.event_id]
    )


def test_every_bad_row_is_rejected_for_its_reason(bronze: tuple[bytes, RawSnapshot, RawSnapshot, RawSnapshot]) -> None:
    data, _, _, unknown_tf = bronze
    result = validate_ohlcv(frame_from_bronze(data))
    rejected = result.rejected
    assert rejected.height == len(BAD) + 1
    assert rejected["reason"].null_count() == 0

    def rows_with_ts(ts: int | None) -> pl.DataFrame:
        if ts is None:
            return rejected.filter(pl.col("ts").is_null())
        return rejected.filter(pl.col("ts").dt.epoch("ms") == ts)

    for row, expected in BAD:
        found = rows_with_ts(row[0])
        assert found.height == 1, row
        assert reason_code(found["reason"][0]) == expected, (row, found["reason"][0])
    unknown = rejected.filter(pl.col("timeframe") == "7m")
    assert unknown["reason"].to_list() == ["unknown_timeframe"]
    assert unknown["source_event_id"].to_list() == [unknown_tf.event_id]
    # Rejected rows keep the silver columns (nullable) plus the reason, for the quarantine file.
    assert rejected.columns == [*SILVER_SCHEMA, "reason"]


def test_good_rows_keep_exact_values(bronze: tuple[bytes, RawSnapshot, RawSnapshot, RawSnapshot]) -> None:
    data, first, later, _ = bronze
    result = validate_ohlcv(frame_from_bronze(data))
    good = result.good
    expected = sorted([c for c in GOOD if c[0] != REVISED[0]] + [REVISED])
    rows = list(
        zip(
            good["ts"].dt.epoch("ms").to_list(),
            *(good[c].to_list() for c in ["open", "high", "low", "close", "volume"]),
            strict=True,
        )
    )
    assert rows == expected  # exact float equality, e.g. 0.09946999000000001
    assert good["open"][0] == 0.09946999000000001
    assert good["open"][0] != 0.09946999
    assert set(good["exchange"]) == {"binance"}
    assert set(good["symbol"]) == {"BTC/USDT"}
    assert set(good["timeframe"]) == {"1m"}
    # The duplicate candle: the later snapshot's values and event id win.
    revised = good.filter(pl.col("ts").dt.epoch("ms") == REVISED[0])
    assert revised["source_event_id"].to_list() == [later.event_id]
    assert set(good.filter(pl.col("ts").dt.epoch("ms") != REVISED[0])["source_event_id"]) == {first.event_id}
    assert result.duplicates == 1


def test_good_frame_has_the_silver_schema(bronze: tuple[bytes, RawSnapshot, RawSnapshot, RawSnapshot]) -> None:
    good = validate_ohlcv(frame_from_bronze(bronze[0])).good
    assert dict(good.schema) == SILVER_SCHEMA
    assert good.columns == OHLCV.column_names
    for name, dtype in CORE_SCHEMA.items():
        assert good.schema[name] == dtype, name
    # ccxt's six fields make every value; the kline extras are null where bronze has no native body.
    assert good.drop(OHLCV_EXTRAS).null_count().sum_horizontal().item() == 0
    assert good.select(OHLCV_EXTRAS).null_count().row(0) == (good.height,) * len(OHLCV_EXTRAS)


def test_a_native_kline_s_extras_become_columns_and_bad_ones_are_quarantined() -> None:
    """Issue 11: a candle parsed from Binance's own kline carries ten fields, the last four its
    extras; they land in silver, and a negative or non-finite extra quarantines the candle."""
    snapshot = RawSnapshot(
        dataset=Dataset.OHLCV,
        exchange="binance",
        symbol="BTC/USDT",
        timeframe="1m",
        fetched_at=datetime(2024, 1, 2, tzinfo=UTC),
        payload=[
            [T0, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 7, 4.0, 6.0],
            [T0 + 60_000, 1.5, 2.0, 1.0, 1.8, 11.0, 18.0, 9, 5.0, 8.0],
            [T0 + 120_000, 1.8, 2.0, 1.0, 1.9, 12.0, -1.0, 9, 5.0, 8.0],
        ],
        first_ts=T0,
        last_ts=T0 + 120_000,
    )
    checked = validate_ohlcv(frame_from_bronze(snapshot.to_json() + b"\n"))
    assert checked.good.select(OHLCV_EXTRAS).rows() == [(15.0, 7, 4.0, 6.0), (18.0, 9, 5.0, 8.0)]
    assert checked.rejected["reason"].to_list() == ["invalid_kline_field"]


def test_good_rows_are_unique_and_sorted_by_key(bronze: tuple[bytes, RawSnapshot, RawSnapshot, RawSnapshot]) -> None:
    good = validate_ohlcv(frame_from_bronze(bronze[0])).good
    key = ["exchange", "symbol", "timeframe", "ts"]
    assert good.select(key).is_duplicated().sum() == 0
    assert good.select(key).rows() == sorted(good.select(key).rows())


def test_quality_score_is_good_over_good_plus_rejected(
    bronze: tuple[bytes, RawSnapshot, RawSnapshot, RawSnapshot],
) -> None:
    result = validate_ohlcv(frame_from_bronze(bronze[0]))
    good, rejected = len(GOOD), len(BAD) + 1  # the duplicate counts once
    assert result.good.height == good
    assert result.rejected.height == rejected
    assert result.input_rows == good + rejected
    assert result.quality_score == pytest.approx(good / (good + rejected))


def test_all_good_and_empty_input_score_one() -> None:
    result = validate_ohlcv(frame_from_bronze(ndjson(snapshot([list(c) for c in GOOD]))))
    assert result.rejected.height == 0
    assert result.quality_score == 1.0
    empty = validate_ohlcv(frame_from_bronze(ndjson(snapshot([]))))
    assert empty.good.height == 0 and empty.rejected.height == 0
    assert empty.quality_score == 1.0


@pytest.mark.parametrize("timeframe", ["5m", "1h", "1d"])
def test_alignment_follows_the_timeframe(timeframe: str) -> None:
    step = {"5m": 5 * MINUTE, "1h": 60 * MINUTE, "1d": 1440 * MINUTE}[timeframe]
    day = int(datetime(2024, 6, 1, tzinfo=UTC).timestamp() * 1000)
    aligned = [day + step, 1.0, 2.0, 0.5, 1.5, 1.0]
    off_by_a_minute = [day + step + MINUTE, 1.0, 2.0, 0.5, 1.5, 1.0]
    result = validate_ohlcv(frame_from_bronze(ndjson(snapshot([aligned, off_by_a_minute], timeframe=timeframe))))
    assert result.good["ts"].dt.epoch("ms").to_list() == [day + step]
    assert result.rejected["reason"].to_list() == ["ts_not_aligned_to_timeframe"]


def test_parquet_round_trip_keeps_schema_values_and_metadata(
    bronze: tuple[bytes, RawSnapshot, RawSnapshot, RawSnapshot],
) -> None:
    result = validate_ohlcv(frame_from_bronze(bronze[0]))
    for frame in (result.good, result.rejected):
        data = to_parquet(frame)
        back = read_parquet(data)
        assert back.schema == frame.schema
        assert back.equals(frame, null_equal=True)
        metadata = pl.read_parquet_metadata(io.BytesIO(data))
        assert metadata["cryptoflow.schema_version"] == str(SILVER_SCHEMA_VERSION)
    assert read_parquet(to_parquet(result.good))["open"][0] == 0.09946999000000001


def test_to_parquet_is_deterministic(bronze: tuple[bytes, RawSnapshot, RawSnapshot, RawSnapshot]) -> None:
    # Silver keys are derived from bronze keys: a retry must write the very same bytes.
    good = validate_ohlcv(frame_from_bronze(bronze[0])).good
    assert to_parquet(good) == to_parquet(good.clone())


@pytest.mark.parametrize(
    "candle",
    [
        [T0, "NaN", "NaN", "NaN", "NaN", 1.0],
        [T0, 1.0, "inf", 0.5, 1.5, 1.0],
        [T0, 1.0, 2.0, 0.5, 1.5, "Infinity"],
    ],
    ids=["nan-prices", "inf-high", "inf-volume"],
)
def test_non_finite_values_are_rejected(candle: list[Any]) -> None:
    result = validate_ohlcv(frame_from_bronze(ndjson(snapshot([candle]))))
    assert result.good.height == 0
    assert result.rejected.height == 1


def line(payload: str, *, timeframe: str = "1m", fetched: str = "2024-06-01T13:00:00Z", event_id: str = "e1") -> bytes:
    """One bronze line with the payload written as given (JSON text), to reach what RawSnapshot would not write."""
    envelope = (
        f'{{"event_id": "{event_id}", "dataset": "ohlcv", "exchange": "binance", "symbol": "BTC/USDT", '
        f'"timeframe": "{timeframe}", "first_ts": {T0}, "fetched_at": "{fetched}", "request": {{}}'
    )
    return f'{envelope}, "payload": {payload}}}\n'.encode()


@pytest.mark.parametrize(
    "payload",
    [
        f"[[{T0}, 1.0, 2.0, 0.5, 1.5, 3], [{T0 + MINUTE}, 0.09946999000000001, 0.1, 0.0994, 0.0995, 0]]",
        f"[[{T0}.0, 1, 2, 0.5, 1.5, 1e2]]",  # an integral float ts is that integer
        f"[[{T0}.5, 1.0, 2.0, 0.5, 1.5, 1.0]]",  # a fractional one is no ts
        "[[9007199254740993, 1.0, 2.0, 0.5, 1.5, 1.0]]",  # beyond 2**53: exact only as text
        "[[18446744073709551615, 1.0, 2.0, 0.5, 1.5, 1.0]]",  # beyond Int64
        f"[[{T0}, 123456789012345678901234567890, 12345678901234567891, 0.5, 1.5, -0.0]]",
        f'[[{T0}, "1.5", 2.0, 0.5, 1.5, 1.0], [{T0 + MINUTE}, 1.0, 2.0, 0.5, 1.5, 1.0]]',  # a string: read as text
        f'[["{T0}", 1.0, 2.0, 0.5, 1.5, 1.0]]',
        f"[[{T0}, true, 2.0, 0.5, 1.5, 1.0]]",
        f"[[{T0}, 1.0, 2.0, null, 1.5, 1.0], [{T0}, 1.0, 2.0], [], null, [{T0}, 1, 2, 0.5, 1.5, 1, 7]]",
        "[]",
        "null",
        '{"not": "a list"}',
    ],
)
def test_the_fast_numeric_read_gives_what_the_text_read_gives(payload: str) -> None:
    from cryptoflow_transformer.ohlcv import _from_text

    data = line(payload) + line(f"[[{T0 + 2 * MINUTE}, 1.0, 2.0, 0.5, 1.5, 1.0]]", event_id="e2")
    frame = frame_from_bronze(data)
    expected = _from_text(data)
    assert frame.schema == expected.schema
    assert frame.equals(expected, null_equal=True)


@pytest.mark.parametrize("candle", [list(c) for c in GOOD] + [row for row, _ in BAD], ids=str)
def test_the_all_pass_shortcut_agrees_with_the_checks(candle: list[Any]) -> None:
    from cryptoflow_transformer.ohlcv import _all_pass, checks
    from cryptoflow_transformer.quality import first_failure

    raw = frame_from_bronze(ndjson(snapshot([candle])))
    reasons = raw.select(first_failure(checks()))
    assert _all_pass(raw) == (reasons.null_count().item() == raw.height)


def test_unsorted_and_repeated_candles_are_deduplicated_in_key_order() -> None:
    # Snapshots fetched out of candle order, one candle fetched twice: the sort and dedupe path.
    later = snapshot([[T0 + MINUTE, 1.0, 2.0, 0.5, 1.5, 9.0], [T0, 1.0, 2.0, 0.5, 1.5, 1.0]], minute=30)
    earlier = snapshot([[T0 + MINUTE, 1.0, 2.0, 0.5, 1.5, 2.0], [T0 + 2 * MINUTE, 1.0, 2.0, 0.5, 1.5, 3.0]], minute=10)
    result = validate_ohlcv(frame_from_bronze(ndjson(later, earlier)))
    assert result.good["ts"].dt.epoch("ms").to_list() == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    assert result.good["volume"].to_list() == [1.0, 9.0, 3.0]  # the later fetch of T0 + 1m wins
    assert result.duplicates == 1
    assert result.rejected.columns == [*SILVER_SCHEMA, "reason"] and result.rejected.height == 0


def test_well_formed_candles_take_the_numeric_read() -> None:
    from cryptoflow_transformer.ohlcv import _from_numbers

    assert _from_numbers(ndjson(snapshot([list(c) for c in GOOD]))) is not None
    assert _from_numbers(ndjson(snapshot([[T0, "abc", 2.0, 0.5, 1.5, 1.0]]))) is None
