"""What the extractor knows about each exchange beyond what ccxt says, in one table.

Any ccxt exchange may be named in a jobs file (`capabilities.py` reads what it offers from ccxt
itself). This table holds the facts ccxt does not describe: how its ccxt class is built
(`exchanges.py`), how its candles are paged (`ohlcv.py`), and how many records one request may
return (the jobs ask for no more: a short page reads as "the end of the data"). An exchange not
in the table gets `generic_profile`: ccxt's own defaults, "since" paging, pages of 100, which
every exchange we know of serves in full.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

# How an exchange's kline endpoint pages:
# * "since": the next `limit` candles from `since` (Binance); a page shorter than `limit` is the
#   end of the data, and a hole between the checkpoint and the first candle is asked for once more.
# * "windowed": the candles of a time window [since, until] (Bybit, Gate); an empty closed window
#   is a hole, not the end of the data, so the job walks window by window up to now.
OhlcvPaging = Literal["since", "windowed"]

# ccxt options that load spot markets from public endpoints alone: no other market types, and
# no currencies (an authenticated endpoint on several exchanges).
SPOT_PUBLIC: Mapping[str, Any] = MappingProxyType({"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False})


@dataclass(frozen=True)
class ExchangeProfile:
    """One exchange's quirks, as far as the extractor needs them."""

    ccxt_id: str
    """The ccxt class (`ccxt.async_support.<ccxt_id>`), also the id in jobs files, subjects and metrics."""
    load_options: Mapping[str, Any] = field(default_factory=dict)
    """ccxt `options` the instance is built with (copied, never shared between instances)."""
    ohlcv_paging: OhlcvPaging = "since"
    """How `fetch_ohlcv` pages (see `OhlcvPaging`)."""
    max_ohlcv_page: int = 100
    """Most candles one kline request returns (larger `page_limit`s are lowered to it)."""
    max_trades_page: int = 100
    """Most trades one trades request returns."""
    trades_history: bool = True
    """Whether its trades endpoint reaches back in time (`since`, ids); False: only the newest
    page (Bybit's spot recent-trade, 60 trades), so a longer hole cannot be filled: it is recorded."""

    @property
    def windowed_ohlcv(self) -> bool:
        return self.ohlcv_paging == "windowed"


# Page sizes are the exchanges' documented maxima for their public spot endpoints.
_PROFILES = (
    ExchangeProfile("binance", SPOT_PUBLIC, "since", max_ohlcv_page=1000, max_trades_page=1000),
    ExchangeProfile("bybit", SPOT_PUBLIC, "windowed", max_ohlcv_page=1000, max_trades_page=60, trades_history=False),
    ExchangeProfile("gate", SPOT_PUBLIC, "windowed", max_ohlcv_page=1000, max_trades_page=1000),
    # ccxt's default options (its market loading is public for these); "since" paging.
    ExchangeProfile("okx", max_ohlcv_page=100, max_trades_page=100),
    ExchangeProfile("kraken", max_ohlcv_page=720, max_trades_page=1000),
    ExchangeProfile("coinbase", max_ohlcv_page=300, max_trades_page=1000),
    ExchangeProfile("kucoin", max_ohlcv_page=1000, max_trades_page=100),
    ExchangeProfile("bitfinex", max_ohlcv_page=1000, max_trades_page=1000),
    ExchangeProfile("bitstamp", max_ohlcv_page=1000, max_trades_page=1000),
    ExchangeProfile("htx", max_ohlcv_page=1000, max_trades_page=1000),
    ExchangeProfile("mexc", max_ohlcv_page=1000, max_trades_page=1000),
)

# The exchanges with facts of their own; any other ccxt exchange runs on `generic_profile`.
PROFILES: Mapping[str, ExchangeProfile] = MappingProxyType({p.ccxt_id: p for p in _PROFILES})


def generic_profile(exchange_id: str) -> ExchangeProfile:
    """An exchange without an entry: ccxt's default options, "since" paging, pages of 100."""
    return ExchangeProfile(exchange_id)


def profile(exchange_id: str) -> ExchangeProfile:
    return PROFILES.get(exchange_id) or generic_profile(exchange_id)
