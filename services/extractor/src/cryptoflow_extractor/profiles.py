"""What the extractor knows about each exchange, in one table: adding an exchange's facts is one entry.

Everything exchange-specific in the extractor reads `profile(exchange_id)`: how its ccxt class is
named and built (`exchanges.py`), how its candles are paged (`ohlcv.py`), and which exchanges a jobs
file may name (`jobs.check_exchange`, the keys of `PROFILES`). An exchange not in the table gets
`generic_profile`: ccxt's own defaults and "next N candles from since" paging.
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

    @property
    def windowed_ohlcv(self) -> bool:
        return self.ohlcv_paging == "windowed"


_PROFILES = (
    ExchangeProfile("binance", load_options=SPOT_PUBLIC, ohlcv_paging="since"),
    ExchangeProfile("bybit", load_options=SPOT_PUBLIC, ohlcv_paging="windowed"),
    ExchangeProfile("gate", load_options=SPOT_PUBLIC, ohlcv_paging="windowed"),
)

# The exchanges the extractor knows (and, for now, the only ones a jobs file may name).
PROFILES: Mapping[str, ExchangeProfile] = MappingProxyType({p.ccxt_id: p for p in _PROFILES})


def generic_profile(exchange_id: str) -> ExchangeProfile:
    """An exchange without an entry: ccxt's default options, "since" paging."""
    return ExchangeProfile(exchange_id)


def profile(exchange_id: str) -> ExchangeProfile:
    return PROFILES.get(exchange_id) or generic_profile(exchange_id)
