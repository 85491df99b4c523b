"""Binance trades and aggTrades archive CSVs read the same whatever their variant: header or not, ms or µs."""

from __future__ import annotations

import pytest
from cryptoflow_native.archives import ArchiveError
from cryptoflow_native.trade_archives import agg_trade_frame, agg_trade_records, trade_frame, trade_records

# Three spot trades in Binance's trades CSV layout (id, price, qty, quoteQty, time, isBuyerMaker,
# isBestMatch); the values are made up, the layout and the True/False spelling are Binance's.
TRADES_MS = (
    b"3374651000,42000.01000000,0.00100000,42.00001000,1709251209381,True,True\n"
    b"3374651001,42000.02000000,0.02500000,1050.00050000,1709251209381,False,True\n"
    b"3374651002,41999.99000000,0.10000000,4199.99900000,1709251213404,True,True\n"
)
TRADES_HEADER = b"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"
AGG_MS = (
    b"1800000001,42000.01000000,0.00100000,3374651000,3374651000,1709251209381,True,True\n"
    b"1800000002,42000.02000000,0.02500000,3374651001,3374651004,1709251209381,False,True\n"
)
AGG_HEADER = b"agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match\n"


def in_microseconds(csv: bytes, time_column: int) -> bytes:
    lines = []
    for line in csv.decode().splitlines():
        fields = line.split(",")
        fields[time_column] = str(int(fields[time_column]) * 1000)
        lines.append(",".join(fields))
    return ("\n".join(lines) + "\n").encode()


def test_trades_are_the_rest_paths_records_with_taker_and_maker_sides() -> None:
    records = trade_records(TRADES_MS, "BTC/USDT")
    assert records[0] == {
        "id": "3374651000",
        "timestamp": 1709251209381,
        "symbol": "BTC/USDT",
        "side": "sell",  # the buyer was the maker: a seller took
        "maker_side": "buy",
        "price": "42000.01000000",
        "amount": "0.00100000",
    }
    assert [(r["side"], r["maker_side"]) for r in records[1:]] == [("buy", "sell"), ("sell", "buy")]


@pytest.mark.parametrize("variant", ["microseconds", "header", "both"])
def test_trades_microseconds_and_header_files_equal_the_plain_file(variant: str) -> None:
    csv = in_microseconds(TRADES_MS, 4) if variant in ("microseconds", "both") else TRADES_MS
    csv = TRADES_HEADER + csv if variant in ("header", "both") else csv
    assert trade_frame(csv).equals(trade_frame(TRADES_MS))
    assert trade_records(csv, "BTC/USDT") == trade_records(TRADES_MS, "BTC/USDT")


@pytest.mark.parametrize("variant", ["microseconds", "header", "both"])
def test_agg_trades_microseconds_and_header_files_equal_the_plain_file(variant: str) -> None:
    csv = in_microseconds(AGG_MS, 5) if variant in ("microseconds", "both") else AGG_MS
    csv = AGG_HEADER + csv if variant in ("header", "both") else csv
    assert agg_trade_records(csv, "BTC/USDT") == agg_trade_records(AGG_MS, "BTC/USDT")
    second = agg_trade_records(csv, "BTC/USDT")[1]
    assert (second["agg_id"], second["first_trade_id"], second["last_trade_id"], second["timestamp"]) == (
        "1800000002",
        "3374651001",
        "3374651004",
        1709251209381,
    )
    assert (second["side"], second["maker_side"], second["amount"]) == ("buy", "sell", "0.02500000")


def test_futures_files_without_is_best_match_read_alike() -> None:
    futures = b"".join(line.rsplit(b",", 1)[0] + b"\n" for line in TRADES_MS.splitlines())
    assert trade_records(futures, "BTC/USDT") == trade_records(TRADES_MS, "BTC/USDT")
    agg_futures = b"".join(line.rsplit(b",", 1)[0] + b"\n" for line in AGG_MS.splitlines())
    assert agg_trade_frame(agg_futures)["agg_id"].to_list() == [1800000001, 1800000002]


def test_a_file_of_other_columns_is_refused() -> None:
    with pytest.raises(ArchiveError):
        trade_frame(AGG_MS)  # eight columns: an aggTrades file is no trades file
