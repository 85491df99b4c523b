"""The exchange profiles and the dataset job registry: one place each, read by everything."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptoflow_contracts import Dataset
from cryptoflow_extractor.checkpoints import CheckpointStore
from cryptoflow_extractor.config import ExtractorSettings
from cryptoflow_extractor.datasets import JOB_FACTORIES, JobContext, scheduled_jobs
from cryptoflow_extractor.exchanges import create_exchange
from cryptoflow_extractor.jobs import (
    AggTradesSpec,
    DatasetsSpec,
    OhlcvSpec,
    OrderBookSpec,
    TickerSpec,
    TradesSpec,
    check_exchange,
)
from cryptoflow_extractor.profiles import PROFILES, SPOT_PUBLIC, ExchangeProfile, generic_profile, profile
from cryptoflow_extractor.session import ExchangeSession


def test_any_ccxt_exchange_may_be_named_and_the_profile_table_holds_only_facts() -> None:
    assert list(PROFILES)[:3] == ["binance", "bybit", "gate"]
    assert len(PROFILES) >= 11
    for exchange_id, facts in PROFILES.items():
        assert facts.ccxt_id == exchange_id
        assert check_exchange(exchange_id) == exchange_id
    # Not in the table, still an exchange: ccxt knows it.
    assert "poloniex" not in PROFILES and check_exchange("poloniex") == "poloniex"
    with pytest.raises(ValueError, match="unknown exchange 'mtgox': not a ccxt exchange id"):
        check_exchange("mtgox")


def test_paging_per_exchange_and_a_generic_default() -> None:
    assert [p.ccxt_id for p in PROFILES.values() if p.windowed_ohlcv] == ["bybit", "gate"]
    assert profile("binance").ohlcv_paging == "since"
    unknown = profile("poloniex")
    assert unknown == generic_profile("poloniex") == ExchangeProfile("poloniex")
    assert (unknown.ohlcv_paging, dict(unknown.load_options)) == ("since", {})
    assert (unknown.max_ohlcv_page, unknown.max_trades_page) == (100, 100)


def test_pages_never_ask_for_more_than_the_exchange_returns() -> None:
    """A short page reads as the end of the data: a page_limit above the exchange's maximum
    (okx returns at most 100 candles) would stop every backfill after its first page."""
    datasets = DatasetsSpec.model_validate(
        {"ohlcv": {"timeframes": ["1m"], "page_limit": 1000}, "trades": {"page_limit": 1000}}
    )
    for exchange_id, ohlcv_page, trades_page in (("okx", 100, 100), ("binance", 1000, 1000), ("poloniex", 100, 100)):
        session = cast(ExchangeSession, SimpleNamespace(exchange_id=exchange_id))
        jobs = scheduled_jobs(JobContext(session, "BTC/USDT", cast(CheckpointStore, object())), datasets)
        assert [s.job.page_limit for s in jobs[Dataset.OHLCV]] == [ohlcv_page]  # type: ignore[attr-defined]
        assert [s.job.page_limit for s in jobs[Dataset.TRADES]] == [trades_page]  # type: ignore[attr-defined]


async def test_exchanges_are_built_from_their_profile_with_options_of_their_own() -> None:
    first, second = create_exchange("bybit", None), create_exchange("bybit", None)
    try:
        assert first.options["fetchMarkets"]["types"] == ["spot"]
        assert first.options["fetchCurrencies"] is False
        first.options["fetchMarkets"]["types"].append("swap")
        assert second.options["fetchMarkets"]["types"] == ["spot"]
        assert SPOT_PUBLIC["fetchMarkets"] == {"types": ["spot"]}
    finally:
        await first.close()
        await second.close()


def test_every_dataset_block_has_a_job_factory_and_the_reverse() -> None:
    fields = set(DatasetsSpec.model_fields)
    assert fields <= {d.value for d in Dataset}, "a DatasetsSpec field is named by its Dataset value"
    assert {d.value for d in JOB_FACTORIES} == fields
    assert [DatasetsSpec.spec_type(d) for d in JOB_FACTORIES] == [
        OhlcvSpec,
        TickerSpec,
        OrderBookSpec,
        TradesSpec,
        AggTradesSpec,
    ]


def test_datasets_from_the_environment_read_each_spec_from_the_settings() -> None:
    settings = ExtractorSettings.model_construct(
        timeframes=["1m", "5m"],
        since=datetime(2024, 6, 1, tzinfo=UTC),
        until=None,
        poll_interval_s=3.0,
        page_limit=500,
        orderbook_depth=7,
    )
    spec = DatasetsSpec.from_env([Dataset.TRADES, Dataset.OHLCV, Dataset.ORDERBOOK], settings)
    assert spec.enabled() == [Dataset.OHLCV, Dataset.ORDERBOOK, Dataset.TRADES]
    assert spec.ohlcv == OhlcvSpec(
        timeframes=["1m", "5m"], since=settings.since, until=None, poll_interval_s=3.0, page_limit=500
    )
    assert spec.orderbook == OrderBookSpec(depth=7, poll_interval_s=3.0)
    assert spec.trades == TradesSpec(poll_interval_s=3.0, page_limit=500)
    assert spec.ticker is None


def test_scheduled_jobs_follow_the_configured_datasets() -> None:
    session = cast(ExchangeSession, SimpleNamespace(exchange_id="gate"))
    context = JobContext(session, "BTC/USDT", cast(CheckpointStore, object()))
    datasets = DatasetsSpec.model_validate(
        {
            "trades": {"since": "2024-01-01T00:00:00Z", "poll_interval_s": 4},
            "ohlcv": {"timeframes": ["1m", "1h"], "since": "2024-01-01T00:00:00Z", "poll_interval_s": 10},
            "orderbook": {"depth": 5, "poll_interval_s": 2},
        }
    )
    jobs = scheduled_jobs(context, datasets)
    assert list(jobs) == [Dataset.OHLCV, Dataset.ORDERBOOK, Dataset.TRADES]
    named: dict[str, tuple[Any, float]] = {
        s.job.name: (s.job, s.poll_interval_s) for scheduled in jobs.values() for s in scheduled
    }
    assert {name: interval for name, (_, interval) in named.items()} == {
        "gate BTC/USDT ohlcv 1m": 10.0,
        "gate BTC/USDT ohlcv 1h": 10.0,
        "gate BTC/USDT orderbook": 2.0,
        "gate BTC/USDT trades": 4.0,
    }
    assert named["gate BTC/USDT ohlcv 1h"][0].since_ms == 1_704_067_200_000
    assert named["gate BTC/USDT orderbook"][0].depth == 5
    assert named["gate BTC/USDT trades"][0].since_ms == 1_704_067_200_000
