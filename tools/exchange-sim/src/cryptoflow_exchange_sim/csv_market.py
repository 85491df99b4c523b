"""Recorded market data: Binance kline CSV files (`SYMBOL-INTERVAL.csv`) and trade CSV files
(`SYMBOL-trades.csv`)."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from cryptoflow_exchange_sim.intervals import INTERVALS, Interval
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Listing, Trade, TradeStats, TradeWindow

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
_TRADES_SUFFIX = "trades"
_TRADE_COLUMNS = 6
_BOOLEANS = {"true": True, "false": False}
_FULL_COLUMNS = 12
_SHORT_COLUMNS = 6
# Binance's data dumps switched spot timestamps to microseconds in 2025; 1e15 ms is year 33658.
_MICROSECOND_THRESHOLD = 10**15


@dataclass(slots=True)
class _Series:
    open_times: list[int] = field(default_factory=list)
    rows: list[Kline] = field(default_factory=list)


@dataclass(slots=True)
class _TradeSeries:
    ids: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    rows: list[Trade] = field(default_factory=list)


class CsvCandleMarket:
    """Serves exactly the recorded rows: value tokens verbatim, gaps left as gaps.

    Candle files have no header and either all 12 Binance kline columns or only the first six
    (open_time, open, high, low, close, volume); for the latter the close time is derived
    from the interval and the other columns are served as "0".

    Trade files (`SYMBOL-trades.csv`, no header: id, price, qty, quote_qty, time_ms,
    is_buyer_maker) are read from `directory` and from `trades_directory` when given; ids must
    increase and times must not decrease. A symbol with only a trade file is listed too.
    """

    def __init__(self, directory: Path | str, trades_directory: Path | str | None = None) -> None:
        root = Path(directory)
        if not root.is_dir():
            raise ValueError(f"candle directory {root} does not exist")
        roots = [root]
        if trades_directory is not None:
            trades_root = Path(trades_directory)
            if not trades_root.is_dir():
                raise ValueError(f"trades directory {trades_root} does not exist")
            if trades_root.resolve() != root.resolve():
                roots.append(trades_root)
        self._series: dict[tuple[str, str], _Series] = {}
        self._trades: dict[str, _TradeSeries] = {}
        listings: dict[str, Listing] = {}
        for index, folder in enumerate(roots):
            for path in sorted(folder.glob("*.csv")):
                match = _FILE_NAME.match(path.name)
                name = None if match is None else match.group(2)
                if match is None or (name != _TRADES_SUFFIX and (index > 0 or name not in INTERVALS)):
                    expected = "BTCUSDT-trades.csv" if index > 0 else "BTCUSDT-1m.csv (symbol-interval)"
                    raise ValueError(f"{path}: expected a name like {expected}")
                symbol_id = match.group(1)
                listings.setdefault(symbol_id, listing_from_symbol_id(symbol_id))
                if name == _TRADES_SUFFIX:
                    if symbol_id in self._trades:
                        raise ValueError(f"{path}: trades of {symbol_id} are given twice")
                    self._trades[symbol_id] = _read_trades(path)
                else:
                    self._series[(symbol_id, match.group(2))] = _read_series(path, INTERVALS[match.group(2)])
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

    def trades(self, symbol_id: str, window: TradeWindow, now_ms: int) -> list[Trade]:
        series = self._trades.get(symbol_id)
        if series is None:
            return []
        begin, end = _bounds(series, window.from_id, window.to_id, window.start_ms, window.end_ms, now_ms)
        if window.newest_first:
            end -= window.skip
            return series.rows[max(begin, end - window.limit) : max(begin, end)]
        return series.rows[begin : min(end, begin + window.limit)]

    def trade_stats(self, symbol_id: str, start_ms: int, end_ms: int, now_ms: int) -> TradeStats:
        series = self._trades.get(symbol_id)
        if series is None:
            return TradeStats()
        begin, end = _bounds(series, None, None, start_ms, end_ms, now_ms)
        if begin >= end:
            return TradeStats()
        return TradeStats(end - begin, series.ids[begin], series.ids[end - 1], series.rows[end - 1])


def _bounds(
    series: _TradeSeries,
    from_id: int | None,
    to_id: int | None,
    start_ms: int | None,
    end_ms: int | None,
    now_ms: int,
) -> tuple[int, int]:
    # Ids increase and times never decrease in file order, so every bound is one bisection.
    begin, end = 0, bisect.bisect_right(series.times, now_ms)
    if from_id is not None:
        begin = max(begin, bisect.bisect_left(series.ids, from_id))
    if to_id is not None:
        end = min(end, bisect.bisect_left(series.ids, to_id))
    if start_ms is not None:
        begin = max(begin, bisect.bisect_left(series.times, start_ms))
    if end_ms is not None:
        end = min(end, bisect.bisect_right(series.times, end_ms))
    return begin, max(begin, end)


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


def _read_trades(path: Path) -> _TradeSeries:
    series = _TradeSeries()
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            trade = _parse_trade(line)
        except ValueError as error:
            raise ValueError(f"{path}:{line_number}: {error}") from error
        if series.ids and trade.id <= series.ids[-1]:
            raise ValueError(f"{path}:{line_number}: trade ids must strictly increase")
        if series.times and trade.time_ms < series.times[-1]:
            raise ValueError(f"{path}:{line_number}: trade times must not decrease")
        series.ids.append(trade.id)
        series.times.append(trade.time_ms)
        series.rows.append(trade)
    return series


def _parse_trade(line: str) -> Trade:
    tokens = [token.strip() for token in line.split(",")]
    if len(tokens) != _TRADE_COLUMNS:
        raise ValueError(f"expected {_TRADE_COLUMNS} trade columns, got {len(tokens)}")
    is_buyer_maker = _BOOLEANS.get(tokens[5].lower())
    if is_buyer_maker is None:
        raise ValueError(f"expected true or false, got {tokens[5]!r}")
    price, qty, quote_qty = (_decimal_token(token) for token in tokens[1:4])
    return Trade(_integer(tokens[0]), price, qty, quote_qty, _timestamp(tokens[4]), is_buyer_maker)


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
