"""validate_*: the typed views the jobs reason with, and the pages they refuse."""

from __future__ import annotations

from typing import Any

import pytest
from cryptoflow_extractor.session import describe_invalid
from cryptoflow_extractor.validation import (
    OhlcvRow,
    OrderBook,
    Ticker,
    Trade,
    validate_ohlcv,
    validate_order_book,
    validate_ticker,
    validate_trades,
)
from pydantic import ValidationError

T0 = 1_717_243_200_000


def trade(i: int, **changes: Any) -> dict[str, Any]:
    base = {
        "info": {"a": i},
        "id": str(i),
        "timestamp": T0 + i,
        "datetime": None,
        "symbol": "BTC/USDT",
        "side": "buy",
        "price": 100.0 + i,
        "amount": 0.5,
        "cost": 50.0,
        "fee": None,
        "fees": [],
    }
    return {**base, **changes}


def test_ohlcv_rows_are_named() -> None:
    (row,) = validate_ohlcv([[T0, 1.0, 2.0, 0.5, 1.5, 10.0]])
    assert isinstance(row, OhlcvRow)
    assert (row.ts, row.open, row.high, row.low, row.close, row.volume) == (T0, 1.0, 2.0, 0.5, 1.5, 10.0)
    assert validate_ohlcv([]) == []


@pytest.mark.parametrize(
    ("page", "where"),
    [
        ({"not": "a list"}, "payload"),
        ([[T0, 1.0, 2.0, 0.5, 1.5]], "[0][5]"),
        ([[T0, 1.0, 2.0, 0.5, 1.5, 1.0, 7]], "[0]"),
        ([[T0, 1.0, 2.0, 0.5, 1.5, 1.0], [T0, 1.0, 2.0, 0.5, 1.5, None]], "[1][5]"),
        ([{"ts": T0, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1}], "[0]"),
    ],
)
def test_a_malformed_ohlcv_page_is_refused_naming_where(page: Any, where: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        validate_ohlcv(page)
    assert describe_invalid(excinfo.value).startswith(f"{where}: ")


def test_ticker_order_book_and_trades_are_typed() -> None:
    ticker = validate_ticker({"symbol": "BTC/USDT", "timestamp": T0, "last": 1.5, "info": {}})
    assert isinstance(ticker, Ticker) and (ticker.timestamp, ticker.last) == (T0, 1.5)
    book = validate_order_book({"symbol": "BTC/USDT", "bids": [[1.0, 2.0]], "asks": [[1.1, 3.0]], "timestamp": None})
    assert isinstance(book, OrderBook) and book.bids == [(1.0, 2.0)] and book.timestamp is None
    trades = validate_trades([trade(1), trade(2, side="sell")])
    assert all(isinstance(t, Trade) for t in trades)
    assert [(t.id, t.timestamp, t.side) for t in trades] == [("1", T0 + 1, "buy"), ("2", T0 + 2, "sell")]


def test_ticker_without_a_last_price_and_bad_trades_are_refused() -> None:
    with pytest.raises(ValidationError, match="no last price"):
        validate_ticker({"symbol": "BTC/USDT", "timestamp": T0, "last": None})
    with pytest.raises(ValidationError) as excinfo:
        validate_trades([trade(1), trade(2, side="both"), trade(3, price="x")])
    assert describe_invalid(excinfo.value) == "[1].side: Input should be 'buy' or 'sell' (and 1 more)"
