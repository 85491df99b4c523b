"""Loader settings: alert rules and retention from the environment; bad values name the setting."""

from __future__ import annotations

import pytest
from cryptoflow_runtime import ConfigError, load_settings
from cryptoflow_warehouse_loader.config import DEFAULT_ALERT_RULES, WarehouseLoaderSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WAREHOUSE_LOADER_ALERT_RULES", "WAREHOUSE_LOADER_RETENTION_DAYS", "WAREHOUSE_LOADER_MIGRATE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(WarehouseLoaderSettings)
    assert settings.alert_rules == DEFAULT_ALERT_RULES
    assert settings.retention_days is None  # retention is off unless asked for
    assert settings.retention_table_list == [
        "ohlcv",
        "tickers",
        "order_books",
        "trades",
        "indicators",
        "market_snapshots",
        "aggregator_prices",
        "agg_trades",
        "aggregator_candles",
    ]
    assert settings.migrate is True


def test_rules_and_retention_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "WAREHOUSE_LOADER_ALERT_RULES",
        '[{"name": "btc-5pct", "kind": "price_move", "threshold": 5, "window": "1h"},'
        ' {"name": "trades-quiet", "kind": "staleness", "threshold": 120, "tables": ["trades"]}]',
    )
    monkeypatch.setenv("WAREHOUSE_LOADER_RETENTION_DAYS", "90")
    monkeypatch.setenv("WAREHOUSE_LOADER_RETENTION_TABLES", "trades,order_books")
    settings = load_settings(WarehouseLoaderSettings)
    assert [(r.name, r.kind, r.threshold, r.window, r.tables) for r in settings.alert_rules] == [
        ("btc-5pct", "price_move", 5.0, "1h", ["ohlcv"]),
        ("trades-quiet", "staleness", 120.0, "24h", ["trades"]),
    ]
    assert (settings.retention_days, settings.retention_table_list) == (90, ["trades", "order_books"])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WAREHOUSE_LOADER_ALERT_RULES", '[{"name": "Bad Name", "kind": "spread", "threshold": 1}]'),
        ("WAREHOUSE_LOADER_ALERT_RULES", '[{"name": "x", "kind": "moon", "threshold": 1}]'),
        ("WAREHOUSE_LOADER_ALERT_RULES", '[{"name": "x", "kind": "staleness", "threshold": 1, "tables": ["nope"]}]'),
        ("WAREHOUSE_LOADER_RETENTION_DAYS", "0"),
        ("WAREHOUSE_LOADER_RETENTION_TABLES", "ohlcv,candles"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        load_settings(WarehouseLoaderSettings)
    assert name in str(error.value)
