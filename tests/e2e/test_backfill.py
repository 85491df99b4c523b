"""`cryptoflow-extractor backfill`: kill -9 mid-way, run it again: complete, no duplicate, no gap."""

from __future__ import annotations

import subprocess
import sys

from .harness import Pipeline
from .test_end_to_end import MINUTE, SYMBOLS, T0, N, assert_ohlcv_equals_simulator, start_random_walk


def backfill(pipe: Pipeline) -> subprocess.Popen[bytes]:
    env = pipe.env("extractor")
    # Small pages and a slow pace stretch the run so the kill lands mid-way.
    env.update({"EXTRACTOR_PAGE_LIMIT": "20", "EXTRACTOR_RATE_LIMIT_MS": "60"})
    log = open(pipe.workdir / "backfill.log", "ab")
    return subprocess.Popen(
        [
            sys.executable, "-m", "cryptoflow_extractor.main", "backfill",
            "--symbols", ",".join(SYMBOLS), "--timeframe", "1m",
            "--from", "2024-01-01T00:00:00+00:00", "--to", str(_iso(T0 + (N - 1) * MINUTE)),
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


async def test_backfill_killed_and_rerun_completes_without_duplicates_or_gaps(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    start_random_walk(pipe)
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    first = backfill(pipe)

    async def started() -> bool:
        return await pipe.ohlcv_count() > 0

    await pipe.wait_for("the backfill's first rows", started, interval=0.05)
    first.kill()
    first.wait(10)
    assert await pipe.ohlcv_count() < 2 * N, "the backfill finished before the kill; the test proves nothing"

    second = backfill(pipe)
    assert second.wait(120) == 0, (pipe.workdir / "backfill.log").read_text()[-3000:]
    log = (pipe.workdir / "backfill.log").read_text()
    assert f"{2 * N}/{2 * N} candles" in log

    async def complete() -> bool:
        return await pipe.ohlcv_count() == 2 * N

    await pipe.wait_for("every backfilled candle in ohlcv", complete)
    await assert_ohlcv_equals_simulator(pipe)
