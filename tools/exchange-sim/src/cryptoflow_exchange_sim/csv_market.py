"""Recorded candles read from Binance's public kline CSV files (`SYMBOL-INTERVAL.csv`)."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from cryptoflow_exchange_sim.intervals import INTERVALS, Interval
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Listing

# Tried longest first, so a quote asset that ends with a shorter one (FDUSD vs a "USD") wins.
# fmt: off
_QUOTE_ASSETS = (
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI", "BTC", "ETH", "BNB", "XRP", "TRX", "DOGE",
    "EUR", "TRY", "BRL", "GBP", "AUD", "JPY", "RUB", "UAH", "ZAR", "PLN", "RON", "ARS", "MXN", "COP",
    "IDRT", "BIDR", "NGN", "PAX", "BKRW", "VAI",
)
# fmt: on
KNOWN_QUOTE_ASSETS: tuple[str, ...] = tuple(sorted(_QUOTE_ASSETS, key=len, reverse=True))

_FILE_NAME = re.compile(r"^([A-Z0-9]+)-(\w+)\.csv$")
_FULL_COLUMNS = 12
_SHORT_COLUMNS = 6
# Binance's data dumps switched spot timestamps to microseconds in 2025; 1e15 ms is year 33658.
_MICROSECOND_THRESHOLD = 10**15


@dataclass(slots=True)
class _Series:
    open_times: list[int] = field(default_factory=list)
    rows: list[Kline] = field(default_factory=list)


class CsvCandleMarket:
    """Serves exactly the recorded rows: value tokens verbatim, gaps left as gaps.

    Files have no header and either all 12 Binance kline columns or only the first six
    (open_time, open, high, low, close, volume); for the latter the close time is derived
    from the interval and the other columns are served as "0".
    """

    def __init__(self, directory: Path | str) -> None:
        root = Path(directory)
        if not root.is_dir():
            raise ValueError(f"candle directory {root} does not exist")
        self._series: dict[tuple[str, str], _Series] = {}
        listings: dict[str, Listing] = {}
        for path in sorted(root.glob("*.csv")):
            match = _FILE_NAME.match(path.name)
            if match is None or match.group(2) not in INTERVALS:
                raise ValueError(f"{path}: expected a name like BTCUSDT-1m.csv (symbol-interval)")
            symbol_id, interval_name = match.groups()
            listings.setdefault(symbol_id, listing_from_symbol_id(symbol_id))
            self._series[(symbol_id, interval_name)] = _read_series(path, INTERVALS[interval_name])
        self._listings = tuple(listings.values())

    def listings(self) -> Sequence[Listing]:
        return self._listings

    def klines(self, symbol_id: str, interval: Interval, window: KlineWindow, now_ms: int) -> list[Kline]:
        series = self._series.get((symbol_id, interval.name))
        if series is None:
            return []
        times = series.open_times
        end = len(times) if window.end_ms is None else bisect.bisect_right(times, window.end_ms)
        if window.start_ms is None:
            return series.rows[max(0, end - window.limit) : end]
        begin = bisect.bisect_left(times, window.start_ms)
        return series.rows[begin : min(end, begin + window.limit)]


def listing_from_symbol_id(symbol_id: str) -> Listing:
    """Split a Binance symbol into assets by the quote asset it ends with."""
    for quote in KNOWN_QUOTE_ASSETS:
        if symbol_id.endswith(quote) and len(symbol_id) > len(quote):
            return Listing(symbol_id=symbol_id, base_asset=symbol_id[: -len(quote)], quote_asset=quote)
    raise ValueError(f"cannot tell base from quote in {symbol_id!r}: no known quote asset suffix")


def _read_series(path: Path, interval: Interval) -> _Series:
    series = _Series()
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = _parse_row(line, interval)
        except ValueError as error:
            raise ValueError(f"{path}:{line_number}: {error}") from error
        if series.open_times and row.open_time <= series.open_times[-1]:
            raise ValueError(f"{path}:{line_number}: open times must strictly increase")
        series.open_times.append(row.open_time)
        series.rows.append(row)
    return series


def _parse_row(line: str, interval: Interval) -> Kline:
    tokens = [token.strip() for token in line.split(",")]
    if len(tokens) not in (_SHORT_COLUMNS, _FULL_COLUMNS):
        raise ValueError(f"expected {_SHORT_COLUMNS} or {_FULL_COLUMNS} columns, got {len(tokens)}")
    open_time = _timestamp(tokens[0])
    open_, high, low, close, volume = (_decimal_token(token) for token in tokens[1:6])
    if len(tokens) == _SHORT_COLUMNS:
        return Kline(open_time, open_, high, low, close, volume, interval.close_time(open_time), "0", 0, "0", "0")
    return Kline(
        open_time,
        open_,
        high,
        low,
        close,
        volume,
        close_time=_timestamp(tokens[6]),
        quote_volume=_decimal_token(tokens[7]),
        trade_count=_integer(tokens[8]),
        taker_buy_base_volume=_decimal_token(tokens[9]),
        taker_buy_quote_volume=_decimal_token(tokens[10]),
        ignore=tokens[11],
    )


def _timestamp(token: str) -> int:
    value = _integer(token)
    return value // 1000 if value >= _MICROSECOND_THRESHOLD else value


def _integer(token: str) -> int:
    value = _require_decimal(token)
    if value != value.to_integral_value():
        raise ValueError(f"expected an integer, got {token!r}")
    return int(value)


def _decimal_token(token: str) -> str:
    """The token itself, once known to be a number: reformatting would alter recorded values."""
    _require_decimal(token)
    return token


def _require_decimal(token: str) -> Decimal:
    try:
        value = Decimal(token)
    except InvalidOperation:
        raise ValueError(f"expected a number, got {token!r}") from None
    if not value.is_finite():
        raise ValueError(f"expected a finite number, got {token!r}")
    return value
