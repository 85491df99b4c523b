"""kill -9 a service mid-run, restart it: no gap, no duplicate, values intact."""

from __future__ import annotations

import pytest

from .harness import Pipeline
from .test_end_to_end import N, assert_ohlcv_equals_simulator, start_random_walk


async def _rows(pipe: Pipeline) -> int:
    return await pipe.ohlcv_count()


@pytest.mark.parametrize("victim", ["extractor", "lake-writer"])
async def test_kill_9_mid_run_then_restart_leaves_no_gap_and_no_duplicate(file_pipeline: Pipeline, victim: str) -> None:
    pipe = file_pipeline
    start_random_walk(pipe)
    # Small pages and batches stretch the run, so the kill lands while work is in flight.
    pipe.extra_env.update({"EXTRACTOR_PAGE_LIMIT": "10", "LAKE_WRITER_BATCH_SIZE": "3"})
    procs = pipe.start_all()

    async def some_rows_but_not_all() -> bool:
        return 0 < await _rows(pipe) < 2 * N

    await pipe.wait_for("the first rows", some_rows_but_not_all, interval=0.05)
    procs[victim].kill9()
    killed_at = await _rows(pipe)
    assert killed_at < 2 * N, "the pipeline finished before the kill; the test proves nothing"
    pipe.start(victim)

    async def complete() -> bool:
        return await _rows(pipe) == 2 * N

    await pipe.wait_for(f"{2 * N} rows after restarting {victim}", complete)
    await assert_ohlcv_equals_simulator(pipe)
    # Every candle exactly once per key (the primary key says so) and exactly the served ones.
    distinct = await pipe.fetchval("SELECT count(DISTINCT (symbol, ts)) FROM ohlcv")
    assert distinct == 2 * N
