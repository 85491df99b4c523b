"""Archive backfill against the simulator's data.binance.vision tree, with real JetStream KV.

Each trap of the real archives is served by the simulator and must be met the way a user needs:
a corrupted checksum is never loaded and is dead-lettered with both digests; a microsecond file or
one with a header row gives the same candles as a plain one (its bronze kept as it came); a
missing day is recorded and handed to REST; a finished file is not downloaded again; a replaced
file is loaded again as a new version and reported.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import nats
import pytest
from cryptoflow_exchange_sim import INTERVALS, KlineWindow, RandomWalkMarket
from cryptoflow_exchange_sim.archives import ArchiveFaults
from cryptoflow_exchange_sim.server import Simulator
from cryptoflow_extractor.archive import DAY_MS, ArchiveFetcher, ArchiveJob, ArchiveReport, plan_files
from cryptoflow_extractor.checkpoints import CheckpointStore
from cryptoflow_runtime import ensure_kv
from cryptoflow_transformer.native import payload_from_native

from .conftest import Recorder, make_session

SYMBOL = "BTC/USDT"
TF = "5m"
TF_MS = 300_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


START = ms("2024-01-01T00:00:00")
NOW = ms("2024-03-10T12:00:00")  # the exchange's clock: March is the current month


@dataclass
class Tree:
    url: str
    simulator: Simulator
    walk: RandomWalkMarket
    faults: ArchiveFaults


@pytest.fixture
async def tree() -> AsyncIterator[Tree]:
    walk = RandomWalkMarket([SYMBOL], seed=3, start_ms=START)
    faults = ArchiveFaults()
    simulator = Simulator(walk, clock=lambda: NOW, exchanges=["binance"], archive_faults=faults)
    url = await simulator.start()
    try:
        yield Tree(url, simulator, walk, faults)
    finally:
        await simulator.stop()


_buckets = itertools.count()


NewStore = Callable[[], Awaitable[CheckpointStore]]


@pytest.fixture
async def fresh_checkpoints(fresh_nats_url: str) -> AsyncIterator[NewStore]:
    """A new, empty checkpoint bucket per call (a first run); the same store again is a rerun."""
    nc = await nats.connect(fresh_nats_url)

    async def new_store() -> CheckpointStore:
        return CheckpointStore(await ensure_kv(nc.jetstream(), f"archive_{next(_buckets)}"))

    try:
        yield new_store
    finally:
        await nc.close()


async def archive_run(
    url: str, checkpoints: CheckpointStore, start_ms: int = START, end_ms: int = NOW, market: str = "spot"
) -> tuple[Recorder, ArchiveJob, int]:
    recorder = Recorder()
    session = make_session(url, recorder, "binance")
    async with aiohttp.ClientSession() as http:
        try:
            await session.exchange.load_markets()
            job = ArchiveJob(
                session=session,
                fetcher=ArchiveFetcher(url, http),
                checkpoints=checkpoints,
                symbol=SYMBOL,
                timeframe=TF,
                start_ms=start_ms,
                end_ms=end_ms,
                report=ArchiveReport(),
                now_ms=lambda: NOW,
                market=market,
            )
            reached = await job.run()
        finally:
            await session.exchange.close()
    return recorder, job, reached


def candles(recorder: Recorder) -> list[list[Any]]:
    """The pages' candles as the transformer parses them from their bronze (pages carry no payload)."""
    return [row for snapshot in recorder.snapshots for row in payload_from_native(snapshot.model_dump(mode="json"))]


def truth(walk: RandomWalkMarket, start_ms: int, end_ms: int) -> list[list[float]]:
    klines = walk.klines("BTCUSDT", INTERVALS[TF], KlineWindow(start_ms, end_ms - 1, 10**9), NOW)
    return [[k.open_time, float(k.open), float(k.high), float(k.low), float(k.close), float(k.volume)] for k in klines]


def days_of(year: int, month: int, last: int) -> set[str]:
    return {f"BTCUSDT-5m-{year}-{month:02d}-{day:02d}.zip" for day in range(1, last + 1)}


def test_the_plan_takes_listed_months_then_days_and_names_the_days_missing_inside_the_span() -> None:
    monthly = {"BTCUSDT-5m-2024-01.zip", "BTCUSDT-5m-2024-02.zip", "ETHUSDT-5m-2024-01.zip"}
    daily = days_of(2024, 1, 31) | days_of(2024, 2, 29) | days_of(2024, 3, 9) - {"BTCUSDT-5m-2024-03-04.zip"}
    files, missing, reached = plan_files("spot", "BTCUSDT", TF, START, NOW, monthly, daily)
    assert [f.name for f in files[:2]] == ["BTCUSDT-5m-2024-01.zip", "BTCUSDT-5m-2024-02.zip"]
    assert [f.name for f in files[2:]] == [f"BTCUSDT-5m-2024-03-{d:02d}.zip" for d in (1, 2, 3, 5, 6, 7, 8, 9)]
    assert files[0].path == "/data/spot/monthly/klines/BTCUSDT/5m/BTCUSDT-5m-2024-01.zip"
    assert missing == [(ms("2024-03-04T00:00:00"), ms("2024-03-05T00:00:00"))]
    # REST takes over where the last listed file ends.
    assert reached == ms("2024-03-10T00:00:00")
    # Before the first listed file the symbol was not archived: nothing planned, nothing missing.
    assert plan_files("spot", "BTCUSDT", TF, ms("2023-06-01T00:00:00"), NOW, monthly, daily) == (
        files,
        missing,
        reached,
    )
    # A range inside a month: that month's file alone; the archive reaches the range's end.
    files, missing, reached = plan_files(
        "spot", "BTCUSDT", TF, ms("2024-01-05T00:00:00"), ms("2024-01-07T00:00:00"), monthly, daily
    )
    assert [f.name for f in files] == ["BTCUSDT-5m-2024-01.zip"] and missing == []
    assert reached == ms("2024-01-07T00:00:00")
    # A month without its zip is read by day; nothing listed at all leaves the whole range to REST.
    files, _, _ = plan_files("spot", "BTCUSDT", TF, START, NOW, monthly - {"BTCUSDT-5m-2024-02.zip"}, daily)
    assert [f.name for f in files][1:30] == sorted(days_of(2024, 2, 29))
    assert plan_files("spot", "SOLUSDT", TF, START, NOW, monthly, daily) == ([], [], START)


async def test_archives_give_the_exchanges_candles_once_each(tree: Tree, fresh_checkpoints: NewStore) -> None:
    recorder, job, reached = await archive_run(tree.url, await fresh_checkpoints())
    rows = [row[:6] for row in candles(recorder)]
    assert rows == truth(tree.walk, START, reached)
    assert set(job.report.outcomes.values()) == {"loaded"} and len(job.report.outcomes) == 11
    # A page is its part of the CSV, nothing else: the parts joined are the files' CSVs.
    for snapshot in recorder.snapshots:
        assert snapshot.native and snapshot.native[0].method == "archiveKlines" and snapshot.payload is None
        assert len(snapshot.model_dump_json()) < 900_000
    assert sum(len(s.native[0].responses[0].body) for s in recorder.snapshots) == sum(  # type: ignore[index]
        len(tree.simulator.archives.csv_of(name)) for name in job.report.outcomes
    )
    # The same files read again from scratch are the same pages (JetStream drops them as duplicates).
    again, _, _ = await archive_run(tree.url, await fresh_checkpoints())
    assert [s.event_id for s in again.snapshots] == [s.event_id for s in recorder.snapshots]


@pytest.mark.parametrize("market", ["futures/um", "futures/cm"])
async def test_the_futures_trees_are_read_by_configuration(
    tree: Tree, fresh_checkpoints: NewStore, market: str
) -> None:
    """`archive_market: futures/um` (or cm) reads data/futures/<um|cm>/…, checkpointed apart from spot."""
    tree.simulator.archives.requests.clear()
    recorder, job, reached = await archive_run(tree.url, await fresh_checkpoints(), market=market)
    assert [row[:6] for row in candles(recorder)] == truth(tree.walk, START, reached)
    paths = {s.native[0].responses[0].path for s in recorder.snapshots}  # type: ignore[index]
    assert paths and all(path.startswith(f"/data/{market}/") for path in paths)
    assert all(market.replace("/", "_") in job.checkpoint_key(file) for file in job.files_done)


async def test_a_corrupted_checksum_is_dead_lettered_with_both_sums_and_never_loaded(
    tree: Tree, fresh_checkpoints: NewStore
) -> None:
    tree.faults.add("bad_checksum", "BTCUSDT-5m-2024-02.zip")
    checkpoints = await fresh_checkpoints()
    recorder, job, _ = await archive_run(tree.url, checkpoints)
    assert job.report.outcomes["BTCUSDT-5m-2024-02.zip"] == "corrupt"
    february = (ms("2024-02-01T00:00:00"), ms("2024-03-01T00:00:00"))
    assert not [row for row in candles(recorder) if february[0] <= row[0] < february[1]]
    (letter,) = recorder.dead_letters
    assert letter.error_type == "ChecksumMismatch" and letter.details["file"] == "BTCUSDT-5m-2024-02.zip"
    expected, actual = letter.details["expected_sha256"], letter.details["actual_sha256"]
    assert len(expected) == len(actual) == 64 and expected != actual
    assert expected in letter.reason and actual in letter.reason
    # Retried on the next run (nothing was checkpointed for it): with the file fixed, it loads.
    tree.faults.patterns.clear()
    recorder, job, _ = await archive_run(tree.url, checkpoints)
    assert job.report.outcomes["BTCUSDT-5m-2024-02.zip"] == "loaded"
    assert [row[:6] for row in candles(recorder)] == truth(tree.walk, *february)


@pytest.mark.parametrize("variant", ["header", "microseconds"])
async def test_header_and_microsecond_files_give_the_same_candles(
    tree: Tree, fresh_checkpoints: NewStore, variant: str
) -> None:
    plain, _, _ = await archive_run(tree.url, await fresh_checkpoints())
    tree.faults.add(variant, "BTCUSDT-5m-2024-0[12]*")
    varied, job, _ = await archive_run(tree.url, await fresh_checkpoints())
    assert candles(varied) == candles(plain)
    # Bronze is the file as it came: the variant is in the bodies, and parsed again it is the same.
    body = varied.snapshots[0].native[0].responses[0].body  # type: ignore[index]
    assert body.startswith("open_time,") if variant == "header" else body.split(",", 1)[0].endswith("000000")
    assert set(job.report.outcomes.values()) == {"loaded"}


async def test_a_missing_day_is_recorded_for_rest_and_a_missing_month_read_by_day(
    tree: Tree, fresh_checkpoints: NewStore
) -> None:
    tree.faults.add("missing", "BTCUSDT-5m-2024-03-04.zip")
    tree.faults.add("missing", "BTCUSDT-5m-2024-01.zip")
    tree.faults.add("missing", "BTCUSDT-5m-2024-01-15.zip")
    recorder, job, reached = await archive_run(tree.url, await fresh_checkpoints())
    day4, day15 = ms("2024-03-04T00:00:00"), ms("2024-01-15T00:00:00")
    assert job.missing_days == [(day15, day15 + DAY_MS), (day4, day4 + DAY_MS)]
    assert job.report.outcomes["BTCUSDT-5m-2024-03-04.zip"] == "missing"
    assert "BTCUSDT-5m-2024-01.zip" not in job.report.outcomes  # read from its days instead
    assert job.report.outcomes["BTCUSDT-5m-2024-01-14.zip"] == "loaded"
    # Everything but the two missing days, and no gap in the data for them: REST fills them.
    expected = [
        row for row in truth(tree.walk, START, reached) if not any(d <= row[0] < d + DAY_MS for d in (day4, day15))
    ]
    assert [row[:6] for row in candles(recorder)] == expected
    # The days the archive lacks are recorded as such (source_coverage), not as data gaps.
    assert sorted((g.kind, g.start_ts, g.end_ts, g.missing, g.timeframe) for g in recorder.gaps) == [
        ("archive_missing", day15, day15 + DAY_MS - 1, 0, TF),
        ("archive_missing", day4, day4 + DAY_MS - 1, 0, TF),
    ]


async def test_a_rerun_skips_finished_files_without_downloading_them_and_reloads_a_replaced_one(
    tree: Tree, fresh_checkpoints: NewStore
) -> None:
    checkpoints = await fresh_checkpoints()
    first, _, _ = await archive_run(tree.url, checkpoints)
    downloads = dict(tree.simulator.archives.requests)
    again, job, _ = await archive_run(tree.url, checkpoints)
    assert set(job.report.outcomes.values()) == {"skipped"} and again.snapshots == []
    zips = {name for name in downloads if name.endswith(".zip")}
    assert all(tree.simulator.archives.requests[name] == downloads[name] for name in zips), (
        "a finished zip was read again"
    )
    # Binance replaced February's file: a new checksum, new values; loaded again and reported.
    tree.faults.add("replace", "BTCUSDT-5m-2024-02.zip")
    replaced, job, _ = await archive_run(tree.url, checkpoints)
    assert job.report.outcomes["BTCUSDT-5m-2024-02.zip"] == "replaced"
    assert job.report.names("skipped") == sorted(set(job.report.outcomes) - {"BTCUSDT-5m-2024-02.zip"})
    assert "->" in job.report.details["BTCUSDT-5m-2024-02.zip"]
    old = {row[0]: row for row in candles(first)}
    new = candles(replaced)
    assert new and all(row[5] == pytest.approx(old[row[0]][5] + 1) for row in new)
    assert {s.event_id for s in replaced.snapshots}.isdisjoint(s.event_id for s in first.snapshots)
