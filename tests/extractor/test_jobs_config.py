"""Jobs from YAML or env; `validate-config` names what is wrong."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptoflow_contracts import Dataset
from cryptoflow_extractor.config import ExtractorSettings
from cryptoflow_extractor.jobs import JobsConfigError, load_jobs
from cryptoflow_runtime import ConfigError

GOOD = """
exchanges:
  binance:
    symbols: [BTC/USDT, ETH/USDT]
    datasets:
      ohlcv: {timeframes: [1m, 5m], since: 2024-01-01T00:00:00Z}
      orderbook: {depth: 10}
  bybit:
    url: http://127.0.0.1:9000
    symbols: [BTC/USDT]
    datasets:
      ticker: {poll_interval_s: 2}
      trades: {}
"""


def test_yaml_jobs_load(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD)
    config = load_jobs(path)
    assert set(config.exchanges) == {"binance", "bybit"}
    assert config.exchanges["binance"].datasets.enabled() == [Dataset.OHLCV, Dataset.ORDERBOOK]
    assert config.exchanges["binance"].datasets.orderbook and config.exchanges["binance"].datasets.orderbook.depth == 10


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (GOOD.replace("bybit:", "mtgox:"), "mtgox"),
        (GOOD.replace("[1m, 5m]", "[1m, 7m]"), "7m"),
        (GOOD.replace("BTC/USDT, ETH/USDT", "BTCUSDT"), "BTCUSDT"),
        (GOOD.replace("depth: 10", "depth: 0"), "orderbook.depth"),
        (GOOD.replace("ticker:", "tickers:"), "tickers"),
    ],
)
def test_bad_jobs_file_is_a_clear_error_naming_the_setting(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    with pytest.raises(JobsConfigError, match=named):
        load_jobs(path)
    result = subprocess.run(
        [sys.executable, "-m", "cryptoflow_extractor.main", "validate-config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and named in result.stderr


def test_validate_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD)
    result = subprocess.run(
        [sys.executable, "-m", "cryptoflow_extractor.main", "validate-config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "binance: 2 symbol(s)" in result.stdout and "ok" in result.stdout


ANY_CCXT_EXCHANGE = """
exchanges:
  kraken:
    symbols: [BTC/USD]
    datasets:
      ohlcv: {timeframes: [1m, 1h], since: 2024-01-01T00:00:00Z}
      trades: {}
  okx:
    symbols: [BTC/USDT]
    datasets:
      ohlcv: {timeframes: [1m, 3m]}
      orderbook: {depth: 5}
  coinbase:
    symbols: [BTC/USD, ETH/USD]
    datasets:
      ticker: {}
      ohlcv: {timeframes: [5m]}
"""


def validate_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptoflow_extractor.main", "validate-config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_validate_config_accepts_any_ccxt_exchange(tmp_path: Path) -> None:
    """Issue 11: kraken, okx and coinbase by their ccxt ids, with what ccxt says they offer."""
    path = tmp_path / "jobs.yaml"
    path.write_text(ANY_CCXT_EXCHANGE)
    assert set(load_jobs(path).exchanges) == {"kraken", "okx", "coinbase"}
    result = validate_config(path)
    assert result.returncode == 0, result.stderr
    assert "kraken: 1 symbol(s)" in result.stdout and "coinbase: 2 symbol(s)" in result.stdout


@pytest.mark.parametrize(
    ("text", "named", "cli"),
    [
        # Not a ccxt exchange id at all; the message offers the close ones.
        (ANY_CCXT_EXCHANGE.replace("okx:", "nosuchexchange:"), ["nosuchexchange", "not a ccxt exchange id"], True),
        (ANY_CCXT_EXCHANGE.replace("kraken:", "krakn:"), ["krakn", "did you mean kraken"], False),
        # A timeframe ccxt knows, but kraken's kline endpoint does not take.
        (
            ANY_CCXT_EXCHANGE.replace("[1m, 1h]", "[1m, 3m]"),
            ["exchanges.kraken.datasets.ohlcv", "'kraken'", "'3m'"],
            True,
        ),
        # A dataset the exchange does not have at all (bitflyer serves no candles).
        (
            ANY_CCXT_EXCHANGE.replace("coinbase:", "bitflyer:"),
            ["exchanges.bitflyer.datasets.ohlcv", "'bitflyer' does not offer this dataset", "fetchOHLCV"],
            False,
        ),
    ],
)
def test_validate_config_names_an_exchange_or_timeframe_it_does_not_know(
    tmp_path: Path, text: str, named: list[str], cli: bool
) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    with pytest.raises(JobsConfigError) as raised:
        load_jobs(path)
    for part in named:
        assert part in str(raised.value)
    if cli:  # the command says the same (each run is a few seconds: two cases suffice)
        result = validate_config(path)
        assert result.returncode == 2
        for part in named:
            assert part in result.stderr


def test_env_urls_override_the_file_and_unknown_exchange_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("EXTRACTOR_CONFIG", str(path))
    monkeypatch.setenv("EXTRACTOR_EXCHANGE_URLS", '{"binance": "http://127.0.0.1:1234"}')
    assert ExtractorSettings().jobs().exchanges["binance"].url == "http://127.0.0.1:1234"
    monkeypatch.setenv("EXTRACTOR_EXCHANGE_URLS", '{"gate": "http://127.0.0.1:1234"}')
    with pytest.raises(ConfigError, match="EXTRACTOR_EXCHANGE_URLS"):
        ExtractorSettings().jobs()


def test_env_only_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACTOR_DATASETS", "ohlcv,trades")
    monkeypatch.setenv("EXTRACTOR_SYMBOLS", "BTC/USDT")
    config = ExtractorSettings().jobs()
    assert config.exchanges["binance"].datasets.enabled() == [Dataset.OHLCV, Dataset.TRADES]


def test_aggregators_alone_are_a_valid_jobs_file_and_no_source_at_all_is_not(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text("aggregators:\n  coingecko: {top: 300, poll_interval_s: 60}\n")
    jobs = load_jobs(path)
    assert jobs.exchanges == {} and jobs.aggregators["coingecko"].top == 300
    path.write_text("aggregators:\n  coinmarketcap: {}\n")
    with pytest.raises(JobsConfigError, match="coinmarketcap"):
        load_jobs(path)
    path.write_text("exchanges: {}\n")
    with pytest.raises(JobsConfigError, match="at least one exchange or aggregator"):
        load_jobs(path)
    path.write_text("aggregators:\n  coingecko: {api_key: secret}\n")
    with pytest.raises(JobsConfigError, match="api_key"):
        load_jobs(path)  # keys come from the environment, never from this file


def test_aggregator_candles_load_and_their_mistakes_are_named(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "aggregators:\n"
        "  coingecko: {candles: [bitcoin, ethereum], candles_since: 2024-05-01T00:00:00}\n"
        "  coinpaprika: {candles: [btc-bitcoin]}\n"
    )
    jobs = load_jobs(path)
    coingecko, coinpaprika = jobs.aggregators["coingecko"], jobs.aggregators["coinpaprika"]
    assert coingecko.candles == ["bitcoin", "ethereum"] and coinpaprika.candles == ["btc-bitcoin"]
    assert coingecko.candles_since == datetime(2024, 5, 1, tzinfo=UTC)  # a time without a zone is UTC
    assert coingecko.history == []  # candles without price history, and the other way round
    for text, named in [
        ("aggregators:\n  coingecko: {candles: [Bitcoin]}\n", "'Bitcoin' is not a provider coin id"),
        ("aggregators:\n  coingecko: {candles: bitcoin}\n", "candles"),
        ("aggregators:\n  coinpaprika: {candles: [btc-bitcoin], candles_since: someday}\n", "candles_since"),
    ]:
        path.write_text(text)
        with pytest.raises(JobsConfigError, match=named):
            load_jobs(path)


ARCHIVE_TRADES = """
exchanges:
  binance:
    symbols: [BTC/USDT]
    datasets:
      trades: {source: binance-archive, since: 2024-01-01T00:00:00Z}
      agg_trades: {source: binance-archive, since: 2024-01-01T00:00:00Z, archive_market: futures/um}
"""


def test_trade_archive_jobs_load_and_their_mistakes_are_named(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(ARCHIVE_TRADES)
    datasets = load_jobs(path).exchanges["binance"].datasets
    assert datasets.enabled() == [Dataset.TRADES, Dataset.AGG_TRADES]
    assert datasets.trades is not None and datasets.trades.source == "binance-archive"
    assert datasets.agg_trades is not None and datasets.agg_trades.archive_market == "futures/um"
    for text, named in [
        # The archives start somewhere: `since` is required with them.
        (ARCHIVE_TRADES.replace("{source: binance-archive, since: 2024-01-01T00:00:00Z}", "{source: binance-archive}"),
         "`since` is required"),
        # aggTrades come from the archives only.
        (ARCHIVE_TRADES.replace("agg_trades: {source: binance-archive", "agg_trades: {source: rest"), "agg_trades"),
        # Only Binance publishes bulk archives.
        (ARCHIVE_TRADES.replace("binance:", "bybit:"), "has no Binance bulk archives"),
    ]:  # fmt: skip
        path.write_text(text)
        with pytest.raises(JobsConfigError, match=named):
            load_jobs(path)


def test_agg_trades_from_env_read_the_archives_from_since(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACTOR_DATASETS", "agg_trades")
    monkeypatch.setenv("EXTRACTOR_SYMBOLS", "BTC/USDT")
    monkeypatch.setenv("EXTRACTOR_SINCE", "2024-02-01T00:00:00Z")
    spec = ExtractorSettings().jobs().exchanges["binance"].datasets.agg_trades
    assert spec is not None and spec.source == "binance-archive"
    assert spec.since.isoformat() == "2024-02-01T00:00:00+00:00"
