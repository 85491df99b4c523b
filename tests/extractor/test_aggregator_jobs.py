"""Aggregator jobs against the in-process simulator's providers and a real JetStream KV: listing
pages, keys, 429 + Retry-After, refusals, the monthly quota kept across restarts; price histories
and candles checkpointed and resumed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from cryptoflow_contracts import Dataset
from cryptoflow_exchange_sim import RandomWalkMarket, Simulator
from cryptoflow_exchange_sim.aggregators import DAY_MS, HOUR_MS, coin_candles, coin_history, coins, grid
from cryptoflow_exchange_sim.intervals import INTERVALS
from cryptoflow_extractor.aggregators import (
    AggregatorError,
    CandleJob,
    MarketListingJob,
    MonthlyQuota,
    PriceHistoryJob,
    ProviderClient,
    QuotaSpentError,
    listing_requests,
)
from cryptoflow_extractor.checkpoints import CheckpointStore
from cryptoflow_extractor.jobs import AggregatorSpec, Provider
from cryptoflow_extractor.resilience import CircuitBreaker, RetryPolicy
from cryptoflow_native.aggregators import candle_records, history_points, market_records
from pydantic import SecretStr

from .conftest import Recorder

START_MS = 1_704_067_200_000
NOW_MS = START_MS + 86_400_000 + 30_000
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT"]
KEY = "k-0123456789abcdef"


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    sim = Simulator(RandomWalkMarket(SYMBOLS, seed=5, start_ms=START_MS), clock=lambda: NOW_MS, aggregator_key=KEY)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def client(
    provider: Provider, sim: Simulator, checkpoints: CheckpointStore, key: str | None = KEY, **spec: object
) -> ProviderClient:
    return ProviderClient(
        provider,
        AggregatorSpec(url=sim.base_url, min_request_interval_s=0.01, **spec),  # type: ignore[arg-type]
        SecretStr(key) if key is not None else None,
        checkpoints,
        timeout_s=5,
        policy=RetryPolicy(max_attempts=4, base_delay_s=0.01),
        breaker=CircuitBreaker(provider, threshold=5, cooldown_s=1),
    )


def test_coingecko_is_listed_in_pages_of_250_and_coinpaprika_in_one() -> None:
    pages = listing_requests("coingecko", 600)
    assert [(p["per_page"], p["page"]) for p in pages] == [("250", "1"), ("250", "2"), ("100", "3")]
    assert listing_requests("coinpaprika", 120) == [{"quotes": "USD", "limit": "120"}]


@pytest.mark.parametrize("provider", ["coingecko", "coinpaprika"])
async def test_a_listing_is_published_as_pages_of_the_bodies_received(
    provider: Provider, simulator: Simulator, checkpoints: CheckpointStore
) -> None:
    recorder = Recorder()
    api = client(provider, simulator, checkpoints, top=3)
    job = MarketListingJob(provider, AggregatorSpec(url=simulator.base_url, top=3), api, recorder.publisher())
    try:
        assert await job.catch_up() == 3
    finally:
        await api.close()
    (page,) = recorder.snapshots
    assert (page.dataset, page.exchange, page.symbol, page.payload) == (
        Dataset.MARKET_SNAPSHOT,
        provider,
        "MARKETS/USD",
        None,
    )
    (call,) = page.native or []
    (response,) = call.responses
    records = market_records(call.method, response.body)
    assert len(records) == 3 and [r["rank"] for r in records] == [1, 2, 3]
    minute = NOW_MS - NOW_MS % 60_000
    assert page.first_ts == page.last_ts == minute
    # The key went as a header: nowhere in what is stored.
    assert KEY not in page.to_json().decode()
    assert simulator.aggregators.keys_seen[provider] == 1


async def test_429_waits_out_retry_after_and_a_refused_key_is_an_error_not_a_retry(
    simulator: Simulator, checkpoints: CheckpointStore
) -> None:
    simulator.aggregators.rate_limited["coingecko"] = 2
    simulator.aggregators.retry_after_s = 0
    api = client("coingecko", simulator, checkpoints)
    try:
        response = await api.get(listing_requests("coingecko", 5)[0])
        assert response.status == 200
        assert simulator.aggregators.statuses["coingecko.429"] == 2
        wrong = client("coingecko", simulator, checkpoints, key="not-the-key")
        with pytest.raises(AggregatorError, match="HTTP 401") as refused:
            await wrong.get(listing_requests("coingecko", 5)[0])
        assert "not-the-key" not in str(refused.value)
        assert simulator.aggregators.statuses["coingecko.401"] == 1  # not retried
        await wrong.close()
    finally:
        await api.close()


async def test_the_monthly_quota_stops_requests_until_the_next_month_and_survives_a_restart(
    simulator: Simulator, checkpoints: CheckpointStore
) -> None:
    api = client("coinpaprika", simulator, checkpoints, monthly_quota=3)
    try:
        for _ in range(2):
            await api.get({"quotes": "USD", "limit": "2"})
    finally:
        await api.close()
    restarted = client("coinpaprika", simulator, checkpoints, monthly_quota=3)  # a new process, the same bucket
    try:
        await restarted.get({"quotes": "USD", "limit": "2"})
        with pytest.raises(QuotaSpentError, match="3 of 3 requests"):
            await restarted.get({"quotes": "USD", "limit": "2"})
    finally:
        await restarted.close()
    assert simulator.aggregators.requests["coinpaprika"] == 3  # the refused one was never sent
    quota = MonthlyQuota("coinpaprika", 3, checkpoints)
    now = datetime.now(UTC)
    next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    await quota.spend(next_month)  # a new month, a new count
    assert (await checkpoints.state(quota.key(next_month.strftime("%Y-%m")))) == {"requests": 1}


@pytest.mark.parametrize(("provider", "coin_id"), [("coingecko", "bitcoin"), ("coinpaprika", "btc-bitcoin")])
async def test_a_price_history_is_kept_hourly_from_since_across_requests_and_resumes_from_its_checkpoint(
    provider: Provider, coin_id: str, checkpoints: CheckpointStore
) -> None:
    # The provider's clock is ours (the job asks ranges up to its own now), its market a day old.
    now = int(time.time() * 1000) // HOUR_MS * HOUR_MS + 30_000
    market = RandomWalkMarket(SYMBOLS, seed=5, start_ms=now - 86_400_000 - 30_000)
    simulator = Simulator(market, clock=lambda: now, aggregator_key=KEY)
    await simulator.start()
    recorder = Recorder()
    api = client(provider, simulator, checkpoints)
    since = now - 100 * 86_400_000  # before the market starts: its first hours have no candle
    job = PriceHistoryJob(provider, coin_id, since, api, recorder.publisher(), checkpoints)
    try:
        published = await job.catch_up()
        assert await job.catch_up() == 0  # caught up: the next poll publishes nothing again
    finally:
        await api.close()
        await simulator.stop()
    (coin,) = [c for c in coins(market, now) if c.coingecko_id == "bitcoin"]
    expected = coin_history(market, coin, grid(since, now, HOUR_MS), now)
    assert expected and published == len(expected) == 24  # the market's one day, hour by hour
    points = [
        point
        for page in recorder.snapshots
        for call in page.native or []
        for response in call.responses
        for point in history_points(call.method, response.body)
    ]
    assert [(p["ts"], p["price_usd"]) for p in points] == [(e.ts, float(e.price)) for e in expected]
    assert [p["market_cap_usd"] for p in points] == [float(e.market_cap) for e in expected]
    assert {(page.dataset, page.exchange, page.symbol) for page in recorder.snapshots} == {
        (Dataset.AGGREGATOR_PRICE, provider, f"{coin_id}/USD")
    }
    assert all(page.request["asset_id"] == coin_id for page in recorder.snapshots)
    assert await checkpoints.next_since(job.checkpoint) == expected[-1].ts + 1


@pytest.mark.parametrize(
    ("provider", "coin_id", "interval"), [("coingecko", "bitcoin", "4h"), ("coinpaprika", "btc-bitcoin", "1d")]
)
async def test_candles_are_kept_closed_and_settled_from_since_and_resume_from_their_checkpoint(
    provider: Provider, coin_id: str, interval: str, checkpoints: CheckpointStore
) -> None:
    # A market of three and a half days (2024-01-01 to 01-04 13:00:30 UTC), on the job's clock;
    # one coin (each listing of the coins prices a 24 h ticker per market).
    start = START_MS
    clock = [start + 3 * DAY_MS + 13 * HOUR_MS + 30_000]
    market = RandomWalkMarket(["BTC/USDT"], seed=5, start_ms=start)
    simulator = Simulator(market, clock=lambda: clock[0], aggregator_key=KEY)
    await simulator.start()
    simulator.aggregators.rate_limited[provider] = 1
    simulator.aggregators.retry_after_s = 1
    recorder = Recorder()
    api = client(provider, simulator, checkpoints)
    since = clock[0] - 400 * DAY_MS  # long before the market: coinpaprika's first range has no candle

    def job() -> CandleJob:  # a new one each time: a restart, the same checkpoint bucket
        return CandleJob(
            provider, coin_id, since, api, recorder.publisher(), checkpoints, clock=lambda: clock[0] / 1000
        )

    try:
        started = time.monotonic()
        first = await job().catch_up()
        assert time.monotonic() - started >= 1  # the 429's Retry-After was waited out
        assert simulator.aggregators.statuses[f"{provider}.429"] == 1
        sent = simulator.aggregators.requests[provider]
        assert await job().catch_up() == 0
        assert simulator.aggregators.requests[provider] == sent  # nothing can have settled: nothing asked
        pages_before = len(recorder.snapshots)
        clock[0] += DAY_MS  # a day later: the candles closed since, and only those
        later = await job().catch_up()
    finally:
        await api.close()
        await simulator.stop()
    (coin,) = [c for c in coins(market, clock[0]) if c.coingecko_id == "bitcoin"]
    settle_ms = int(api.api.candle_settle_s * 1000)

    def settled(now_ms: int) -> list[tuple[int, float, float, float, float]]:
        candles = coin_candles(market, coin, INTERVALS[interval], start, None, now_ms)
        return [
            (c.open_time, float(c.open), float(c.high), float(c.low), float(c.close))
            for c in candles
            if c.closed(now_ms - settle_ms)
        ]

    expected = settled(clock[0])
    before = settled(clock[0] - DAY_MS)
    # coingecko: 4-hour candles to 08:00-12:00 of the 4th (12:00-16:00 closed but not settled);
    # coinpaprika: the 1st to the 3rd. A day later, six and one more.
    assert (
        (first, later) == (len(before), len(expected) - len(before)) == ((21, 6) if provider == "coingecko" else (3, 1))
    )
    candles = [
        candle
        for page in recorder.snapshots
        for call in page.native or []
        for response in call.responses
        for candle in candle_records(call.method, response.body, response.params)
        if page.first_ts is not None and page.last_ts is not None and page.first_ts <= candle["ts"] <= page.last_ts
    ]
    assert [(c["ts"], c["open"], c["high"], c["low"], c["close"]) for c in candles] == expected
    assert {c["timeframe"] for c in candles} == {interval}
    if provider == "coinpaprika":
        assert [c["market_cap"] for c in candles] == [
            int((Decimal(str(c["close"])) * coin.circulating).quantize(Decimal(1))) for c in candles
        ]
    # The later page starts at the candle after the checkpoint: nothing fetched twice is published twice.
    assert recorder.snapshots[pages_before].first_ts == before[-1][0] + INTERVALS[interval].length_ms
    assert {(p.dataset, p.exchange, p.symbol, p.timeframe) for p in recorder.snapshots} == {
        (Dataset.AGGREGATOR_CANDLE, provider, f"{coin_id}/USD", interval)
    }
    assert all(p.request["asset_id"] == coin_id and KEY not in p.to_json().decode() for p in recorder.snapshots)
    assert {r.path for p in recorder.snapshots for call in p.native or [] for r in call.responses} == {
        api.api.candle_path.format(id=coin_id)
    }
    assert await checkpoints.next_since(job().checkpoint) == expected[-1][0] + INTERVALS[interval].length_ms
