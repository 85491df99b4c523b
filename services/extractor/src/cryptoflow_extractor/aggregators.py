"""Aggregators' market listings, polled: CoinGecko's `/coins/markets` and CoinPaprika's `/tickers`;
per configured coin, its price history and its candles.

Each poll lists the provider's top coins by market cap, in USD, and publishes every response as a
RAW page (`market_snapshot`, exchange = the provider, symbol `MARKETS/USD`) whose bronze is the
body as received (`NativeCall` coingeckoMarkets / coinpaprikaTickers, the request's parameters
beside it); the transformer parses its coins from it (`cryptoflow_native.aggregators`). CoinGecko
is paged (250 coins a page); CoinPaprika answers in one body (`limit` coins), which is why its
`top` stays under what fits one NATS message.

A coin's price history (`PriceHistoryJob`: `market_chart/range`, `tickers/{id}/historical`) and
candles (`CandleJob`: `ohlc`, `ohlcv/historical`) are RAW pages of one coin each (`aggregator_price`,
`aggregator_candle`; symbol `<coin id>/USD`), bodies as received likewise, checkpointed after the
last record published. A candle is published once it has closed, and settled: either provider may
answer with the candle still forming (CoinPaprika's current day "can change with every request
until … 23:59:59"; CoinGecko's last row may close after the request), and CoinGecko refreshes its
data every 15 minutes (the last UTC day is there 35 minutes after midnight), so its candles are
taken 35 minutes after their close, CoinPaprika's a minute after. A page never holds a forming
candle and the checkpoint stops before it: the next poll fetches it again, closed.

What a provider allows is honoured as for an exchange: one rate limiter per provider (the plan's
spacing; a 429 pauses every request of the provider for its Retry-After), a circuit breaker, and
retries with backoff for the network and 5xx. A plan's monthly quota (CoinPaprika's free plan:
20,000 calls) is counted per calendar month (UTC) in the checkpoint bucket, before each request,
so a restart does not forget what was spent; once it is spent, no request is sent until the next
month (a log line once, and `cryptoflow_extractor_aggregator_quota_remaining`).

API keys come from the settings (EXTRACTOR_COINGECKO_API_KEY, EXTRACTOR_COINPAPRIKA_API_KEY, a
Kubernetes Secret in the chart): sent as the provider's header, never as a query parameter, so
no URL, bronze record, log line or error message carries one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import ccxt
from cryptoflow_contracts import Dataset, NativeCall, NativeResponse, RawSnapshot
from cryptoflow_native.aggregators import (
    CANDLE_MS,
    COINGECKO_CHART_METHOD,
    COINGECKO_MARKETS_METHOD,
    COINGECKO_OHLC_METHOD,
    COINPAPRIKA_HISTORY_METHOD,
    COINPAPRIKA_OHLCV_METHOD,
    COINPAPRIKA_TICKERS_METHOD,
    AggregatorResponseError,
    candle_records,
    history_points,
    market_records,
)
from pydantic import SecretStr

from .checkpoints import CheckpointStore, checkpoint_key
from .jobs import AggregatorSpec, Provider
from .limiter import RateLimiter
from .metrics import AGGREGATOR_COINS, AGGREGATOR_QUOTA_REMAINING, REQUEST_SECONDS, REQUESTS
from .resilience import CircuitBreaker, RetryPolicy
from .session import Publisher

log = logging.getLogger(__name__)

LISTING_SYMBOL = "MARKETS/USD"  # a listing page's "symbol": every coin the provider lists, in USD
COINGECKO_PAGE = 250  # coins per /coins/markets page: the most CoinGecko serves
# Response headers kept in bronze: what says when and under which limits the body was served.
KEPT_HEADERS = ("content-type", "date", "last-modified", "age", "cache-control", "x-ratelimit-remaining")


@dataclass(frozen=True)
class ProviderApi:
    """Where a provider is and how it is asked."""

    host: str
    path: str
    method: str  # the NativeCall method of its listing
    history_path: str  # one coin's price history ({id}: the coin)
    history_method: str
    candle_path: str  # one coin's candles ({id}: the coin)
    candle_method: str
    candle_timeframe: str  # the timeframe the job asks for (the free plans': see CandleJob)
    candle_settle_s: float  # how long after its close a candle is final in the provider's answers
    key_header: str | None
    # Spacing of the free plan's requests, and its monthly quota (None: not counted).
    free_interval_s: float
    keyed_interval_s: float
    free_quota: int | None
    keyed_quota: int | None


def provider_api(provider: Provider, spec: AggregatorSpec, keyed: bool) -> ProviderApi:
    if provider == "coingecko":
        # Public API ~10 calls/min; a Demo key 30/min and 10,000/month; Pro 500/min, quota by plan.
        return ProviderApi(
            host=spec.url or ("https://pro-api.coingecko.com" if spec.pro else "https://api.coingecko.com"),
            path="/api/v3/coins/markets",
            method=COINGECKO_MARKETS_METHOD,
            history_path="/api/v3/coins/{id}/market_chart/range",
            history_method=COINGECKO_CHART_METHOD,
            candle_path="/api/v3/coins/{id}/ohlc",
            candle_method=COINGECKO_OHLC_METHOD,
            candle_timeframe="4h",
            candle_settle_s=35 * 60.0,
            key_header=("x-cg-pro-api-key" if spec.pro else "x-cg-demo-api-key") if keyed else None,
            free_interval_s=6.0,
            keyed_interval_s=0.12 if spec.pro else 2.0,
            free_quota=None,
            keyed_quota=None if spec.pro else 10_000,
        )
    # CoinPaprika: the free plan needs no key and allows 20,000 calls a month; paid plans send one.
    return ProviderApi(
        host=spec.url or ("https://api-pro.coinpaprika.com" if keyed else "https://api.coinpaprika.com"),
        path="/v1/tickers",
        method=COINPAPRIKA_TICKERS_METHOD,
        history_path="/v1/tickers/{id}/historical",
        history_method=COINPAPRIKA_HISTORY_METHOD,
        candle_path="/v1/coins/{id}/ohlcv/historical",
        candle_method=COINPAPRIKA_OHLCV_METHOD,
        candle_timeframe="1d",
        candle_settle_s=60.0,
        key_header="Authorization" if keyed else None,
        free_interval_s=1.0,
        keyed_interval_s=0.2,
        free_quota=20_000,
        keyed_quota=None,
    )


class AggregatorError(Exception):
    """The provider refused or failed the request (the message names the status, never the key)."""


class QuotaSpentError(AggregatorError):
    """The plan's calls for this month are spent."""


def month_of(now: datetime) -> str:
    return now.strftime("%Y-%m")


class MonthlyQuota:
    """Requests sent this calendar month (UTC), kept in the checkpoint bucket."""

    def __init__(self, provider: str, limit: int | None, store: CheckpointStore) -> None:
        self.provider = provider
        self.limit = limit
        self.store = store
        self._warned_for: str | None = None

    def key(self, month: str) -> str:
        return f"quota.{self.provider}.{month}"

    async def spend(self, now: datetime | None = None) -> None:
        """Count one request, or raise QuotaSpentError when the month's are spent."""
        if self.limit is None:
            return
        month = month_of(now or datetime.now(UTC))
        state = await self.store.state(self.key(month))
        used = int(state["requests"]) if state else 0
        if used >= self.limit:
            AGGREGATOR_QUOTA_REMAINING.labels(self.provider).set(0)
            if self._warned_for != month:
                self._warned_for = month
                log.warning(
                    "monthly quota spent: no requests until next month",
                    extra={"provider": self.provider, "quota": self.limit, "month": month},
                )
            raise QuotaSpentError(f"{self.provider}: {used} of {self.limit} requests of {month} spent")
        await self.store.put_state(self.key(month), {"requests": used + 1})
        AGGREGATOR_QUOTA_REMAINING.labels(self.provider).set(self.limit - used - 1)


class ProviderClient:
    """Every request to one provider goes through here: limiter, breaker, quota, retries."""

    def __init__(
        self,
        provider: Provider,
        spec: AggregatorSpec,
        api_key: SecretStr | None,
        checkpoints: CheckpointStore,
        timeout_s: float,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
    ) -> None:
        self.provider = provider
        self._api_key = api_key
        self.api = provider_api(provider, spec, keyed=api_key is not None)
        interval = spec.min_request_interval_s or (
            self.api.keyed_interval_s if api_key is not None else self.api.free_interval_s
        )
        self.limiter = RateLimiter(provider, interval)
        quota = spec.monthly_quota or (self.api.keyed_quota if api_key is not None else self.api.free_quota)
        self.quota = MonthlyQuota(provider, quota, checkpoints)
        self.breaker = breaker
        self.policy = policy
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._api_key is not None and self.api.key_header is not None:
            headers[self.api.key_header] = self._api_key.get_secret_value()
        return headers

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def get(
        self, params: dict[str, str], path: str | None = None, dataset: Dataset = Dataset.MARKET_SNAPSHOT
    ) -> NativeResponse:
        """The response to GET `path` (the listing's by default) with `params`, as received;
        raises AggregatorError when refused."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self.timeout)
        path = path or self.api.path
        url = self.api.host.rstrip("/") + path
        attempt = 0
        while True:
            attempt += 1
            self.breaker.check()
            await self.quota.spend()
            await self.limiter.acquire()
            started = time.perf_counter()
            try:
                async with self._http.get(url, params=params, headers=self._headers()) as response:
                    body = await response.text()
                    status = response.status
                    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._count(dataset, type(exc).__name__, started)
                self.breaker.record_failure()
                if attempt >= self.policy.max_attempts:
                    raise AggregatorError(f"{self.provider}: {type(exc).__name__} after {attempt} attempts") from None
                await asyncio.sleep(self.policy.delay(attempt))
                continue
            if status == 429:
                self._count(dataset, "429", started)
                wait = _seconds(retry_after)
                wait = wait if wait is not None else self.policy.delay(attempt)
                self.limiter.pause(wait)
                log.warning("rate limited", extra={"provider": self.provider, "retry_in_s": wait, "attempt": attempt})
                if attempt >= self.policy.max_attempts:
                    raise AggregatorError(f"{self.provider}: still rate limited after {attempt} attempts")
                continue
            if status >= 500:
                self._count(dataset, str(status), started)
                self.breaker.record_failure()
                if attempt >= self.policy.max_attempts:
                    raise AggregatorError(f"{self.provider}: HTTP {status} after {attempt} attempts")
                await asyncio.sleep(self.policy.delay(attempt))
                continue
            if status != 200:
                # 401/403 (a key missing, wrong or of another plan), 400: not worth a retry.
                self._count(dataset, str(status), started)
                raise AggregatorError(f"{self.provider}: HTTP {status}: {body[:300]}")
            self._count(dataset, "ok", started)
            self.breaker.record_success()
            return NativeResponse(method="GET", path=path, params=params, status=status, headers=headers, body=body)

    def _count(self, dataset: str, outcome: str, started: float) -> None:
        REQUESTS.labels(self.provider, dataset, outcome).inc()
        REQUEST_SECONDS.labels(self.provider, dataset).observe(time.perf_counter() - started)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def listing_requests(provider: Provider, top: int) -> list[dict[str, str]]:
    """The query parameters of the requests that list the top `top` coins."""
    if provider == "coingecko":
        pages = -(-top // COINGECKO_PAGE)
        return [
            {
                "vs_currency": "usd",
                "order": "market_cap_desc",
                "per_page": str(min(top - page * COINGECKO_PAGE, COINGECKO_PAGE)),
                "page": str(page + 1),
                "price_change_percentage": "24h",
            }
            for page in range(pages)
        ]
    return [{"quotes": "USD", "limit": str(top)}]


class MarketListingJob:
    """Polls one provider's listing; each response a RAW page."""

    def __init__(self, provider: Provider, spec: AggregatorSpec, client: ProviderClient, publisher: Publisher) -> None:
        self.provider = provider
        self.spec = spec
        self.client = client
        self.publisher = publisher

    @property
    def name(self) -> str:
        return f"{self.provider}/{Dataset.MARKET_SNAPSHOT.value}"

    async def catch_up(self) -> int:
        """One listing: every page fetched and published (acknowledged); the coins published."""
        published = 0
        for params in listing_requests(self.provider, self.spec.top):
            # Pages are 250 coins apart in rank, not in time: a page published before the next
            # request fails is whole on its own, and the next listing lists everything again.
            response = await self.client.get(params)
            snapshot, coins = self.snapshot(params, response)
            if snapshot is None:
                break  # past the last coin the provider lists
            await self.publisher.snapshot(snapshot)
            AGGREGATOR_COINS.labels(self.provider).inc(coins)
            published += coins
        log.info("listing published", extra={"job": self.name, "coins": published})
        return published

    def snapshot(self, params: dict[str, str], response: NativeResponse) -> tuple[RawSnapshot | None, int]:
        """The response as a RAW page (None when it lists no coin), and its coins."""
        try:
            records = market_records(self.client.api.method, response.body)
        except (AggregatorResponseError, ValueError) as exc:
            # Not a listing at all (an error object with status 200): the provider's fault, retried
            # next poll; the page is not published, since it holds no coin.
            raise AggregatorError(f"{self.provider}: {exc}") from None
        if not records:
            return None, 0
        times = [r["ts"] for r in records if isinstance(r.get("ts"), int)]
        snapshot = RawSnapshot(
            schema_version=2,
            native=[
                NativeCall(
                    ccxt_version=ccxt.__version__,
                    method=self.client.api.method,
                    args=[params],
                    responses=[response],
                )
            ],
            dataset=Dataset.MARKET_SNAPSHOT,
            exchange=self.provider,
            symbol=LISTING_SYMBOL,
            fetched_at=datetime.now(UTC),
            request={"provider": self.provider, "top": self.spec.top, **params},
            payload=None,
            first_ts=min(times) if times else None,
            last_ts=max(times) if times else None,
            final=True,
        )
        return snapshot, len(records)


COINGECKO_HISTORY_SPAN_MS = 90 * 86_400_000  # a 90-day range: CoinGecko answers it hourly
COINPAPRIKA_HISTORY_LIMIT = 1000  # hourly points per request
HOUR_MS = 3_600_000


def coin_page(
    method: str,
    dataset: Dataset,
    provider: Provider,
    asset_id: str,
    symbol: str,
    params: dict[str, str],
    response: NativeResponse,
    first_ts: int,
    last_ts: int,
    timeframe: str | None = None,
) -> RawSnapshot:
    """One coin's response (price history, candles) as a RAW page of its points in [first_ts, last_ts]."""
    return RawSnapshot(
        schema_version=2,
        native=[
            NativeCall(ccxt_version=ccxt.__version__, method=method, args=[asset_id, params], responses=[response])
        ],
        dataset=dataset,
        exchange=provider,
        symbol=symbol,
        timeframe=timeframe,
        fetched_at=datetime.now(UTC),
        request={"provider": provider, "asset_id": asset_id, **params},
        payload=None,
        first_ts=first_ts,
        last_ts=last_ts,
        final=True,
    )


class PriceHistoryJob:
    """Keeps one coin's price history (hourly points) from `since` on: each response a RAW page,
    the checkpoint after the first point not yet published."""

    def __init__(
        self,
        provider: Provider,
        asset_id: str,
        since_ms: int,
        client: ProviderClient,
        publisher: Publisher,
        checkpoints: CheckpointStore,
    ) -> None:
        self.provider = provider
        self.asset_id = asset_id
        self.since_ms = since_ms
        self.client = client
        self.publisher = publisher
        self.checkpoints = checkpoints
        self.symbol = f"{asset_id}/USD"

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.asset_id}/{Dataset.AGGREGATOR_PRICE.value}"

    @property
    def checkpoint(self) -> str:
        return checkpoint_key(self.provider, self.symbol, Dataset.AGGREGATOR_PRICE, None)

    def request(self, start_ms: int) -> dict[str, str]:
        if self.provider == "coingecko":
            end_ms = start_ms + COINGECKO_HISTORY_SPAN_MS
            return {"vs_currency": "usd", "from": str(start_ms // 1000), "to": str(end_ms // 1000)}
        start = datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"start": start, "interval": "1h", "limit": str(COINPAPRIKA_HISTORY_LIMIT)}

    async def catch_up(self) -> int:
        """Every point from the checkpoint to now; the points published."""
        published = 0
        start = await self.checkpoints.next_since(self.checkpoint) or self.since_ms
        while True:
            params = self.request(start)
            path = self.client.api.history_path.format(id=self.asset_id)
            response = await self.client.get(params, path=path, dataset=Dataset.AGGREGATOR_PRICE)
            try:
                points = history_points(self.client.api.history_method, response.body)
            except (AggregatorResponseError, ValueError) as exc:
                raise AggregatorError(f"{self.provider}: {exc}") from None
            times = [p["ts"] for p in points if isinstance(p.get("ts"), int) and p["ts"] >= start]
            if not times:
                # A range before the coin's first point (or its listing): the next range, if any.
                if start + self.span_ms < time.time() * 1000:
                    start += self.span_ms
                    continue
                return published
            snapshot = coin_page(
                self.client.api.history_method,
                Dataset.AGGREGATOR_PRICE,
                self.provider,
                self.asset_id,
                self.symbol,
                params,
                response,
                min(times),
                max(times),
            )
            await self.publisher.snapshot(snapshot)
            await self.checkpoints.advance(self.checkpoint, max(times) + 1, max(times))
            published += len(times)
            start = max(times) + 1
            if not self._more_after(start, len(points)):
                return published

    @property
    def span_ms(self) -> int:
        """The time one request covers."""
        return COINGECKO_HISTORY_SPAN_MS if self.provider == "coingecko" else COINPAPRIKA_HISTORY_LIMIT * HOUR_MS

    def _more_after(self, start_ms: int, points: int) -> bool:
        """Whether the range asked for was not the last one (the provider has points after it)."""
        if self.provider == "coingecko":
            return start_ms + COINGECKO_HISTORY_SPAN_MS < time.time() * 1000
        return points >= COINPAPRIKA_HISTORY_LIMIT


DAY_MS = 86_400_000
# The `days` CoinGecko answers in 4-hour candles (of 1/7/14/30/90/180/365, the ones every plan
# takes; 1 is 30-minute candles, 90 on 4-day ones): the job asks for the fewest that reach back
# to its checkpoint, so its candles reach at most 30 days back.
COINGECKO_OHLC_DAYS = (7, 14, 30)
COINPAPRIKA_OHLCV_LIMIT = 366  # daily candles a request may ask for (its `limit`'s maximum)


def _day(ms: int) -> str:
    """The UTC date of `ms`, as CoinPaprika's `start` and `end` take it (YYYY-MM-DD)."""
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


class CandleJob:
    """Keeps one coin's closed candles (CoinGecko's 4-hour, CoinPaprika's daily ones) from `since`
    on: each response a RAW page of the candles that had closed and settled when it came (module
    docstring), the checkpoint at the next candle's open time. A poll before another candle can
    have settled sends nothing (it would spend the quota on what is known)."""

    def __init__(
        self,
        provider: Provider,
        asset_id: str,
        since_ms: int,
        client: ProviderClient,
        publisher: Publisher,
        checkpoints: CheckpointStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.asset_id = asset_id
        self.since_ms = since_ms
        self.client = client
        self.publisher = publisher
        self.checkpoints = checkpoints
        self.clock = clock  # seconds since the epoch: the provider's now, in tests the simulator's
        self.symbol = f"{asset_id}/USD"
        self.timeframe = client.api.candle_timeframe
        self.timeframe_ms = CANDLE_MS[self.timeframe]
        self.settle_ms = int(client.api.candle_settle_s * 1000)

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.asset_id}/{Dataset.AGGREGATOR_CANDLE.value}/{self.timeframe}"

    @property
    def checkpoint(self) -> str:
        return checkpoint_key(self.provider, self.symbol, Dataset.AGGREGATOR_CANDLE, self.timeframe)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def request(self, start_ms: int, now_ms: int) -> dict[str, str]:
        """The query for the candles opening at `start_ms` and after."""
        if self.provider == "coingecko":
            # Candles closing in the last `days` days: the first one needed closes after start.
            reach = now_ms - start_ms
            days = next((d for d in COINGECKO_OHLC_DAYS if d * DAY_MS >= reach), COINGECKO_OHLC_DAYS[-1])
            return {"vs_currency": "usd", "days": str(days)}
        first = datetime.fromtimestamp(start_ms / 1000, UTC).date()
        last = min((first + timedelta(days=COINPAPRIKA_OHLCV_LIMIT - 1)).isoformat(), _day(now_ms))
        return {"start": first.isoformat(), "end": last, "limit": str(COINPAPRIKA_OHLCV_LIMIT)}

    async def catch_up(self) -> int:
        """Every candle from the checkpoint that has settled by now; the candles published."""
        published = 0
        start = await self.checkpoints.next_since(self.checkpoint) or self.since_ms
        while start + self.timeframe_ms + self.settle_ms <= (now_ms := self._now_ms()):
            params = self.request(start, now_ms)
            path = self.client.api.candle_path.format(id=self.asset_id)
            response = await self.client.get(params, path=path, dataset=Dataset.AGGREGATOR_CANDLE)
            settled_ms = self._now_ms() - self.settle_ms
            try:
                candles = candle_records(self.client.api.candle_method, response.body, params)
            except (AggregatorResponseError, ValueError) as exc:
                raise AggregatorError(f"{self.provider}: {exc}") from None
            times = sorted(
                c["ts"]
                for c in candles
                if isinstance(c.get("ts"), int)
                and c["timeframe"] == self.timeframe
                and start <= c["ts"]
                and c["ts"] + self.timeframe_ms <= settled_ms
            )
            if not times:
                end = params.get("end")
                if end is not None and end < _day(now_ms):
                    # A range before the coin's first candle: CoinPaprika's next one.
                    start = int(datetime.fromisoformat(end).replace(tzinfo=UTC).timestamp() * 1000) + DAY_MS
                    continue
                return published
            await self.publisher.snapshot(self.snapshot(params, response, times[0], times[-1]))
            await self.checkpoints.advance(self.checkpoint, times[-1] + self.timeframe_ms, times[-1])
            published += len(times)
            start = times[-1] + self.timeframe_ms
        return published

    def snapshot(self, params: dict[str, str], response: NativeResponse, first_ts: int, last_ts: int) -> RawSnapshot:
        """The response as a RAW page of its settled candles, those opening in [first_ts, last_ts]."""
        return coin_page(
            self.client.api.candle_method,
            Dataset.AGGREGATOR_CANDLE,
            self.provider,
            self.asset_id,
            self.symbol,
            params,
            response,
            first_ts,
            last_ts,
            self.timeframe,
        )
