"""CoinGecko's `/api/v3/coins/markets` and CoinPaprika's `/v1/tickers` (and each one's price
history of a coin: `/coins/{id}/market_chart/range`, `/tickers/{id}/historical`; and its candles:
`/coins/{id}/ohlc`, `/coins/{id}/ohlcv/historical`), from the simulator's market.

Each listed BASE/USDT (or BASE/USD) market is a coin: its price is the close of the market's 1m
candle that ended at the last whole minute (`last_updated`: the number an exchange says for it), its 24 h volume
and change the ticker's, its supply a fixed number per coin (a hash of its symbol), so a
price-divergence check over the simulator has an exact expected answer. Beside them, one coin that
shares the first coin's ticker under another id and a tiny market cap: the symbol collision an
asset registry must resolve (CoinGecko lists many coins per ticker). A coin's candles are its
market's candles of the provider's timeframe (CoinGecko's chosen by `days` as its API does: 30
minutes for 1–2 days, 4 hours for 3–30, 4 days beyond; CoinPaprika's daily by default), volume the
quote volume, market cap at the close. The candle still forming is served too, as CoinPaprika
documents for its current day and as CoinGecko's last row may be (its time is a candle's close, so
that one's lies ahead): a client must tell closed candles from it.

Field names and shapes follow the providers' API documentation (CoinGecko v3 `coins/markets`:
id, symbol in lower case, current_price, market_cap, market_cap_rank, total_volume, ...
last_updated; CoinPaprika v1 `tickers`: id like `btc-bitcoin`, symbol in upper case, rank,
supplies, `quotes.USD` with price, volume_24h, market_cap, percent_change_24h). Keys: CoinGecko's
`x-cg-demo-api-key` / `x-cg-pro-api-key` header (or `x_cg_demo_api_key` query parameter),
CoinPaprika's `Authorization` header; with `--aggregator-key` set, a request without it is refused
as each provider refuses it. Faults: the next N requests of a provider answered 429 with
`Retry-After`, as both do when a rate limit or CoinPaprika's monthly quota is spent.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from aiohttp import web

from .derived import ticker_snapshot
from .intervals import INTERVALS, Interval
from .market import KlineWindow, Listing, Market

Clock = Callable[[], int]

PROVIDERS = ("coingecko", "coinpaprika")
COINGECKO_MARKETS = "/api/v3/coins/markets"
COINPAPRIKA_TICKERS = "/v1/tickers"
COINGECKO_CHART = "/api/v3/coins/{id}/market_chart/range"
COINPAPRIKA_HISTORY = "/v1/tickers/{id}/historical"
COINGECKO_OHLC = "/api/v3/coins/{id}/ohlc"
COINPAPRIKA_OHLCV = "/v1/coins/{id}/ohlcv/historical"
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
# CoinPaprika's history intervals (of its documented ones, those the simulator serves).
PAPRIKA_INTERVALS = {"5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": HOUR_MS, "6h": 6 * HOUR_MS,
                     "12h": 12 * HOUR_MS, "24h": DAY_MS, "1d": DAY_MS}  # fmt: skip
# CoinGecko's `days` (every plan's), and the candles each is answered in.
GECKO_OHLC_DAYS = ("1", "7", "14", "30", "90", "180", "365", "max")
FOUR_DAYS = Interval("4d", 4 * DAY_MS)
# CoinPaprika's ohlcv `interval` → the market's interval (24h, the default: daily candles).
PAPRIKA_CANDLES = {"5m": "5m", "15m": "15m", "30m": "30m", "1h": "1h", "6h": "6h", "12h": "12h", "24h": "1d"}
PAPRIKA_OHLCV_LIMIT = 366
USD_QUOTES = ("USDT", "USD")
MINUTE = INTERVALS["1m"]
MINUTE_MS = 60_000
# Provider ids of well-known coins; others get `<symbol>` and `<symbol>-<symbol>`.
KNOWN_IDS: dict[str, tuple[str, str, str]] = {
    "BTC": ("bitcoin", "btc-bitcoin", "Bitcoin"),
    "ETH": ("ethereum", "eth-ethereum", "Ethereum"),
    "BNB": ("binancecoin", "bnb-binance-coin", "BNB"),
    "SOL": ("solana", "sol-solana", "Solana"),
    "XRP": ("ripple", "xrp-xrp", "XRP"),
    "ADA": ("cardano", "ada-cardano", "Cardano"),
    "DOGE": ("dogecoin", "doge-dogecoin", "Dogecoin"),
    "DASH": ("dash", "dash-dash", "Dash"),
}


class CoinNames(NamedTuple):
    coingecko: str
    coinpaprika: str
    name: str


def coin_names(base: str) -> CoinNames:
    """A base asset's CoinGecko id, CoinPaprika id and name, as the simulator lists it."""
    lower = base.lower()
    return CoinNames(*KNOWN_IDS.get(base, (lower, f"{lower}-{lower}", base)))


@dataclass(frozen=True)
class Coin:
    symbol: str
    coingecko_id: str
    coinpaprika_id: str
    name: str
    price: Decimal
    open_24h: Decimal
    volume_24h_usd: Decimal
    circulating: Decimal
    total: Decimal
    max_supply: Decimal | None
    updated_ms: int

    @property
    def market_cap(self) -> Decimal:
        return (self.price * self.circulating).quantize(Decimal(1))

    @property
    def change_24h_pct(self) -> float:
        return float((self.price - self.open_24h) / self.open_24h * 100) if self.open_24h else 0.0


def _supply(symbol: str) -> tuple[Decimal, Decimal, Decimal | None]:
    unit = int(hashlib.sha256(symbol.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    circulating = Decimal(1_000_000 + int(unit * 99_000_000))
    total = circulating + Decimal(int(unit * 1_000_000))
    return circulating, total, (total * 2 if unit < 0.5 else None)


def coins(market: Market, now_ms: int) -> list[Coin]:
    """The coins at `now_ms`, by market cap, highest first (then the colliding coin)."""
    found: list[Coin] = []
    for listing in market.listings():
        if listing.quote_asset not in USD_QUOTES or any(c.symbol == listing.base_asset for c in found):
            continue
        # The price at the last whole minute: the close of the 1m candle that ended there.
        minute = now_ms - now_ms % MINUTE_MS
        closed = market.klines(
            listing.symbol_id, MINUTE, KlineWindow(minute - MINUTE_MS, minute - MINUTE_MS, 1), now_ms
        )
        ticker = ticker_snapshot(market, listing.symbol_id, now_ms)
        if not closed or closed[0].close_time >= now_ms or ticker.anchor is None:
            continue  # no closed candle yet: the providers do not list it yet either
        gecko, paprika, name = coin_names(listing.base_asset)
        circulating, total, max_supply = _supply(listing.base_asset)
        found.append(
            Coin(
                listing.base_asset, gecko, paprika, name, Decimal(closed[0].close), ticker.open, ticker.quote_volume,
                circulating, total, max_supply, minute,
            )
        )  # fmt: skip
    found.sort(key=lambda coin: coin.market_cap, reverse=True)
    if found:
        first = found[0]
        # Same ticker, another coin: worth a thousandth of the first.
        found.append(
            Coin(
                first.symbol, f"{first.coingecko_id}-classic", f"{first.symbol.lower()}-{first.coingecko_id}-classic",
                f"{first.name} Classic", first.price / 1000, first.open_24h / 1000, first.volume_24h_usd / 1000,
                first.circulating, first.total, first.max_supply, first.updated_ms,
            )
        )  # fmt: skip
    return found


@dataclass(frozen=True)
class HistoryPoint:
    ts: int
    price: Decimal
    market_cap: Decimal
    volume_24h_usd: Decimal


def _usd_listing(market: Market, coin: Coin) -> Listing | None:
    usd = (item for item in market.listings() if item.base_asset == coin.symbol and item.quote_asset in USD_QUOTES)
    return next(usd, None)


def _scale(coin: Coin) -> Decimal:
    """The colliding coin is worth a thousandth of the one whose ticker it shares (coins())."""
    return Decimal(1) / 1000 if coin.name.endswith(" Classic") else Decimal(1)


def coin_history(market: Market, coin: Coin, points: list[int], now_ms: int) -> list[HistoryPoint]:
    """The coin at each time of `points` (whole minutes): as the listing gives it at that minute,
    its price the close of the 1m candle that ended there; its 24 h volume the quote volume of the
    24 hourly candles before it. A time whose candle has not closed (or has no candle) is left out."""
    listing = _usd_listing(market, coin)
    if listing is None:
        return []
    scale = _scale(coin)
    first = market.klines(listing.symbol_id, MINUTE, KlineWindow(0, None, 1), now_ms)
    if not first:
        return []
    found = []
    for ts in points:
        if ts > now_ms:
            break
        if ts - MINUTE_MS < first[0].open_time:
            continue  # before the market's first candle: no price yet (skipped without a lookup)
        closed = market.klines(listing.symbol_id, MINUTE, KlineWindow(ts - MINUTE_MS, ts - MINUTE_MS, 1), now_ms)
        if not closed or closed[0].close_time >= now_ms:
            continue
        hours = market.klines(listing.symbol_id, INTERVALS["1h"], KlineWindow(ts - DAY_MS, ts - HOUR_MS, 24), now_ms)
        price = Decimal(closed[0].close) * scale
        volume = sum((Decimal(h.quote_volume) for h in hours), Decimal(0)) * scale
        found.append(HistoryPoint(ts, price, (price * coin.circulating).quantize(Decimal(1)), volume))
    return found


@dataclass(frozen=True)
class CoinCandle:
    open_time: int
    close_time: int  # its end: open time + length (CoinGecko's timestamp of it)
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume_usd: Decimal
    market_cap: Decimal  # at the close

    def closed(self, now_ms: int) -> bool:
        return self.close_time <= now_ms


def coin_candles(
    market: Market, coin: Coin, interval: Interval, first_open_ms: int, last_open_ms: int | None, now_ms: int
) -> list[CoinCandle]:
    """The coin's candles of `interval` opening in [first_open_ms, last_open_ms] (None: up to now),
    the one still forming included: its USD market's candles, volume its quote volume, market cap
    its close times the coin's supply."""
    listing = _usd_listing(market, coin)
    if listing is None:
        return []
    scale = _scale(coin)
    window = KlineWindow(first_open_ms, last_open_ms, 1000)
    return [
        CoinCandle(
            k.open_time, interval.shift(k.open_time, 1),
            Decimal(k.open) * scale, Decimal(k.high) * scale, Decimal(k.low) * scale, Decimal(k.close) * scale,
            Decimal(k.quote_volume) * scale, (Decimal(k.close) * scale * coin.circulating).quantize(Decimal(1)),
        )
        for k in market.klines(listing.symbol_id, interval, window, now_ms)
    ]  # fmt: skip


def coingecko_ohlc_interval(days: str) -> Interval:
    """CoinGecko's automatic candle: 30 minutes for 1–2 days, 4 hours for 3–30, 4 days beyond."""
    if days == "max" or int(days) > 30:
        return FOUR_DAYS
    return INTERVALS["30m"] if int(days) <= 2 else INTERVALS["4h"]


def grid(start_ms: int, end_ms: int, step_ms: int) -> list[int]:
    """The multiples of `step_ms` in [start_ms, end_ms]."""
    first = -(-start_ms // step_ms) * step_ms
    return list(range(first, end_ms + 1, step_ms))


def coingecko_granularity(span_ms: int) -> int:
    """CoinGecko's automatic granularity: 5-minutely within a day, hourly to 90 days, daily beyond."""
    if span_ms <= DAY_MS:
        return 300_000
    return HOUR_MS if span_ms <= 90 * DAY_MS else DAY_MS


def _instant_ms(value: str) -> int:
    """A unix time in seconds, or an ISO 8601 date or time (CoinPaprika takes either)."""
    try:
        return int(float(value) * 1000)
    except ValueError:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def _iso_s(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def coingecko_row(coin: Coin, rank: int) -> dict[str, Any]:
    price = float(coin.price)
    return {
        "id": coin.coingecko_id,
        "symbol": coin.symbol.lower(),
        "name": coin.name,
        "image": f"https://coin-images.coingecko.com/coins/images/{rank}/large/{coin.coingecko_id}.png",
        "current_price": price,
        "market_cap": int(coin.market_cap),
        "market_cap_rank": rank,
        "fully_diluted_valuation": int((coin.price * (coin.max_supply or coin.total)).quantize(Decimal(1))),
        "total_volume": float(coin.volume_24h_usd),
        "high_24h": max(price, float(coin.open_24h)),
        "low_24h": min(price, float(coin.open_24h)),
        "price_change_24h": float(coin.price - coin.open_24h),
        "price_change_percentage_24h": round(coin.change_24h_pct, 5),
        "market_cap_change_24h": float((coin.price - coin.open_24h) * coin.circulating),
        "market_cap_change_percentage_24h": round(coin.change_24h_pct, 5),
        "circulating_supply": float(coin.circulating),
        "total_supply": float(coin.total),
        "max_supply": _number(coin.max_supply),
        "ath": price,
        "ath_change_percentage": 0.0,
        "ath_date": _iso(coin.updated_ms),
        "atl": min(price, float(coin.open_24h)),
        "atl_change_percentage": 0.0,
        "atl_date": _iso(coin.updated_ms),
        "roi": None,
        "last_updated": _iso(coin.updated_ms),
    }


def coinpaprika_row(coin: Coin, rank: int) -> dict[str, Any]:
    return {
        "id": coin.coinpaprika_id,
        "name": coin.name,
        "symbol": coin.symbol.upper(),
        "rank": rank,
        "circulating_supply": int(coin.circulating),
        "total_supply": int(coin.total),
        "max_supply": int(coin.max_supply) if coin.max_supply is not None else 0,
        "beta_value": 1.0,
        "first_data_at": "2018-01-01T00:00:00Z",
        "last_updated": datetime.fromtimestamp(coin.updated_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quotes": {
            "USD": {
                "price": float(coin.price),
                "volume_24h": float(coin.volume_24h_usd),
                "volume_24h_change_24h": 0.0,
                "market_cap": int(coin.market_cap),
                "market_cap_change_24h": round(coin.change_24h_pct, 2),
                "percent_change_15m": 0.0,
                "percent_change_30m": 0.0,
                "percent_change_1h": 0.0,
                "percent_change_6h": 0.0,
                "percent_change_12h": 0.0,
                "percent_change_24h": round(coin.change_24h_pct, 2),
                "percent_change_7d": 0.0,
                "percent_change_30d": 0.0,
                "percent_change_1y": 0.0,
                "ath_price": float(coin.price),
                "ath_date": _iso(coin.updated_ms),
                "percent_from_price_ath": 0.0,
            }
        },
    }


@dataclass
class Aggregators:
    """The two providers' endpoints on the simulator's host, with their keys and 429 faults."""

    market: Market
    clock: Clock
    api_key: str | None = None
    # provider → requests still to be refused with 429
    rate_limited: Counter[str] = field(default_factory=Counter)
    retry_after_s: int = 1
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    keys_seen: Counter[str] = field(default_factory=Counter)
    # The coins of the clock's minute: listing them costs a 24 h ticker per market, and they are
    # the same all minute (priced at the minute's start, the ticker's anchor the 1m candle before).
    _listed: tuple[int, list[Coin]] | None = field(default=None, repr=False)

    def _coins(self, now_ms: int) -> list[Coin]:
        minute = now_ms - now_ms % MINUTE_MS
        if self._listed is None or self._listed[0] != minute:
            self._listed = (minute, coins(self.market, now_ms))
        return self._listed[1]

    def routes(self, app: web.Application) -> None:
        app.router.add_get(COINGECKO_MARKETS, self.coingecko_markets)
        app.router.add_get(COINPAPRIKA_TICKERS, self.coinpaprika_tickers)
        app.router.add_get(COINGECKO_CHART, self.coingecko_chart)
        app.router.add_get(COINPAPRIKA_HISTORY, self.coinpaprika_history)
        app.router.add_get(COINGECKO_OHLC, self.coingecko_ohlc)
        app.router.add_get(COINPAPRIKA_OHLCV, self.coinpaprika_ohlcv)
        app.router.add_get("/_sim/aggregators", self.stats)
        app.router.add_post("/_sim/aggregators", self.add_faults)

    def _refused(self, provider: str, request: web.Request) -> web.Response | None:
        self.requests[provider] += 1
        key = (
            request.headers.get("x-cg-pro-api-key")
            or request.headers.get("x-cg-demo-api-key")
            or request.query.get("x_cg_demo_api_key")
            if provider == "coingecko"
            else request.headers.get("Authorization")
        )
        if key:
            self.keys_seen[provider] += 1
        if self.api_key is not None and key != self.api_key:
            return self._answer(provider, 401, _unauthorized(provider))
        if self.rate_limited[provider] > 0:
            self.rate_limited[provider] -= 1
            response = self._answer(provider, 429, _rate_limited(provider))
            response.headers["Retry-After"] = str(self.retry_after_s)
            return response
        return None

    def _answer(self, provider: str, status: int, body: Any) -> web.Response:
        self.statuses[f"{provider}.{status}"] += 1
        return web.json_response(body, status=status)

    async def coingecko_markets(self, request: web.Request) -> web.Response:
        refused = self._refused("coingecko", request)
        if refused is not None:
            return refused
        if request.query.get("vs_currency", "").lower() != "usd":
            return self._answer("coingecko", 400, {"error": "invalid vs_currency"})
        per_page = min(max(int(request.query.get("per_page", "100")), 1), 250)
        page = max(int(request.query.get("page", "1")), 1)
        listed = self._coins(self.clock())
        start = (page - 1) * per_page
        rows = [coingecko_row(coin, start + i + 1) for i, coin in enumerate(listed[start : start + per_page])]
        return self._answer("coingecko", 200, rows)

    async def coinpaprika_tickers(self, request: web.Request) -> web.Response:
        refused = self._refused("coinpaprika", request)
        if refused is not None:
            return refused
        if request.query.get("quotes", "USD").upper() != "USD":
            return self._answer("coinpaprika", 400, {"error": "invalid quotes"})
        listed = self._coins(self.clock())
        if "limit" in request.query:
            listed = listed[: max(int(request.query["limit"]), 1)]
        return self._answer("coinpaprika", 200, [coinpaprika_row(coin, i + 1) for i, coin in enumerate(listed)])

    def _coin(self, provider: str, coin_id: str) -> Coin | None:
        for coin in self._coins(self.clock()):
            if (coin.coingecko_id if provider == "coingecko" else coin.coinpaprika_id) == coin_id:
                return coin
        return None

    async def coingecko_chart(self, request: web.Request) -> web.Response:
        """`/coins/{id}/market_chart/range?vs_currency=usd&from=<unix s>&to=<unix s>`."""
        refused = self._refused("coingecko", request)
        if refused is not None:
            return refused
        coin = self._coin("coingecko", request.match_info["id"])
        if coin is None:
            return self._answer("coingecko", 404, {"error": "coin not found"})
        try:
            start, end = _instant_ms(request.query["from"]), _instant_ms(request.query["to"])
        except (KeyError, ValueError):
            return self._answer("coingecko", 400, {"error": "invalid from/to"})
        points = coin_history(self.market, coin, grid(start, end, coingecko_granularity(end - start)), self.clock())
        return self._answer(
            "coingecko",
            200,
            {
                "prices": [[p.ts, float(p.price)] for p in points],
                "market_caps": [[p.ts, float(p.market_cap)] for p in points],
                "total_volumes": [[p.ts, float(p.volume_24h_usd)] for p in points],
            },
        )

    async def coinpaprika_history(self, request: web.Request) -> web.Response:
        """`/tickers/{id}/historical?start=…&end=…&interval=1h&limit=…`."""
        refused = self._refused("coinpaprika", request)
        if refused is not None:
            return refused
        coin = self._coin("coinpaprika", request.match_info["id"])
        if coin is None:
            return self._answer("coinpaprika", 404, {"error": "id not found"})
        step = PAPRIKA_INTERVALS.get(request.query.get("interval", "5m"))
        try:
            start = _instant_ms(request.query["start"])
            end = _instant_ms(request.query["end"]) if "end" in request.query else self.clock()
            limit = min(max(int(request.query.get("limit", "1000")), 1), 5000)
        except (KeyError, ValueError):
            return self._answer("coinpaprika", 400, {"error": "invalid start, end or limit"})
        if step is None:
            return self._answer("coinpaprika", 400, {"error": "invalid interval"})
        points = coin_history(self.market, coin, grid(start, end, step)[:limit], self.clock())
        return self._answer(
            "coinpaprika",
            200,
            [
                {
                    "timestamp": datetime.fromtimestamp(p.ts / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "price": float(p.price),
                    "volume_24h": float(p.volume_24h_usd),
                    "market_cap": int(p.market_cap),
                }
                for p in points
            ],
        )

    async def coingecko_ohlc(self, request: web.Request) -> web.Response:
        """`/coins/{id}/ohlc?vs_currency=usd&days=N`: `[close ms, open, high, low, close]` of the
        candles closing in the last N days, and the one still forming."""
        refused = self._refused("coingecko", request)
        if refused is not None:
            return refused
        coin = self._coin("coingecko", request.match_info["id"])
        if coin is None:
            return self._answer("coingecko", 404, {"error": "coin not found"})
        days = request.query.get("days", "")
        if request.query.get("vs_currency", "").lower() != "usd" or days not in GECKO_OHLC_DAYS:
            return self._answer("coingecko", 400, {"error": "invalid vs_currency or days"})
        now = self.clock()
        interval = coingecko_ohlc_interval(days)
        first = 0 if days == "max" else now - int(days) * DAY_MS - interval.length_ms + 1
        candles = coin_candles(self.market, coin, interval, first, None, now)
        return self._answer(
            "coingecko",
            200,
            [[c.close_time, float(c.open), float(c.high), float(c.low), float(c.close)] for c in candles],
        )

    async def coinpaprika_ohlcv(self, request: web.Request) -> web.Response:
        """`/coins/{id}/ohlcv/historical?start=…&end=…&limit=…&interval=24h`: the candles opening
        from start to end (a date: its day included), at most `limit` (1 unless given, ≤ 366)."""
        refused = self._refused("coinpaprika", request)
        if refused is not None:
            return refused
        coin = self._coin("coinpaprika", request.match_info["id"])
        if coin is None:
            return self._answer("coinpaprika", 404, {"error": "id not found"})
        interval = PAPRIKA_CANDLES.get(request.query.get("interval", "24h"))
        try:
            start = _instant_ms(request.query["start"])
            end = _instant_ms(request.query["end"]) if "end" in request.query else self.clock()
            limit = int(request.query.get("limit", "1"))
        except (KeyError, ValueError):
            return self._answer("coinpaprika", 400, {"error": "invalid start, end or limit"})
        if interval is None or not 1 <= limit <= PAPRIKA_OHLCV_LIMIT or not 0 <= end - start <= 366 * DAY_MS:
            return self._answer("coinpaprika", 400, {"error": "invalid interval, limit or range"})
        now = self.clock()
        candles = coin_candles(self.market, coin, INTERVALS[interval], start, min(end, now), now)[:limit]
        return self._answer(
            "coinpaprika",
            200,
            [
                {
                    "time_open": _iso_s(c.open_time),
                    "time_close": _iso_s(c.close_time - 1000),
                    "open": float(c.open),
                    "high": float(c.high),
                    "low": float(c.low),
                    "close": float(c.close),
                    "volume": float(c.volume_usd),
                    "market_cap": int(c.market_cap),
                }
                for c in candles
            ],
        )

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": dict(self.requests),
                "statuses": dict(self.statuses),
                "keys_seen": dict(self.keys_seen),
                "rate_limited": dict(self.rate_limited),
            }
        )

    async def add_faults(self, request: web.Request) -> web.Response:
        """`{"provider": "coingecko", "rate_limited": 3}`: its next 3 requests get 429."""
        body = await request.json()
        provider = body.get("provider")
        if provider not in PROVIDERS:
            raise web.HTTPBadRequest(text=f"provider: one of {', '.join(PROVIDERS)}")
        self.rate_limited[provider] += int(body.get("rate_limited", 0))
        return await self.stats(request)


def _unauthorized(provider: str) -> dict[str, Any]:
    if provider == "coingecko":
        return {"status": {"error_code": 10002, "error_message": "API Key Missing"}}
    return {"error": "invalid API key"}


def _rate_limited(provider: str) -> dict[str, Any]:
    if provider == "coingecko":
        return {
            "status": {
                "error_code": 429,
                "error_message": "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher rate limits.",
            }
        }
    return {"error": "Too many requests"}
