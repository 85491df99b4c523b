"""Pydantic models of the ccxt unified structures each dataset needs.

They check structure (presence and type), not market sense: a candle with high < low is
well-formed and goes on to the transformer, which quarantines it with its reason.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, field_validator

Number = float


class _Lenient(BaseModel):
    # ccxt structures carry many more keys (info, fees...): they pass through untouched.
    model_config = ConfigDict(extra="allow")


class OhlcvRow(BaseModel):
    ts: int
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number


def validate_ohlcv(rows: Any) -> None:
    if not isinstance(rows, list):
        raise ValueError(f"OHLCV page is {type(rows).__name__}, not a list")
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 6:
            raise ValueError(f"OHLCV row {index} is not [ts, open, high, low, close, volume]: {row!r}")
        OhlcvRow(ts=row[0], open=row[1], high=row[2], low=row[3], close=row[4], volume=row[5])


class Ticker(_Lenient):
    symbol: str
    timestamp: int | None
    last: Number | None
    bid: Number | None = None
    ask: Number | None = None
    high: Number | None = None
    low: Number | None = None
    baseVolume: Number | None = None
    quoteVolume: Number | None = None

    @field_validator("last")
    @classmethod
    def _has_price(cls, value: Number | None) -> Number | None:
        if value is None:
            raise ValueError("ticker has no last price")
        return value


class OrderBook(_Lenient):
    symbol: str
    bids: list[tuple[Number, Number]]
    asks: list[tuple[Number, Number]]
    timestamp: int | None = None
    nonce: int | None = None


class Trade(_Lenient):
    id: str
    timestamp: int
    symbol: str
    price: Number
    amount: Number
    side: Literal["buy", "sell"] | None


_TRADES = TypeAdapter(list[Trade])


def validate_ticker(ticker: Any) -> None:
    Ticker.model_validate(ticker)


def validate_order_book(book: Any) -> None:
    OrderBook.model_validate(book)


def validate_trades(trades: Any) -> None:
    _TRADES.validate_python(trades)
