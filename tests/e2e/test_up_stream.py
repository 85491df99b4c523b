"""`cryptoflow up --mode stream`: live rows within seconds, and `status` shows each stream's health."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from .harness import S3_ENV
from .test_cryptoflow_up import stop_up, wait_for_stack

EXCHANGES = ("binance", "bybit", "gate")


async def test_up_in_stream_mode_shows_live_rows_within_seconds_and_stream_health(tmp_path: Path) -> None:
    home, log = tmp_path / "home", tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LAKE_URL", "S3_ENDPOINT_URL", "NATS_URL")}
    env = {**env, **S3_ENV, "CRYPTOFLOW_HOME": str(home)}
    args = ["up", "--datasets", "trades,orderbook", "--mode", "stream", "--symbols", "BTC/USDT"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cryptoflow_cli.main", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        stack = wait_for_stack(home, proc, log)
        up_at = time.monotonic()
        conn = await asyncpg.connect(str(stack["reader_database_url"]))
        try:
            seen: dict[str, int] = {}
            while time.monotonic() - up_at < 30:
                seen = {}
                for table in ("trades", "order_books"):
                    try:
                        seen[table] = int(await conn.fetchval(f"SELECT count(DISTINCT exchange) FROM {table}"))
                    except asyncpg.UndefinedTableError:
                        seen[table] = 0
                if all(count == len(EXCHANGES) for count in seen.values()):
                    break
                time.sleep(0.5)
            waited = time.monotonic() - up_at
            assert all(count == len(EXCHANGES) for count in seen.values()), (seen, log.read_text()[-5000:])
            # Newest trade rows are seconds old: they are streamed, not polled once a minute.
            age = await conn.fetchval("SELECT extract(epoch FROM now() - max(ts)) FROM trades")
            assert age < 10, f"newest trade is {age:.1f}s old"
        finally:
            await conn.close()
        status = subprocess.run(
            [sys.executable, "-m", "cryptoflow_cli.main", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        streams = json.loads(status.stdout)["extractor_streams"]
        for exchange in EXCHANGES:
            for dataset in ("trades", "orderbook"):
                stream = streams[f"{exchange} BTC/USDT {dataset}"]
                assert stream["messages_per_s"] > 0, (exchange, dataset, stream)
                assert stream["last_message_age_s"] < 5, (exchange, dataset, stream)
                assert stream["resyncs"] >= 0
        text = subprocess.run(
            [sys.executable, "-m", "cryptoflow_cli.main", "status"], env=env, capture_output=True, text=True, timeout=60
        ).stdout
        assert "extractor streams (messages/s, last message age, book resyncs):" in text
        print(f"live rows from every exchange {waited:.1f}s after the stack was up")
    finally:
        stop_up(proc, log)
