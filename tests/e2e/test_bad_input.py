"""Bad input gets a clear error and a dead letter; good data keeps flowing."""

from __future__ import annotations

import io
import subprocess
import sys

import aiohttp
import orjson
import polars as pl
import pytest
from cryptoflow_cli.processes import SERVICE_MODULES
from cryptoflow_runtime.lake import open_lake

from .harness import Pipeline
from .test_end_to_end import MINUTE, T0, N, assert_ohlcv_equals_simulator, start_random_walk

BROKEN_TS = T0 + 42 * MINUTE


async def test_malformed_candle_is_quarantined_with_reason_and_the_rest_flows(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    start_random_walk(pipe, ["--malformed", f"BTCUSDT:{BROKEN_TS}:high_below_low"])
    procs = pipe.start_all()

    async def rest_loaded() -> bool:
        return await pipe.ohlcv_count() == 2 * N - 1

    await pipe.wait_for(f"{2 * N - 1} good rows", rest_loaded)
    await assert_ohlcv_equals_simulator(pipe, skip={("BTC/USDT", BROKEN_TS)})
    assert (
        await pipe.fetchval(
            "SELECT count(*) FROM ohlcv WHERE symbol = 'BTC/USDT' AND ts = to_timestamp($1)", BROKEN_TS / 1000
        )
        == 0
    )

    lake = await open_lake(pipe.lake_url)
    quarantined = pl.concat([pl.read_parquet(io.BytesIO(await lake.get(k))) for k in await lake.list("quarantine/")])
    assert quarantined.height == 1
    row = quarantined.row(0, named=True)
    assert row["symbol"] == "BTC/USDT"
    assert int(row["ts"].timestamp() * 1000) == BROKEN_TS
    assert row["reason"] == "high_below_open_close"

    letters = [orjson.loads(m.data) for m in await pipe.stream_messages("DLQ")]
    assert [(d["stage"], d["dataset"], d["error_type"]) for d in letters] == [
        ("transformer", "ohlcv", "RowsQuarantined")
    ]
    assert "high_below_open_close" in letters[0]["reason"]

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{procs['transformer'].http_port}/metrics") as response:
            metrics = await response.text()
    assert (
        'cryptoflow_transformer_quarantined_rows_total{dataset="ohlcv",reason="high_below_open_close"} 1.0' in metrics
    )


@pytest.mark.parametrize(
    ("service", "env", "named"),
    [
        ("extractor", {"NATS_URL": "http://localhost:4222"}, "NATS_URL"),
        ("extractor", {"EXTRACTOR_EXCHANGE_URL": "ftp://sim"}, "EXTRACTOR_EXCHANGE_URL"),
        ("extractor", {"EXTRACTOR_SYMBOLS": "BTCUSDT"}, "EXTRACTOR_SYMBOLS"),
        ("extractor", {"EXTRACTOR_TIMEFRAMES": "7m"}, "EXTRACTOR_TIMEFRAMES"),
        ("extractor", {"EXTRACTOR_EXCHANGE": "mtgox"}, "EXTRACTOR_EXCHANGE"),
        ("lake-writer", {"LAKE_URL": "ftp://lake"}, "LAKE_URL"),
        ("lake-writer", {"LAKE_WRITER_BATCH_SIZE": "zero"}, "LAKE_WRITER_BATCH_SIZE"),
        ("transformer", {"S3_ENDPOINT_URL": "localhost:9000"}, "S3_ENDPOINT_URL"),
        ("warehouse-loader", {"DATABASE_URL": "mysql://db"}, "DATABASE_URL"),
    ],
)
def test_wrong_setting_fails_fast_naming_it(service: str, env: dict[str, str], named: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", SERVICE_MODULES[service]],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert named in result.stderr


async def test_unknown_symbol_fails_fast_naming_it(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    start_random_walk(pipe)
    proc = pipe.start("extractor", env={"EXTRACTOR_SYMBOLS": "BTC/USDT,DOGE/EUR"})
    assert proc.popen.wait(60) == 2
    log = proc.log()
    assert "EXTRACTOR_SYMBOLS" in log and "DOGE/EUR" in log
