"""Trades and aggregate trades from Binance's bulk archives (`trades`, `aggTrades` trees), file by file.

The kline archives' way (archive.py, decision 0044) for the two trade trees: the same plan
(`plan_files`: monthly zips of ended months, daily zips of the current month's ended days, a
month without its zip read from its days), the same checks (the `.CHECKSUM` before anything is
read; a mismatch dead-lettered with both digests, not checkpointed, retried on the next run), the
same bronze (each RAW page is a part of the CSV as stored in the zip, `archiveTrades` or
`archiveAggTrades`, no payload: the transformer parses the part again, header or not, ms or µs)
and the same progress (a checkpoint per file: its sha256, after its pages are acknowledged; a
replaced file loaded again and reported). A day without its zip is recorded as missing (report,
metric, a known gap of kind archive_missing), not skipped silently.

`trades` go to the `trades` silver table with their trade ids; `TradesArchiveThenRest` then hands
over to REST by trade id (trades_by_id.py) from the last archived trade. `aggTrades` go to
`agg_trades` (Dataset.AGG_TRADES); `AggTradesArchive` reads them as they are published (decision
0056: the archives only, no REST tail).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

import aiohttp
import polars as pl
from cryptoflow_contracts import Dataset, KnownGap, RawSnapshot
from cryptoflow_native.archives import (
    ArchiveError,
    ChecksumMismatch,
    csv_member,
    expected_digest,
    has_header,
    split_lines,
    verify_checksum,
)
from cryptoflow_native.trade_archives import (
    ARCHIVE_AGG_TRADES_METHOD,
    ARCHIVE_TRADES_METHOD,
    agg_trade_frame,
    trade_frame,
)

from .archive import (
    ARCHIVE_SOURCE,
    DAY_MS,
    PART_BYTES,
    ArchiveFetcher,
    ArchiveFile,
    ArchiveReport,
    FileOutcome,
    archive_part_call,
    dead_letter_file,
    plan_files,
)
from .checkpoints import CheckpointStore, checkpoint_key
from .metrics import ARCHIVE_FILES, TRADES_PUBLISHED
from .session import ExchangeSession
from .trades_by_id import TradesByIdJob

log = logging.getLogger(__name__)

TradeKind = Literal["trades", "aggTrades"]
_DATASETS: dict[TradeKind, Dataset] = {"trades": Dataset.TRADES, "aggTrades": Dataset.AGG_TRADES}
_METHODS: dict[TradeKind, str] = {"trades": ARCHIVE_TRADES_METHOD, "aggTrades": ARCHIVE_AGG_TRADES_METHOD}
_FRAMES: dict[TradeKind, Callable[[bytes], pl.DataFrame]] = {"trades": trade_frame, "aggTrades": agg_trade_frame}
_ID_COLUMN: dict[TradeKind, str] = {"trades": "id", "aggTrades": "agg_id"}


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


@dataclass
class TradeArchiveJob:
    """One symbol's trades (or aggregate trades) from the archive tree, over [start, end)."""

    session: ExchangeSession
    fetcher: ArchiveFetcher
    checkpoints: CheckpointStore
    symbol: str
    kind: TradeKind
    start_ms: int
    end_ms: int
    market: str = "spot"
    part_bytes: int = PART_BYTES
    report: ArchiveReport = field(default_factory=ArchiveReport)
    on_file: Callable[[], None] | None = None
    # Filled by run(): the days no archive has, the files loaded now or before, and the last
    # record (id, time) of the last file: where REST goes on.
    missing_days: list[tuple[int, int]] = field(default_factory=list)
    files_done: list[ArchiveFile] = field(default_factory=list)
    last_id: int | None = None
    last_ts: int | None = None
    records: int = 0
    # Per file loaded now or before: where it ends, its last record's id and time (a missing
    # day's REST fill starts after the last record before it).
    file_ends: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def dataset(self) -> Dataset:
        return _DATASETS[self.kind]

    @property
    def symbol_id(self) -> str:
        return str(self.session.exchange.market(self.symbol)["id"])

    @property
    def name(self) -> str:
        return f"{self.session.exchange_id} {self.symbol} {self.kind} archive"

    def checkpoint_key(self, file: ArchiveFile) -> str:
        # As the kline files' (archive.py): per file, the name says the kind.
        return f"archive.{self.session.exchange_id}.{file.market.replace('/', '_')}.{file.name}".replace(
            "-", "_"
        ).replace(".zip", "")

    async def run(self) -> int:
        """Load every archived file of the range; returns where the archives stopped (ms)."""
        base = f"data/{self.market}/{{}}/{self.kind}/{self.symbol_id}/"
        monthly = await self.fetcher.list(base.format("monthly"))
        daily = await self.fetcher.list(base.format("daily"))
        files, missing, reached = plan_files(
            self.market, self.symbol_id, self.kind, self.start_ms, self.end_ms, monthly, daily, self.kind
        )
        for start, end in missing:
            day_start = start - start % DAY_MS
            name = ArchiveFile(
                self.market, "daily", self.symbol_id, self.kind, day_start, day_start + DAY_MS, self.kind
            )
            await self._missing(name, start, end)
        for file in files:
            outcome = await self.load(file)
            if outcome == "missing" and file.period == "monthly":
                del self.report.outcomes[file.name]  # listed but not there (yet): its days may be
                for day in file.days():
                    if day.end_ms > self.start_ms and day.start_ms < self.end_ms:
                        await self.load(day)
        self.missing_days.sort()
        return reached

    async def _missing(self, day: ArchiveFile, start: int, end: int) -> None:
        log.warning("archive day missing", extra={"job": self.name, "file": day.name})
        self.report.outcomes[day.name] = "missing"
        ARCHIVE_FILES.labels(self.session.exchange_id, self.kind, "missing").inc()
        self.missing_days.append((start, end))
        # Recorded once whatever the reruns (same event id): the archive lacks that day.
        await self.session.publisher.gap(
            KnownGap(
                exchange=self.session.exchange_id,
                symbol=self.symbol,
                dataset=self.dataset,
                start_ts=start,
                end_ts=end - 1,
                missing=0,
                detected_at=datetime.now(UTC),
                kind="archive_missing",
            )
        )

    async def load(self, file: ArchiveFile) -> FileOutcome:
        outcome = await self._load(file)
        self.report.outcomes[file.name] = outcome
        ARCHIVE_FILES.labels(self.session.exchange_id, self.kind, outcome).inc()
        if outcome in ("loaded", "skipped", "replaced"):
            self.files_done.append(file)
        elif outcome == "missing" and file.period == "daily":
            await self._missing(file, max(file.start_ms, self.start_ms), min(file.end_ms, self.end_ms))
        if self.on_file is not None:
            self.on_file()
        return outcome

    def _advance(self, file: ArchiveFile, last_id: int | None, last_ts: int | None) -> None:
        if last_id is None or last_ts is None:
            return
        self.file_ends.append((file.end_ms, last_id, last_ts))
        if self.last_id is None or last_id > self.last_id:
            self.last_id, self.last_ts = last_id, last_ts

    def last_before(self, ms: int) -> tuple[int, int] | None:
        """The id and time of the last record loaded from a file that ends at or before `ms`."""
        before = [(end, last_id, last_ts) for end, last_id, last_ts in self.file_ends if end <= ms]
        return max(before)[1:] if before else None

    async def _load(self, file: ArchiveFile) -> FileOutcome:
        checksum = await self.fetcher.get(file.path + ".CHECKSUM")
        if checksum is None:
            return "missing"
        checksum_text = checksum.decode("utf-8", errors="replace")
        expected = expected_digest(checksum_text)
        key = self.checkpoint_key(file)
        state = await self.checkpoints.state(key)
        if state is not None and state.get("sha256") == expected:
            self._advance(file, state.get("last_id"), state.get("last_ts"))
            return "skipped"
        content = await self.fetcher.get(file.path)
        if content is None:
            return "missing"
        try:
            digest = verify_checksum(file.name, content, checksum_text)
            published = await self._publish(file, digest, csv_member(content))
        except ChecksumMismatch as exc:
            await dead_letter_file(
                self.session,
                self.dataset,
                self.symbol,
                self.name,
                file,
                exc,
                {"expected_sha256": exc.expected, "actual_sha256": exc.actual},
            )
            self.report.details[file.name] = str(exc)
            return "corrupt"
        except ArchiveError as exc:
            await dead_letter_file(self.session, self.dataset, self.symbol, self.name, file, exc, {})
            self.report.details[file.name] = str(exc)
            return "corrupt"
        count, last_id, last_ts = published
        await self.checkpoints.put_state(
            key,
            {
                "sha256": digest,
                "records": count,
                "last_id": last_id,
                "last_ts": last_ts,
                "loaded_at": datetime.now(UTC).isoformat(),
                **({"replaced_sha256": state["sha256"]} if state is not None else {}),
            },
        )
        self._advance(file, last_id, last_ts)
        self.records += count
        if state is not None:
            self.report.details[file.name] = f"sha256 {state.get('sha256')} -> {digest}"
            log.warning(
                "archive file replaced since it was loaded: loaded again",
                extra={"job": self.name, "file": file.name, "was": state.get("sha256"), "now": digest},
            )
            return "replaced"
        return "loaded"

    async def _publish(self, file: ArchiveFile, digest: str, csv: bytes) -> tuple[int, int | None, int | None]:
        """Every part of the CSV with records in the range as a RAW page (no payload: the part is
        the bronze); returns how many records were published, and the last one's id and time (ms).
        The file's ids and times stay in Polars: a busy market's day is millions of trades."""
        frame = _FRAMES[self.kind](csv).select(pl.col(_ID_COLUMN[self.kind]).alias("id"), "time")
        parts = split_lines(csv, self.part_bytes)
        lo, hi = max(file.start_ms, self.start_ms), min(file.end_ms, self.end_ms) - 1
        count, last_id, last_ts = 0, None, None
        fetched_at = datetime.now(UTC)
        offset, row = 0, 0
        pending: list[Awaitable[None]] = []
        for index, part in enumerate(parts):
            start, offset = offset, offset + len(part)
            lines = part.count(b"\n") + (0 if part.endswith(b"\n") else 1)
            if index == 0 and has_header(part):
                lines -= 1
            inside = frame.slice(row, lines).filter(pl.col("time").is_between(lo, hi))
            row += lines
            if inside.is_empty():
                continue
            first_ts, page_last_ts = inside["time"].min(), inside["time"].max()
            assert isinstance(first_ts, int) and isinstance(page_last_ts, int)
            snapshot = RawSnapshot(
                schema_version=2,
                native=[
                    archive_part_call(
                        _METHODS[self.kind],
                        [self.symbol, self.kind, file.name],
                        file,
                        digest,
                        part,
                        index,
                        len(parts),
                        start,
                    )
                ],
                dataset=self.dataset,
                exchange=self.session.exchange_id,
                symbol=self.symbol,
                fetched_at=fetched_at,
                request={"source": ARCHIVE_SOURCE, "file": file.name, "sha256": digest, "part": index},
                payload=None,
                first_ts=first_ts,
                last_ts=page_last_ts,
                final=True,
            )
            pending.append(self.session.publisher.snapshot(snapshot))
            count += inside.height
            last_id, last_ts = inside["id"][-1], inside["time"][-1]
        # All of a file's pages in flight together; its checkpoint only after every one is acked.
        await asyncio.gather(*pending)
        if self.kind == "trades":
            TRADES_PUBLISHED.labels(self.session.exchange_id, self.symbol).inc(count)
        log.info(
            "archive file loaded",
            extra={"job": self.name, "file": file.name, "records": count, "pages": len(pending)},
        )
        return count, last_id, last_ts


async def fill_missing_days(job: TradeArchiveJob, rest: TradesByIdJob) -> int:
    """The trades of the days the archive lacks, by REST by trade id: from the last archived trade
    before each day to the day's end, with checkpoints of the fill's own (as the kline archives'
    missing days are read by REST). Returns the trades published."""
    published = 0
    for start, end in job.missing_days:
        fill = replace(rest, until_ms=end - 1, checkpoint_prefix=f"{rest.checkpoint_prefix}archive_fill.{start}.{end}.")
        before = job.last_before(start)
        known = await fill.last_id()
        if before is not None and (known is None or before[0] > known):
            await fill.checkpoints.put_state(
                fill.key, {"last_id": before[0], "last_ts": before[1], "ids_at_last_ts": [str(before[0])]}
            )
        elif before is None and known is None:
            fill = replace(fill, since_ms=start)  # no file before the day: its first trade by time
        published += await fill.catch_up()
    return published


@dataclass
class TradesArchiveThenRest:
    """A trades job with `source: binance-archive`: on its first catch-up, the `trades` archives
    from its checkpoint (or `since`) as far as they reach; then REST by trade id from the last
    archived trade (`TradesByIdJob`), polling as any trades job does. A restart goes through the
    archives again from the checkpoint: finished files are skipped unread."""

    rest: TradesByIdJob
    archive_url: str
    market: str = "spot"
    now_ms: Callable[[], int] = _now_ms
    report: ArchiveReport = field(default_factory=ArchiveReport)
    _archived: bool = field(default=False, init=False)

    @property
    def name(self) -> str:
        return self.rest.name + " (archive, then REST)"

    async def catch_up(self) -> int:
        loaded = 0
        if not self._archived:
            loaded = await self._archives()
            self._archived = True
        return loaded + await self.rest.catch_up(self.now_ms)

    async def _archives(self) -> int:
        rest = self.rest
        state = await rest.checkpoints.state(rest.key) or {}
        start = int(state.get("last_ts", rest.since_ms or self.now_ms()))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
            job = TradeArchiveJob(
                session=rest.session,
                fetcher=ArchiveFetcher(self.archive_url, http),
                checkpoints=rest.checkpoints,
                symbol=rest.symbol,
                kind="trades",
                start_ms=start,
                end_ms=self.now_ms(),
                market=self.market,
                report=self.report,
            )
            await job.run()
        filled = await fill_missing_days(job, rest)
        known = state.get("last_id")
        if job.last_id is not None and (known is None or job.last_id > int(known)):
            # REST goes on after the last archived trade: ids are consecutive, so no gap, no overlap.
            await rest.checkpoints.put_state(
                rest.key, {"last_id": job.last_id, "last_ts": job.last_ts, "ids_at_last_ts": [str(job.last_id)]}
            )
        return job.records + filled


@dataclass
class AggTradesArchive:
    """An `agg_trades` job (`source: binance-archive`): every poll, the `aggTrades` files published
    since the last one loaded (from `since` at first); no REST tail (decision 0056)."""

    session: ExchangeSession
    checkpoints: CheckpointStore
    symbol: str
    since_ms: int
    archive_url: str
    market: str = "spot"
    now_ms: Callable[[], int] = _now_ms
    report: ArchiveReport = field(default_factory=ArchiveReport)

    @property
    def key(self) -> str:
        return checkpoint_key(self.session.exchange_id, self.symbol, Dataset.AGG_TRADES, None)

    @property
    def name(self) -> str:
        return f"{self.session.exchange_id} {self.symbol} agg_trades (archive)"

    async def catch_up(self) -> int:
        state = await self.checkpoints.state(self.key) or {}
        start = max(self.since_ms, int(state.get("last_ts", self.since_ms)))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
            job = TradeArchiveJob(
                session=self.session,
                fetcher=ArchiveFetcher(self.archive_url, http),
                checkpoints=self.checkpoints,
                symbol=self.symbol,
                kind="aggTrades",
                start_ms=start,
                end_ms=self.now_ms(),
                market=self.market,
                report=self.report,
            )
            await job.run()
        if job.last_ts is not None and job.last_ts > int(state.get("last_ts", -1)):
            await self.checkpoints.put_state(self.key, {"last_id": job.last_id, "last_ts": job.last_ts})
        return job.records
