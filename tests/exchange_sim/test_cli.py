"""The `cryptoflow-exchange-sim` process: finds a port, publishes its URL, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from .binance_client import FIXTURES, get_json, read_fixture_rows
from .clients import http_get


async def _start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cryptoflow_exchange_sim",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _wait_for_file(path: Path, process: asyncio.subprocess.Process) -> str:
    for _ in range(200):
        if path.exists():
            return path.read_text()
        assert process.returncode is None, await process.stderr.read() if process.stderr else b""
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


async def _stop(process: asyncio.subprocess.Process) -> list[dict[str, object]]:
    process.send_signal(signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().splitlines()]


async def test_csv_mode_with_a_malformed_candle(tmp_path: Path) -> None:
    url_file = tmp_path / "sim.url"
    first_open = read_fixture_rows("XRPETH-1m.csv")[0][0]
    process = await _start(
        "--port", "0", "--data", str(FIXTURES), "--url-file", str(url_file),
        "--malformed", f"XRP/ETH:{first_open}:negative_volume",
    )  # fmt: skip
    try:
        base_url = await _wait_for_file(url_file, process)
        _, klines = await get_json(
            base_url, "/api/v3/klines", {"symbol": "XRPETH", "interval": "1m", "startTime": "0", "limit": "2"}
        )
    finally:
        events = await _stop(process)

    assert base_url.startswith("http://127.0.0.1:")
    assert float(klines[0][5]) < 0
    assert float(klines[1][5]) > 0
    assert events[0] == {"event": "exchange_sim.listening", "url": base_url, "pid": process.pid}
    assert events[-1]["event"] == "exchange_sim.stopped"
    assert [path.name for path in tmp_path.iterdir()] == ["sim.url"]


async def test_random_walk_mode(tmp_path: Path) -> None:
    url_file = tmp_path / "sim.url"
    process = await _start(
        "--symbols", "SOL/USDT,BNB/BTC", "--seed", "7",
        "--start", "2024-03-01T00:00:00Z", "--end", "2024-03-02T00:00:00Z", "--url-file", str(url_file),
    )  # fmt: skip
    try:
        base_url = await _wait_for_file(url_file, process)
        _, info = await get_json(base_url, "/api/v3/exchangeInfo")
        _, days = await get_json(base_url, "/api/v3/klines", {"symbol": "SOLUSDT", "interval": "1d"})
    finally:
        await _stop(process)

    assert [symbol["symbol"] for symbol in info["symbols"]] == ["SOLUSDT", "BNBBTC"]
    assert [day[0] for day in days] == [1709251200000]


async def test_bad_arguments_exit_with_usage_error(tmp_path: Path) -> None:
    process = await _start("--data", str(tmp_path / "missing"))
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)

    assert process.returncode == 2
    assert b"does not exist" in stderr


async def test_several_exchanges_recorded_trades_and_a_fault_plan(tmp_path: Path) -> None:
    url_file = tmp_path / "sim.url"
    plan = tmp_path / "faults.json"
    plan.write_text('{"faults": [{"kind": "server_error", "endpoint": "gate.trades", "count": 1}]}')
    trades_dir = FIXTURES.parents[1] / "trades" / "binance"
    process = await _start(
        "--exchange", "bybit,gate", "--data", str(FIXTURES), "--trades-data", str(trades_dir),
        "--faults", str(plan), "--fault", "rate_limit:bybit.trades:status=403", "--url-file", str(url_file),
    )  # fmt: skip
    try:
        base_url = await _wait_for_file(url_file, process)
        gate_query = {"currency_pair": "XRP_ETH", "limit": "2"}
        bybit_query = {"category": "spot", "symbol": "XRPETH", "limit": "2"}
        first_gate, _ = await http_get(base_url, "/api/v4/spot/trades", gate_query)
        second_gate, gate_trades = await http_get(base_url, "/api/v4/spot/trades", gate_query)
        bybit_status, _ = await http_get(base_url, "/v5/market/recent-trade", bybit_query)
        _, bybit_trades = await http_get(base_url, "/v5/market/recent-trade", bybit_query)
        binance_status, _ = await http_get(base_url, "/api/v3/ping")
        _, stats = await http_get(base_url, "/_sim/stats")
    finally:
        await _stop(process)

    assert (first_gate, second_gate, bybit_status) == (503, 200, 403)
    assert [trade["id"] for trade in gate_trades] == ["13532283", "13532282"]
    assert [trade["execId"] for trade in bybit_trades["result"]["list"]] == ["13532283", "13532282"]
    assert binance_status == 404  # not served: --exchange bybit,gate
    assert stats["faults_served"] == {"gate.trades": {"server_error": 1}, "bybit.trades": {"rate_limit": 1}}
    assert [fault["kind"] for fault in stats["faults"]] == ["server_error", "rate_limit"]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--exchange", "kraken"], b"unknown exchange kraken"),
        (["--trades-data", "/tmp"], b"--trades-data needs --data"),
        (["--fault", "explode:ohlcv"], b"unknown fault kind"),
        (["--faults", "/nonexistent/plan.json"], b"cannot read fault plan"),
    ],
)
async def test_bad_options_exit_with_usage_error(args: list[str], complaint: bytes) -> None:
    process = await _start(*args)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)

    assert process.returncode == 2
    assert complaint in stderr
