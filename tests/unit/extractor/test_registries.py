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
from cryptoflow_extractor.jobs import DatasetsSpec, OhlcvSpec, OrderBookSpec, TickerSpec, TradesSpec, check_exchange
from cryptoflow_extractor.profiles import PROFILES, SPOT_PUBLIC, ExchangeProfile, generic_profile, profile
from cryptoflow_extractor.session import ExchangeSession


def test_the_profile_table_is_what_jobs_files_may_name() -> None:
    assert list(PROFILES) == ["binance", "bybit", "gate"]
    for exchange_id, facts in PROFILES.items():
        assert facts.ccxt_id == exchange_id
        assert check_exchange(exchange_id) == exchange_id
    with pytest.raises(ValueError, match="unknown exchange 'kraken'; supported: binance, bybit, gate"):
        check_exchange("kraken")


def test_paging_per_exchange_and_a_generic_default() -> None:
    assert [p.ccxt_id for p in PROFILES.values() if p.windowed_ohlcv] == ["bybit", "gate"]
    assert profile("binance").ohlcv_paging == "since"
    unknown = profile("kraken")
    assert unknown == generic_profile("kraken") == ExchangeProfile("kraken")
    assert (unknown.ohlcv_paging, dict(unknown.load_options)) == ("since", {})


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
    assert [DatasetsSpec.spec_type(d) for d in JOB_FACTORIES] == [OhlcvSpec, TickerSpec, OrderBookSpec, TradesSpec]


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
