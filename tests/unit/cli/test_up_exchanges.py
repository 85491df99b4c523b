"""`cryptoflow up` names any ccxt exchange, and says at once when the simulator cannot be it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptoflow_cli.up import UpOptions, run_up


@pytest.mark.parametrize("exchanges", ["kraken", "binance,okx"])
async def test_up_without_live_refuses_an_exchange_the_simulator_does_not_speak(
    tmp_path: Path, exchanges: str, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert await run_up(UpOptions(home=home, exchanges=exchanges)) == 2
    out = capsys.readouterr().out
    assert "the exchange simulator speaks binance, bybit, gate, not" in out and "--live" in out
    assert exchanges.split(",")[-1] in out
    assert not home.exists()  # refused before anything started


async def test_up_reads_the_exchanges_of_a_jobs_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "jobs.yaml"
    config.write_text("exchanges:\n  kraken:\n    symbols: [BTC/USD]\n    datasets: {ticker: {}}\n")
    assert await run_up(UpOptions(home=tmp_path / "home", config=config)) == 2
    assert "not kraken" in capsys.readouterr().out


def test_up_lists_the_aggregators_asked_for_on_the_simulator_in_a_valid_jobs_file(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from cryptoflow_cli.up import jobs_yaml
    from cryptoflow_extractor.jobs import load_jobs

    since = datetime(2024, 1, 1, tzinfo=UTC)
    options = UpOptions(
        home=tmp_path, symbols="BTC/USDT,ETH/USDT,PEPE/USDT", exchanges="binance", datasets="ohlcv",
        aggregators="coingecko,coinpaprika",
    )  # fmt: skip
    path = tmp_path / "jobs.yaml"
    path.write_text(jobs_yaml(options, since, "http://127.0.0.1:9001"))
    jobs = load_jobs(path)
    assert set(jobs.aggregators) == {"coingecko", "coinpaprika"}
    assert {spec.url for spec in jobs.aggregators.values()} == {"http://127.0.0.1:9001"}
    # The markets' base coins get their price history and candles too, by the ids the simulator lists.
    gecko, paprika = jobs.aggregators["coingecko"], jobs.aggregators["coinpaprika"]
    assert gecko.history == gecko.candles == ["bitcoin", "ethereum", "pepe"]
    assert paprika.history == paprika.candles == ["btc-bitcoin", "eth-ethereum", "pepe-pepe"]
    assert gecko.history_since == gecko.candles_since == since
    live = UpOptions(
        home=tmp_path, symbols="BTC/USDT,PEPE/USDT", exchanges="binance", datasets="ohlcv",
        aggregators="coinpaprika", live=True,
    )  # fmt: skip
    path.write_text(jobs_yaml(live, since, None))
    listing = load_jobs(path).aggregators["coinpaprika"]
    assert listing.url is None  # the provider's own API
    assert listing.candles == ["btc-bitcoin"]  # a real provider's id is not guessed from a ticker


async def test_up_refuses_an_unknown_aggregator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_up(UpOptions(home=tmp_path / "home", aggregators="coinmarketcap")) == 2
    assert "--aggregators: unknown coinmarketcap (known: coingecko, coinpaprika)" in capsys.readouterr().out
    assert not (tmp_path / "home").exists()


def test_up_jobs_are_valid_for_every_dataset_and_take_trades_from_the_archives_when_asked(tmp_path: Path) -> None:
    """Every dataset by default (an archive-only one, agg_trades, only with --source binance-archive)."""
    from datetime import UTC, datetime

    from cryptoflow_cli.up import jobs_yaml
    from cryptoflow_extractor.jobs import load_jobs

    path = tmp_path / "jobs.yaml"
    since = datetime(2024, 1, 1, tzinfo=UTC)
    path.write_text(jobs_yaml(UpOptions(home=tmp_path), since, "http://127.0.0.1:9001"))
    jobs = load_jobs(path)
    assert all(spec.datasets.agg_trades is None for spec in jobs.exchanges.values())
    archived = UpOptions(home=tmp_path, source="binance-archive")
    path.write_text(jobs_yaml(archived, since, "http://127.0.0.1:9001"))
    binance = load_jobs(path).exchanges["binance"].datasets
    assert binance.ohlcv is not None and binance.ohlcv.source == "binance-archive"
    assert binance.trades is not None and binance.trades.source == "binance-archive" and binance.trades.since == since
    assert binance.agg_trades is not None and binance.agg_trades.since == since
    assert load_jobs(path).exchanges["bybit"].datasets.trades.source == "rest"  # type: ignore[union-attr]
