"""Trades and aggTrades archives against the simulator's data.binance.vision tree, with real JetStream KV.

The simulator's archive files are built from the trades its REST side serves, so every test
compares what the extractor published — parsed again from its bronze, as the transformer parses
it — with the simulator's own trades: the trade ids, times, prices, amounts and sides.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import nats
import polars as pl
import pytest
from cryptoflow_contracts import Dataset
from cryptoflow_exchange_sim import RandomWalkMarket, TradeWindow
from cryptoflow_exchange_sim.archives import ArchiveFaults
from cryptoflow_exchange_sim.binance import agg_trades_body, aggregate
from cryptoflow_exchange_sim.server import Simulator
from cryptoflow_extractor.archive import ArchiveFetcher, ArchiveReport
from cryptoflow_extractor.backfill import BackfillRequest
from cryptoflow_extractor.checkpoints import CheckpointStore
from cryptoflow_extractor.config import ExtractorSettings
from cryptoflow_extractor.trade_archive import AggTradesArchive, TradeArchiveJob, TradeKind, TradesArchiveThenRest
from cryptoflow_extractor.trade_backfill import run_trade_backfill
from cryptoflow_extractor.trades_by_id import TradesByIdJob
from cryptoflow_runtime import ensure_kv, load_settings
from cryptoflow_transformer.datasets import TRANSFORMS
from cryptoflow_transformer.native import payload_from_native, unified_bronze

from .conftest import Recorder, make_session

SYMBOL = "BTC/USDT"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


# Three days of trades (~75k a day), then 20 minutes of the fourth: the archive's daily files
# are the first three, REST serves the rest.
START = ms("2024-03-01T00:00:00")
NOW = ms("2024-03-04T00:20:00")
DAYS = [f"BTCUSDT-trades-2024-03-0{day}.zip" for day in (1, 2, 3)]


@dataclass
class Tree:
    url: str
    simulator: Simulator
    walk: RandomWalkMarket
    faults: ArchiveFaults


@pytest.fixture
async def tree() -> AsyncIterator[Tree]:
    walk = RandomWalkMarket([SYMBOL], seed=5, start_ms=START)
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
    nc = await nats.connect(fresh_nats_url)

    async def new_store() -> CheckpointStore:
        return CheckpointStore(await ensure_kv(nc.jetstream(), f"trade_archive_{next(_buckets)}"))

    try:
        yield new_store
    finally:
        await nc.close()


async def archive_run(
    url: str, checkpoints: CheckpointStore, kind: TradeKind = "trades", start_ms: int = START
) -> tuple[Recorder, TradeArchiveJob]:
    recorder = Recorder()
    session = make_session(url, recorder, "binance")
    async with aiohttp.ClientSession() as http:
        try:
            await session.exchange.load_markets()
            job = TradeArchiveJob(
                session=session,
                fetcher=ArchiveFetcher(url, http),
                checkpoints=checkpoints,
                symbol=SYMBOL,
                kind=kind,
                start_ms=start_ms,
                end_ms=NOW,
                report=ArchiveReport(),
                part_bytes=1_000_000,
            )
            await job.run()
        finally:
            await session.exchange.close()
    return recorder, job


def parsed(recorder: Recorder) -> list[dict[str, Any]]:
    """The pages' records as the transformer parses them from their bronze."""
    return [row for snapshot in recorder.snapshots for row in payload_from_native(snapshot.model_dump(mode="json"))]


def as_trades(records: list[dict[str, Any]]) -> list[tuple[str, int, float, float, str, str | None]]:
    return [
        (str(r["id"]), int(r["timestamp"]), float(r["price"]), float(r["amount"]), r["side"], r.get("maker_side"))
        for r in records
    ]


def truth(walk: RandomWalkMarket, start_ms: int, end_ms: int) -> list[tuple[str, int, float, float, str, str | None]]:
    """The simulator's trades of [start, end) as its REST side serves them."""
    trades = walk.trades("BTCUSDT", TradeWindow(start_ms=start_ms, end_ms=end_ms - 1, limit=10**9), NOW)
    return [
        (
            str(t.id),
            t.time_ms,
            float(t.price),
            float(t.qty),
            "sell" if t.is_buyer_maker else "buy",
            "buy" if t.is_buyer_maker else "sell",
        )
        for t in trades
    ]


async def test_trades_archive_pages_are_the_simulators_trades(tree: Tree, fresh_checkpoints: NewStore) -> None:
    start = ms("2024-03-03T00:00:00")  # one day: the last file
    checkpoints = await fresh_checkpoints()
    recorder, job = await archive_run(tree.url, checkpoints, start_ms=start)
    assert job.report.outcomes == {DAYS[2]: "loaded"}
    assert as_trades(parsed(recorder)) == truth(tree.walk, start, ms("2024-03-04T00:00:00"))
    assert all(s.native[0].method == "archiveTrades" and s.payload is None for s in recorder.snapshots)
    assert job.last_id == int(truth(tree.walk, start, ms("2024-03-04T00:00:00"))[-1][0])
    # Idempotent: a rerun skips the file unread; a rerun from scratch publishes the same pages.
    again, rerun = await archive_run(tree.url, checkpoints, start_ms=start)
    assert not again.snapshots and rerun.report.outcomes == {DAYS[2]: "skipped"} and rerun.last_id == job.last_id
    fresh, _ = await archive_run(tree.url, await fresh_checkpoints(), start_ms=start)
    assert [s.event_id for s in fresh.snapshots] == [s.event_id for s in recorder.snapshots]


@pytest.mark.parametrize("variant", ["microseconds", "header"])
async def test_trades_microsecond_and_header_files_give_the_same_trades(
    tree: Tree, fresh_checkpoints: NewStore, variant: str
) -> None:
    start = ms("2024-03-03T00:00:00")
    plain, _ = await archive_run(tree.url, await fresh_checkpoints(), start_ms=start)
    tree.faults.add(variant, "BTCUSDT-trades-*")
    varied, job = await archive_run(tree.url, await fresh_checkpoints(), start_ms=start)
    assert job.report.outcomes == {DAYS[2]: "loaded"}
    assert parsed(varied) == parsed(plain)
    # The bronze is the file as it came (µs times, or the header row), not normalized.
    body = varied.snapshots[0].native[0].responses[0].body
    assert body != plain.snapshots[0].native[0].responses[0].body
    assert body.startswith("id,price") if variant == "header" else str(parsed(plain)[0]["timestamp"] * 1000) in body


async def test_a_corrupted_trades_checksum_is_dead_lettered_and_never_loaded(
    tree: Tree, fresh_checkpoints: NewStore
) -> None:
    start = ms("2024-03-02T00:00:00")
    tree.faults.add("bad_checksum", DAYS[1])
    checkpoints = await fresh_checkpoints()
    recorder, job = await archive_run(tree.url, checkpoints, start_ms=start)
    assert job.report.outcomes == {DAYS[1]: "corrupt", DAYS[2]: "loaded"}
    assert as_trades(parsed(recorder)) == truth(tree.walk, ms("2024-03-03T00:00:00"), ms("2024-03-04T00:00:00"))
    (letter,) = recorder.dead_letters
    assert letter.error_type == "ChecksumMismatch" and letter.dataset.value == "trades"
    assert letter.details["file"] == DAYS[1]
    expected, actual = letter.details["expected_sha256"], letter.details["actual_sha256"]
    assert len(expected) == len(actual) == 64 and expected != actual
    # Not checkpointed: the next run (the file fixed) loads it.
    tree.faults.patterns.clear()
    again, job = await archive_run(tree.url, checkpoints, start_ms=start)
    assert job.report.outcomes == {DAYS[1]: "loaded", DAYS[2]: "skipped"}
    assert as_trades(parsed(again)) == truth(tree.walk, start, ms("2024-03-03T00:00:00"))


async def test_trades_archive_then_rest_by_id_join_with_no_gap_and_no_duplicate(
    tree: Tree, fresh_checkpoints: NewStore
) -> None:
    since = ms("2024-03-03T06:00:00")  # inside the last archived day
    checkpoints = await fresh_checkpoints()
    recorder = Recorder()
    session = make_session(tree.url, recorder, "binance")
    try:
        await session.exchange.load_markets()
        rest = TradesByIdJob(session, SYMBOL, since, 1000, checkpoints)
        job = TradesArchiveThenRest(rest, tree.url, now_ms=lambda: NOW)
        published = await job.catch_up()
        assert job.report.outcomes == {DAYS[2]: "loaded"}
        archived = [s for s in recorder.snapshots if s.payload is None]
        polled = [s for s in recorder.snapshots if s.payload is not None]
        assert archived and polled  # both sources: the archive's day, then REST's 20 minutes
        got = as_trades(parsed(recorder))
        assert got == truth(tree.walk, since, NOW)  # in order, each once: no gap, no overlap
        assert published == len(got)
        # REST began right after the last archived trade (by id), and a restart resumes there.
        assert polled[0].request["fromId"] == int(parsed(Recorder(snapshots=archived))[-1]["id"]) + 1
        restarted = TradesArchiveThenRest(TradesByIdJob(session, SYMBOL, since, 1000, checkpoints), tree.url)
        restarted.now_ms = lambda: NOW
        before = len(recorder.snapshots)
        assert await restarted.catch_up() == 0 and len(recorder.snapshots) == before
        # It went through the archives from its checkpoint on: past the last file, none to read.
        assert restarted.report.outcomes == {}
    finally:
        await session.exchange.close()


async def test_agg_trades_archive_equals_the_simulators_aggregation(tree: Tree, fresh_checkpoints: NewStore) -> None:
    start = ms("2024-03-03T00:00:00")
    checkpoints = await fresh_checkpoints()
    recorder = Recorder()
    session = make_session(tree.url, recorder, "binance")
    try:
        await session.exchange.load_markets()
        job = AggTradesArchive(session, checkpoints, SYMBOL, start, tree.url, now_ms=lambda: NOW)
        loaded = await job.catch_up()
        assert job.report.outcomes == {"BTCUSDT-aggTrades-2024-03-03.zip": "loaded"}
        pages = len(recorder.snapshots)
        # The next poll: the file is skipped unread, nothing is published again.
        assert await job.catch_up() == 0 and len(recorder.snapshots) == pages
        assert job.report.outcomes == {"BTCUSDT-aggTrades-2024-03-03.zip": "skipped"}
    finally:
        await session.exchange.close()
    trades = tree.walk.trades(
        "BTCUSDT", TradeWindow(start_ms=start, end_ms=ms("2024-03-04T00:00:00") - 1, limit=10**9), NOW
    )
    expected = [
        (
            str(a["a"]),
            a["T"],
            float(str(a["p"])),
            float(str(a["q"])),
            str(a["f"]),
            str(a["l"]),
            "sell" if a["m"] else "buy",
        )
        for a in agg_trades_body(aggregate(trades))
    ]
    got = [
        (
            r["agg_id"],
            r["timestamp"],
            float(r["price"]),
            float(r["amount"]),
            r["first_trade_id"],
            r["last_trade_id"],
            r["side"],
        )
        for r in parsed(recorder)
    ]
    assert got == expected and loaded == len(expected)
    assert all(s.dataset.value == "agg_trades" and s.native[0].method == "archiveAggTrades" for s in recorder.snapshots)


def silver(recorder: Recorder, dataset: Dataset) -> pl.DataFrame:
    """The silver rows the transformer makes of the pages' bronze."""
    ndjson = b"".join(snapshot.model_dump_json().encode() + b"\n" for snapshot in recorder.snapshots)
    checked = TRANSFORMS[dataset].check(unified_bronze(ndjson))
    assert checked.rejected.is_empty()
    return checked.good.drop("source_event_id").sort("ts", "trade_id" if dataset == Dataset.TRADES else "agg_id")


async def test_archived_trades_are_the_rest_jobs_silver_rows_value_for_value(
    tree: Tree, fresh_checkpoints: NewStore
) -> None:
    """The same trades from the archive and from REST (by id, as the tail reads them) are the
    same `trades` rows: trade_id, ts, price, amount, side and maker_side."""
    start = ms("2024-03-03T23:30:00")
    archived, _ = await archive_run(tree.url, await fresh_checkpoints(), start_ms=start)
    recorder = Recorder()
    session = make_session(tree.url, recorder, "binance")
    try:
        await session.exchange.load_markets()
        await TradesByIdJob(session, SYMBOL, start, 1000, await fresh_checkpoints()).catch_up(lambda: NOW)
    finally:
        await session.exchange.close()
    from_archive = silver(archived, Dataset.TRADES)
    from_rest = silver(recorder, Dataset.TRADES).filter(pl.col("ts") < datetime(2024, 3, 4, tzinfo=UTC))
    assert from_archive.height == len(truth(tree.walk, start, ms("2024-03-04T00:00:00"))) > 0
    assert from_archive.equals(from_rest)
    assert set(from_archive["maker_side"].unique()) == {"buy", "sell"}


async def test_backfill_of_trades_reads_the_archives_then_rest_by_id_to_the_end_with_progress(
    tree: Tree, fresh_nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backfill --source binance-archive --dataset trades`: the range's trades, each once — the
    archived day's, then REST's up to `--to` and not after — with its progress in archive days."""
    for name, value in {
        "NATS_URL": fresh_nats_url,
        "EXTRACTOR_EXCHANGE": "binance",
        "EXTRACTOR_EXCHANGE_URL": tree.url,
        "EXTRACTOR_SYMBOLS": SYMBOL,
    }.items():
        monkeypatch.setenv(name, value)
    start, until = ms("2024-03-03T23:00:00"), ms("2024-03-04T00:10:00") - 1
    request = BackfillRequest(
        exchange="binance",
        symbols=[SYMBOL],
        timeframe="1m",
        start=datetime.fromtimestamp(start / 1000, UTC),
        end=datetime.fromtimestamp(until / 1000, UTC),
        source="binance-archive",
        dataset="trades",
    )
    out, report = io.StringIO(), ArchiveReport()
    published = await run_trade_backfill(load_settings(ExtractorSettings), request, out, report)
    assert report.outcomes == {DAYS[2]: "loaded"}
    # Each trade of the range once: an overlap would count some twice, a gap or a tail past the end miscount.
    assert published == len(truth(tree.walk, start, until + 1)) > 0
    # The last progress line: the archived day of the two days the range touches.
    assert "1/2 archive days" in out.getvalue().splitlines()[-1]
    # Resumed: the files are skipped and REST has nothing after its checkpoint.
    again = await run_trade_backfill(load_settings(ExtractorSettings), request, io.StringIO(), ArchiveReport())
    assert again == 0


async def test_a_missing_trades_day_is_read_by_rest_between_the_archived_days(
    tree: Tree, fresh_checkpoints: NewStore
) -> None:
    """The day the archive lacks is recorded, and its trades come by REST by trade id (from the
    last archived trade before it to its end), so archive, fill, archive and tail join exactly."""
    tree.faults.add("missing", DAYS[1])
    since = ms("2024-03-01T23:00:00")
    recorder = Recorder()
    session = make_session(tree.url, recorder, "binance")
    try:
        await session.exchange.load_markets()
        job = TradesArchiveThenRest(
            TradesByIdJob(session, SYMBOL, since, 1000, await fresh_checkpoints()), tree.url, now_ms=lambda: NOW
        )
        await job.catch_up()
    finally:
        await session.exchange.close()
    assert job.report.outcomes == {DAYS[0]: "loaded", DAYS[1]: "missing", DAYS[2]: "loaded"}
    (gap,) = recorder.gaps
    assert (gap.kind, gap.dataset.value, gap.start_ts, gap.end_ts) == (
        "archive_missing",
        "trades",
        ms("2024-03-02T00:00:00"),
        ms("2024-03-03T00:00:00") - 1,
    )
    # Published files first, then the day's fill, then the tail: each trade once, none missing.
    got = sorted(as_trades(parsed(recorder)), key=lambda t: (t[1], int(t[0])))
    assert got == truth(tree.walk, since, NOW)


async def test_a_replaced_trades_file_is_loaded_again_as_a_new_version_and_reported(
    tree: Tree, fresh_checkpoints: NewStore
) -> None:
    start = ms("2024-03-03T00:00:00")
    checkpoints = await fresh_checkpoints()
    first, _ = await archive_run(tree.url, checkpoints, start_ms=start)
    tree.faults.add("replace", DAYS[2])
    second, job = await archive_run(tree.url, checkpoints, start_ms=start)
    assert job.report.outcomes == {DAYS[2]: "replaced"} and "->" in job.report.details[DAYS[2]]
    # Other values (the amounts restated), hence other pages: the warehouse updates the trades.
    assert {s.event_id for s in second.snapshots}.isdisjoint(s.event_id for s in first.snapshots)
    before, after = parsed(first), parsed(second)
    assert [r["id"] for r in after] == [r["id"] for r in before]
    assert all(float(b["amount"]) + 1 == pytest.approx(float(a["amount"])) for a, b in zip(after, before, strict=True))
