"""A user's file read by its ingest mapping: timestamp units and zones, column names, bad values kept."""

from __future__ import annotations

import pytest
from cryptoflow_native.files import FileMapping, page_records, read_csv_text

CANDLES = {"ts": "t", "open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"}


def candles(body: str, **mapping: object) -> list[object]:
    settings = {"columns": CANDLES, "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", **mapping}
    return page_records(body.encode(), "csv", settings, "ohlcv")


@pytest.mark.parametrize(
    ("unit", "value"),
    [("s", "1704067260"), ("s", "1704067260.0"), ("ms", "1704067260000"), ("us", "1704067260000000"),
     ("ns", "1704067260000000000"), ("iso", "2024-01-01T00:01:00Z"), ("iso", "2024-01-01 01:01:00+01:00")],
)  # fmt: skip
def test_every_timestamp_unit_reads_as_the_same_millisecond(unit: str, value: str) -> None:
    assert candles(f"t,o,h,l,c,v\n{value},1,2,0.5,1.5,10\n", ts_unit=unit) == [
        ["1704067260000", "1", "2", "0.5", "1.5", "10"]
    ]


def test_iso_times_without_an_offset_are_in_the_mappings_zone() -> None:
    body = "t,o,h,l,c,v\n2024-07-01 02:00:00,1,1,1,1,1\n2024-01-01 01:00:00,1,1,1,1,1\n"
    # Berlin is UTC+2 in summer, UTC+1 in winter: both are midnight UTC.
    assert [row[0] for row in candles(body, ts_unit="iso", timezone="Europe/Berlin")] == [  # type: ignore[index]
        "1719792000000",
        "1704067200000",
    ]


def test_values_that_do_not_parse_are_kept_as_sent_for_the_checks_to_quarantine() -> None:
    rows = candles("t,o,h,l,c,v\nyesterday,abc,2,,1.5,10\n")
    assert rows == [["yesterday", "abc", "2", None, "1.5", "10"]]


def test_trades_take_their_side_in_lower_case_and_columns_by_name_in_any_order() -> None:
    mapping = {
        "columns": {"ts": "time", "id": "tid", "price": "px", "amount": "qty", "side": "taker"},
        "exchange": "kraken",
        "symbol_column": "pair",
    }
    body = b"pair,qty,px,tid,taker,time\nBTC/USD,0.5,42000.1,7,BUY,1704067200123\n"
    assert page_records(body, "csv", mapping, "trades") == [
        {"id": "7", "timestamp": "1704067200123", "price": "42000.1", "amount": "0.5", "side": "buy"}
    ]


def test_a_file_without_a_header_names_its_columns_by_position() -> None:
    mapping = FileMapping(
        columns={f: f"column_{i}" for i, f in enumerate(CANDLES, start=1)},
        header=False,
        delimiter=";",
        exchange="binance",
        symbol="BTC/USDT",
        timeframe="1m",
    )
    assert read_csv_text(b"1704067260000;1;2;0.5;1.5;10\n", mapping).columns[:2] == ["column_1", "column_2"]
    assert page_records(b"1704067260000;1;2;0.5;1.5;10\n", "csv", mapping.model_dump(), "ohlcv") == [
        ["1704067260000", "1", "2", "0.5", "1.5", "10"]
    ]


@pytest.mark.parametrize(
    ("mapping", "dataset", "complaint"),
    [
        ({"columns": CANDLES, "symbol": "BTC/USDT", "timeframe": "1m"}, "ohlcv", "either exchange or exchange_column"),
        ({"columns": CANDLES, "exchange": "binance", "exchange_column": "x", "symbol": "B/T", "timeframe": "1m"},
         "ohlcv", "either exchange or exchange_column"),
        ({"columns": {"ts": "t"}, "exchange": "binance", "symbol": "B/T", "timeframe": "1m"}, "ohlcv",
         "no column for open, high, low, close, volume"),
        ({"columns": CANDLES, "exchange": "binance", "symbol": "B/T"}, "ohlcv", "timeframe: required"),
        ({"columns": {**CANDLES, "vwap": "w"}, "exchange": "binance", "symbol": "B/T", "timeframe": "1m"}, "ohlcv",
         "vwap is not a field of ohlcv"),
        ({"columns": CANDLES, "exchange": "binance", "symbol": "B/T"}, "tickers", "not 'tickers'"),
    ],
)  # fmt: skip
def test_a_mapping_that_cannot_make_records_is_refused_with_the_reason(
    mapping: dict[str, object], dataset: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        FileMapping.model_validate(mapping).check(dataset)
