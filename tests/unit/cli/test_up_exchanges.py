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
