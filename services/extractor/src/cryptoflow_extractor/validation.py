"""Typed views of the ccxt unified structures each dataset needs, checked on the way in.

They check structure (presence and type), not market sense: a candle with high < low is
well-formed and goes on to the transformer, which quarantines it with its reason. The jobs reason
with these typed values (`candle.ts`, `trade.id`); what they publish is ccxt's result as returned,
never a re-serialisation of these models, so a RawSnapshot's payload (and its event id) does not
depend on them.

Each `validate_*` is one pydantic-core call over the whole page (a `TypeAdapter` over the list),
not a Python loop of model constructions: a 1000-candle page costs a fraction of a millisecond.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictInt, TypeAdapter, field_validator

Number = float


class _Lenient(BaseModel):
    # ccxt structures carry many more keys (info, fees...): ignored here (the published payload is
    # ccxt's own result, all keys included), which also keeps validating a page cheap.
    model_config = ConfigDict(extra="ignore")


class OhlcvRow(NamedTuple):
    """One ccxt candle, `[ts, open, high, low, close, volume]`, with its fields named."""

    ts: int  # an int in the page too, never a float or a string: it becomes checkpoints and keys
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number


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


def _price_and_amount(level: Any) -> Any:
    """ccxt's book level is [price, amount], and some exchanges add to it (Crypto.com and Bitfinex
    the number of orders, Kraken a timestamp): the first two are what a level is."""
    return level[:2] if isinstance(level, list | tuple) and len(level) > 2 else level


Level = Annotated[tuple[Number, Number], BeforeValidator(_price_and_amount)]


class OrderBook(_Lenient):
    symbol: str
    bids: list[Level]
    asks: list[Level]
    timestamp: int | None = None
    nonce: int | None = None


class Trade(_Lenient):
    id: str
    timestamp: int
    symbol: str
    price: Number
    amount: Number
    side: Literal["buy", "sell"] | None


# Rows are validated as plain tuples (a list, not an object with named keys, is a ccxt candle),
# then named: faster than validating into the NamedTuple, which also accepted a dict per row.
_OHLCV = TypeAdapter(list[tuple[StrictInt, Number, Number, Number, Number, Number]])
_TRADES = TypeAdapter(list[Trade])


def validate_ohlcv(rows: Any) -> list[OhlcvRow]:
    """A page of candles: a list of `[ts, open, high, low, close, volume]` rows."""
    return list(map(OhlcvRow._make, _OHLCV.validate_python(rows)))


def validate_ticker(ticker: Any) -> Ticker:
    return Ticker.model_validate(ticker)


def validate_order_book(book: Any) -> OrderBook:
    return OrderBook.model_validate(book)


def validate_trades(trades: Any) -> list[Trade]:
    return _TRADES.validate_python(trades)
