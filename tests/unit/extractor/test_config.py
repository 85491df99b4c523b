"""ExtractorSettings from the environment: comma lists, and bad values named."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptoflow_extractor.config import ExtractorSettings
from cryptoflow_runtime.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NATS_URL", "EXTRACTOR_SYMBOLS", "EXTRACTOR_TIMEFRAMES", "EXTRACTOR_EXCHANGE", "EXTRACTOR_SINCE"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load_settings(ExtractorSettings)
    assert settings.exchange == "binance"
    assert settings.symbols == ["BTC/USDT", "ETH/USDT"]
    assert settings.timeframes == ["1m"]
    assert settings.since == datetime(2024, 1, 1, tzinfo=UTC)
    assert settings.exchange_url is None


def test_comma_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACTOR_SYMBOLS", "BTC/USDT, ETH/USDT ,XRP/ETH,")
    monkeypatch.setenv("EXTRACTOR_TIMEFRAMES", " 1m,5m , 1h")
    settings = load_settings(ExtractorSettings)
    assert settings.symbols == ["BTC/USDT", "ETH/USDT", "XRP/ETH"]
    assert settings.timeframes == ["1m", "5m", "1h"]


def test_single_values_and_other_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACTOR_SYMBOLS", "ETH/BTC")
    monkeypatch.setenv("EXTRACTOR_SINCE", "2024-06-01T00:00:00")  # naive: read as UTC
    monkeypatch.setenv("EXTRACTOR_EXCHANGE_URL", "http://127.0.0.1:18080")
    monkeypatch.setenv("EXTRACTOR_PAGE_LIMIT", "500")
    settings = load_settings(ExtractorSettings)
    assert settings.symbols == ["ETH/BTC"]
    assert settings.since == datetime(2024, 6, 1, tzinfo=UTC)
    assert settings.exchange_url == "http://127.0.0.1:18080"
    assert settings.page_limit == 500


@pytest.mark.parametrize("value", ["7m", "1m,2w", "1M", "m1"])
def test_bad_timeframe_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("EXTRACTOR_TIMEFRAMES", value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(ExtractorSettings)
    assert "EXTRACTOR_TIMEFRAMES:" in str(excinfo.value)


@pytest.mark.parametrize("value", ["BTCUSDT", "BTC-USDT", "BTC/", "/USDT", "BTC/USDT,ETH", "BTC/US DT", "", " , "])
def test_bad_symbol_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("EXTRACTOR_SYMBOLS", value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(ExtractorSettings)
    assert "EXTRACTOR_SYMBOLS:" in str(excinfo.value)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("EXTRACTOR_EXCHANGE", "mtgox"),
        ("EXTRACTOR_EXCHANGE_URL", "127.0.0.1:18080"),
        ("EXTRACTOR_SINCE", "yesterday"),
        ("EXTRACTOR_POLL_INTERVAL_S", "0"),
    ],
)
def test_other_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(ExtractorSettings)
    assert f"{var}:" in str(excinfo.value)
