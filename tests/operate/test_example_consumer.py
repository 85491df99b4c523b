"""examples/silver_consumer.py, run as a subprocess, replays exactly the BatchReady events stored after --since."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import polars as pl
import pytest
from cryptoflow_contracts import BatchReady, Dataset, Stream
from cryptoflow_runtime import ensure_streams, msg_id_headers
from nats.js import JetStreamContext

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "silver_consumer.py"


@pytest.fixture
async def js(fresh_nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(fresh_nats_url)
    js = nc.jetstream()
    await ensure_streams(js, {})
    yield js
    await nc.close()


def silver_file(lake: Path, key: str, first_ts: int) -> bytes:
    frame = pl.DataFrame(
        {
            "exchange": ["binance"] * 3,
            "symbol": ["BTC/USDT"] * 3,
            "ts": [first_ts + i * 60_000 for i in range(3)],
            "close": [42_000.0 + i for i in range(3)],
        }
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    (lake / key).parent.mkdir(parents=True, exist_ok=True)
    (lake / key).write_bytes(buffer.getvalue())
    return buffer.getvalue()


async def publish(
    js: JetStreamContext, lake: Path, n: int, dataset: Dataset = Dataset.OHLCV, market: str = "BTC-USDT"
) -> BatchReady:
    first_ts = 1_704_067_200_000 + n * 180_000
    key = f"silver/{dataset.value}/exchange=binance/symbol={market}/date=2024-01-01/{first_ts}-{n:04d}.parquet"
    silver_file(lake, key, first_ts)
    batch = BatchReady(
        dataset=dataset,
        table=dataset.value,
        exchange="binance",
        lake_url=f"file://{lake}",
        key=key,
        sha256=f"{n:064x}",
        rows=3,
        quarantined_rows=0,
        min_ts=first_ts,
        max_ts=first_ts + 120_000,
        source_key=key.replace("silver/", "bronze/"),
        source_event_id=f"ObjectWritten-{n}",
        quality_score=1.0,
    )
    await js.publish(batch.subject(), batch.to_json(), headers=msg_id_headers(batch.event_id), stream="SILVER")
    return batch


def run_example(nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--nats-url", nats_url, "--exit-when-caught-up", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_since_replays_exactly_the_events_stored_after_it(
    fresh_nats_url: str, js: JetStreamContext, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    before = [await publish(js, lake, n) for n in range(3)]
    await asyncio.sleep(0.5)
    since = datetime.now(UTC)
    await asyncio.sleep(0.5)
    after = [await publish(js, lake, n) for n in range(3, 6)]
    # Another dataset in the same stream: not under cryptoflow.silver.ohlcv.>
    await publish(js, lake, 6, Dataset.TRADES)
    assert (await js.stream_info(Stream.SILVER.value)).state.messages == 7

    stamp = since.isoformat().replace("+00:00", "Z")
    done = await asyncio.to_thread(run_example, fresh_nats_url, "--since", stamp, "--format", "json", "--rows", "2")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["batch"]["event_id"] for line in lines] == [b.event_id for b in after]
    assert not {b.event_id for b in before} & {line["batch"]["event_id"] for line in lines}
    for line, batch in zip(lines, after, strict=True):
        assert line["subject"] == "cryptoflow.silver.ohlcv.binance.BTC-USDT"
        assert BatchReady.model_validate(line["batch"]) == batch
        assert parse(line["stored_at"]) >= since
        # --rows: the batch's Parquet, read from the file:// lake named in the event.
        assert [row["ts"] for row in line["rows"]] == [batch.min_ts, batch.min_ts + 60_000]  # type: ignore[operator]


async def test_text_output_and_nothing_after_the_last_event(
    fresh_nats_url: str, js: JetStreamContext, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    batches = [await publish(js, lake, n) for n in range(2)]

    everything = await asyncio.to_thread(run_example, fresh_nats_url, "--from-start")
    assert everything.returncode == 0, everything.stderr
    for batch in batches:
        assert batch.event_id in everything.stdout
        assert f"{batch.lake_url}/{batch.key}" in everything.stdout

    await asyncio.sleep(0.3)
    later = datetime.now(UTC).isoformat()
    nothing = await asyncio.to_thread(run_example, fresh_nats_url, "--since", later)
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout == ""


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_rows_are_read_from_an_s3_lake_too(
    fresh_nats_url: str,
    js: JetStreamContext,
    tmp_path: Path,
    s3_endpoint_url: str,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cryptoflow_runtime.lake import open_lake

    # moto's credentials, for the lake here and for the example (it inherits the environment).
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, os.environ.get(name, value))
    monkeypatch.setenv("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))

    staged = tmp_path / "staged"
    batch = await publish(js, staged, 0)
    lake = await open_lake(f"s3://{s3_bucket}", s3_endpoint_url)
    try:
        await lake.put(batch.key, (staged / batch.key).read_bytes())
    finally:
        await lake.close()
    s3_batch = batch.model_copy(update={"lake_url": f"s3://{s3_bucket}", "event_id": "BatchReady-s3"})
    await js.purge_stream(Stream.SILVER.value)
    await js.publish(s3_batch.subject(), s3_batch.to_json(), headers=msg_id_headers("BatchReady-s3"))

    done = await asyncio.to_thread(
        run_example,
        fresh_nats_url,
        "--from-start",
        "--format",
        "json",
        "--rows",
        "3",
        "--s3-endpoint-url",
        s3_endpoint_url,
    )
    assert done.returncode == 0, done.stderr
    [line] = [json.loads(line) for line in done.stdout.splitlines()]
    assert line["batch"]["lake_url"] == f"s3://{s3_bucket}"
    assert [row["close"] for row in line["rows"]] == [42_000.0, 42_001.0, 42_002.0]


async def test_a_consumer_of_one_market_receives_only_that_markets_batches(
    fresh_nats_url: str, js: JetStreamContext, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    btc = [await publish(js, lake, n, market="BTC-USDT") for n in range(2)]
    eth = [await publish(js, lake, n, market="ETH-USDT") for n in range(2, 4)]
    trades = await publish(js, lake, 4, Dataset.TRADES, market="BTC-USDT")
    assert (await js.stream_info(Stream.SILVER.value)).state.messages == 5

    subject = "cryptoflow.silver.ohlcv.binance.BTC-USDT"
    done = await asyncio.to_thread(
        run_example, fresh_nats_url, "--subject", subject, "--from-start", "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["batch"]["event_id"] for line in lines] == [b.event_id for b in btc]
    assert {line["subject"] for line in lines} == {subject}
    assert not {b.event_id for b in [*eth, trades]} & {line["batch"]["event_id"] for line in lines}
