"""`cryptoflow-extractor backfill`: kill -9 mid-way, run it again: complete, no duplicate, no gap."""

from __future__ import annotations

import subprocess
import sys

import nats
from cryptoflow_contracts import Stream
from nats.js.errors import NotFoundError

from .harness import Pipeline
from .test_end_to_end import MINUTE, SYMBOLS, T0, N, assert_ohlcv_equals_simulator, start_random_walk

PAGE = 20


def backfill(pipe: Pipeline) -> subprocess.Popen[bytes]:
    env = pipe.env("extractor")
    # Small pages and a slow pace stretch the run so the kill lands mid-way.
    env.update({"EXTRACTOR_PAGE_LIMIT": str(PAGE), "EXTRACTOR_RATE_LIMIT_MS": "60"})
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

    async def raw_pages() -> int:
        nc = await nats.connect(pipe.nats_url)
        try:
            return (await nc.jetstream().stream_info(Stream.RAW.value)).state.messages
        except NotFoundError:
            return 0
        finally:
            await nc.close()

    async def started() -> bool:
        # Its first pages in RAW, not in the warehouse: under load the stages downstream may
        # show the first rows only after the whole backfill was published.
        return await raw_pages() >= 2

    await pipe.wait_for("the backfill's first pages", started, interval=0.02)
    first.kill()
    first.wait(10)
    pages = len(SYMBOLS) * N // PAGE
    assert await raw_pages() < pages, "the backfill finished before the kill; the test proves nothing"

    second = backfill(pipe)
    assert second.wait(120) == 0, (pipe.workdir / "backfill.log").read_text()[-3000:]
    log = (pipe.workdir / "backfill.log").read_text()
    assert f"{2 * N}/{2 * N} candles" in log

    async def complete() -> bool:
        return await pipe.ohlcv_count() == 2 * N

    await pipe.wait_for("every backfilled candle in ohlcv", complete)
    await assert_ohlcv_equals_simulator(pipe)
