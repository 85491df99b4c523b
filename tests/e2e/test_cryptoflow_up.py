"""`cryptoflow up` runs the whole stack, writes stack.json, stops cleanly, and resumes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import nats
import orjson
import psutil
import pytest

from .harness import S3_ENV


def start_up(home: Path, log: Path, since: datetime) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LAKE_URL", "S3_ENDPOINT_URL", "NATS_URL")}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cryptoflow_cli.main", "up", "--since", since.isoformat(), "--poll-interval", "1"],
            env={**env, **S3_ENV, "CRYPTOFLOW_HOME": str(home)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for_stack(home: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    path = home / "stack.json"
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        if proc.poll() is not None:
            raise AssertionError(f"cryptoflow up exited with {proc.returncode}:\n{log.read_text()[-5000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no stack.json after {timeout}s:\n{log.read_text()[-5000:]}")


def stop_up(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"cryptoflow up did not stop on SIGTERM:\n{log.read_text()[-5000:]}") from None
    assert code == 0, log.read_text()[-5000:]


async def rows_when_caught_up(database_url: str, expected_min: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(database_url)
            try:
                count = await conn.fetchval("SELECT count(*) FROM ohlcv")
            finally:
                await conn.close()
        except (asyncpg.UndefinedTableError, OSError):
            count = 0
        if count >= expected_min:
            return int(count)
        await asyncio.sleep(0.3)
    raise AssertionError(f"only {count} rows in ohlcv after {timeout}s, expected at least {expected_min}")


async def raw_snapshots(nats_url: str) -> list[dict[str, object]]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("RAW")
        return [orjson.loads((await js.get_msg("RAW", seq)).data) for seq in range(1, info.state.last_seq + 1)]
    finally:
        await nc.close()


@pytest.mark.e2e
async def test_cryptoflow_up_runs_everything_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "up.log"
    since = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
    # Three exchanges, two symbols, one candle a minute each, from `since` to the last closed minute.
    closed_minutes = 3 * int((datetime.now(UTC) - since).total_seconds() // 60) - 3

    proc = start_up(home, log, since)
    try:
        stack = wait_for_stack(home, proc, log)
        assert {"nats_url", "database_url", "lake_url", "exchange_sim_url"} <= stack.keys()
        # It holds passwords (decision 0036): its owner's only, like the credentials file.
        assert stat.S_IMODE((home / "stack.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((home / "credentials.json").stat().st_mode) == 0o600
        pids = [int(s["pid"]) for s in stack["services"].values()]  # type: ignore[attr-defined]
        first_rows = await rows_when_caught_up(str(stack["database_url"]), 2 * closed_minutes)

        status = subprocess.run(
            [sys.executable, "-m", "cryptoflow_cli.main", "status", "--json"],
            env={**os.environ, **S3_ENV, "CRYPTOFLOW_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["warehouse"]["ohlcv_rows"] >= first_rows
        assert report["streams"]["RAW"]["messages"] > 0
        assert report["lake"]["bronze"] > 0 and report["lake"]["silver"] > 0
        # Every durable consumer of every registered stage, the loader's side consumers included.
        assert set(report["consumers"]) == {
            "lake-writer",
            "transformer",
            "warehouse-loader",
            "warehouse-loader-gaps",
            "warehouse-loader-runs",
            "warehouse-loader-quarantine",
        }
    finally:
        stop_up(proc, log)

    assert not (home / "stack.json").exists()
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]

    # A second `up` on the same home resumes: same data, the extractor continues from its checkpoint.
    restarted_at = datetime.now(UTC)
    proc = start_up(home, log, since)
    try:
        stack = wait_for_stack(home, proc, log)
        await rows_when_caught_up(str(stack["database_url"]), first_rows)
        await asyncio.sleep(3)
        conn = await asyncpg.connect(str(stack["database_url"]))
        try:
            duplicates = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM ohlcv GROUP BY exchange, symbol, timeframe, ts HAVING count(*) > 1) d"
            )
        finally:
            await conn.close()
        assert duplicates == 0
        snapshots = await raw_snapshots(str(stack["nats_url"]))
        first_run = [s for s in snapshots if datetime.fromisoformat(str(s["fetched_at"])) < restarted_at]
        second_run = [s for s in snapshots if datetime.fromisoformat(str(s["fetched_at"])) >= restarted_at]
        assert first_run
        series = {(s["exchange"], s["symbol"]) for s in first_run if s["dataset"] == "ohlcv"}
        assert {exchange for exchange, _ in series} == {"binance", "bybit", "gate"}
        assert {s["dataset"] for s in first_run} == {"ohlcv", "ticker", "orderbook", "trades"}
        for exchange, symbol in series:
            mine = [s for s in snapshots if (s["exchange"], s["symbol"], s["dataset"]) == (exchange, symbol, "ohlcv")]
            before = [s for s in mine if s in first_run]
            last_before = max(int(str(s["last_ts"])) for s in before)
            resumed = [int(str(s["first_ts"])) for s in mine if s in second_run]
            assert all(ts > last_before for ts in resumed), f"{exchange} {symbol}: the second run fetched history again"
    finally:
        stop_up(proc, log)

    # No password of the stack in anything it printed (every service's log lines) or in the servers' logs.
    credentials = json.loads((home / "credentials.json").read_text())
    passwords = [*credentials["nats"].values(), *credentials["postgres"].values()]
    for text in (log.read_text(), (home / "nats" / "nats-server.log").read_text()):
        assert not [p for p in passwords if p in text], "a password was logged"
