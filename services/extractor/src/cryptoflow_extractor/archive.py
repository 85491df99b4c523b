"""Backfill from Binance's bulk archives (data.binance.vision): candles by the month, not the page.

For a symbol, interval and range, the plan (`plan_files`) is: the monthly zip of every month that
has ended, the daily zip of every ended day of the current month, then REST (the ordinary OHLCV
job) from where the archives stop to the end of the range, so the three join with no gap and no
overlap (each part starts where the one before stopped, at a candle boundary). A month whose zip
is not there is read from its daily zips; a day whose zip is not there is recorded as missing
(a log line, a metric and the report) and read by REST instead, so the series stays whole.

Each file:

1. its `.CHECKSUM` is read; a file already loaded with that checksum is skipped without being
   downloaded (resumable per file: the checkpoint is the file's sha256, written after its pages
   are acknowledged by JetStream);
2. the zip is downloaded and its sha256 compared: a mismatch is dead-lettered with both digests,
   nothing of it is published and nothing checkpointed, so the next run tries it again;
3. its CSV is published as RAW pages of at most `part_bytes` cut at line ends. A page's bronze is
   its part of the CSV exactly as stored in the zip (`NativeCall` "archiveKlines", one GET
   response whose body is the part, with the zip's sha256 and the part's byte range): the parts
   joined are the file, and the transformer parses the page again from it
   (`cryptoflow_native.archives`), header row or not, milliseconds or microseconds.

A file loaded before whose checksum has changed (Binance replaced it) is loaded again as a new
version — its pages have other values, hence other event ids, and the warehouse updates the
candles — and reported as replaced. The same file twice changes nothing: same pages, same ids.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlencode

import aiohttp
import ccxt
import polars as pl
from cryptoflow_contracts import (
    Dataset,
    DeadLetter,
    GapKind,
    KnownGap,
    NativeCall,
    NativeResponse,
    RawSnapshot,
    Stage,
    timeframe_ms,
)
from cryptoflow_native.archives import (
    ARCHIVE_KLINES_METHOD,
    ArchiveError,
    ChecksumMismatch,
    expected_digest,
    has_header,
    open_kline_archive,
    split_lines,
)

from .checkpoints import CheckpointStore
from .gaps import holes_in
from .jobs import ARCHIVED_EXCHANGES as ARCHIVED_EXCHANGES  # declared with the jobs file's checks
from .metrics import ARCHIVE_FILES, CANDLES_PUBLISHED, KNOWN_GAPS
from .ohlcv import OhlcvJob
from .session import ExchangeSession

log = logging.getLogger(__name__)

ARCHIVE_SOURCE = "binance-archive"
DEFAULT_ARCHIVE_URL = "https://data.binance.vision"
# CSV per RAW page (its only content: no payload beside it), well under NATS's 1 MiB message limit.
PART_BYTES = 800_000
DAY_MS = 86_400_000
FETCH_ATTEMPTS = 4

Period = Literal["monthly", "daily"]
ArchiveKind = Literal["klines", "trades", "aggTrades"]
_ZIP_NAME = re.compile(r"^([A-Z0-9]+)-(\w+?)-(\d{4})-(\d{2})(?:-(\d{2}))?\.zip$")
_LIST_KEY = re.compile(r"<Key>([^<]+)</Key>")
DEFAULT_LIST_URL = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"
FileOutcome = Literal["loaded", "skipped", "replaced", "missing", "corrupt"]


def _month_start(ms: int) -> int:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp() * 1000)


def _next_month(ms: int) -> int:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    return _month_start(ms) + days * DAY_MS


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One zip of the tree: `data/spot/<period>/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-<label>.zip`,
    or of a trades tree (`kind` trades or aggTrades), which has no interval level and the kind in
    the name's place of the interval: `data/spot/<period>/trades/<SYMBOL>/<SYMBOL>-trades-<label>.zip`."""

    market: str  # spot, futures/um, futures/cm
    period: Period
    symbol_id: str
    interval: str  # a trades tree's files: the kind (`trades`, `aggTrades`)
    start_ms: int
    end_ms: int  # exclusive
    kind: ArchiveKind = "klines"

    @property
    def label(self) -> str:
        moment = datetime.fromtimestamp(self.start_ms / 1000, UTC)
        return moment.strftime("%Y-%m" if self.period == "monthly" else "%Y-%m-%d")

    @property
    def name(self) -> str:
        return f"{self.symbol_id}-{self.interval}-{self.label}.zip"

    @property
    def path(self) -> str:
        if self.kind != "klines":
            return f"/data/{self.market}/{self.period}/{self.kind}/{self.symbol_id}/{self.name}"
        return f"/data/{self.market}/{self.period}/klines/{self.symbol_id}/{self.interval}/{self.name}"

    @classmethod
    def parse(cls, market: str, period: Period, name: str, kind: ArchiveKind = "klines") -> ArchiveFile | None:
        """The file of a listed zip name (`BTCUSDT-1m-2024-01.zip`), None for anything else."""
        match = _ZIP_NAME.match(name.rsplit("/", 1)[-1])
        if match is None:
            return None
        symbol_id, interval, year, month, day = match.groups()
        if (period == "daily") != (day is not None):
            return None
        first = datetime(int(year), int(month), int(day or 1), tzinfo=UTC)
        start = int(first.timestamp() * 1000)
        end = start + DAY_MS if day else _next_month(start)
        return cls(market, period, symbol_id, interval, start, end, kind)

    def days(self) -> list[ArchiveFile]:
        """A month's daily files."""
        return [
            ArchiveFile(self.market, "daily", self.symbol_id, self.interval, start, start + DAY_MS, self.kind)
            for start in range(self.start_ms, self.end_ms, DAY_MS)
        ]


def plan_files(
    market: str,
    symbol_id: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    monthly: set[str],
    daily: set[str],
    kind: ArchiveKind = "klines",
) -> tuple[list[ArchiveFile], list[tuple[int, int]], int]:
    """The files that cover [start, end) as far as the archive reaches, the days it lacks inside
    its span (missing: for REST), and where it stops (REST goes on there). `monthly` and `daily`
    are the zip names the bucket lists. A month's zip where there is one, else its days' zips.
    The span runs from the first listed file to the end of the last: before it the symbol was not
    archived (not listed yet), which is no missing day. A trades tree's `interval` is its kind."""
    parsed = [
        *(ArchiveFile.parse(market, "monthly", name, kind) for name in monthly),
        *(ArchiveFile.parse(market, "daily", name, kind) for name in daily),
    ]
    listed = [f for f in parsed if f is not None and f.symbol_id == symbol_id and f.interval == interval]
    if not listed:
        return [], [], start_ms
    first = max(start_ms, min(file.start_ms for file in listed))
    last = min(end_ms, max(file.end_ms for file in listed))
    files: list[ArchiveFile] = []
    missing: list[tuple[int, int]] = []
    cursor = _month_start(first)
    while cursor < last:
        month = ArchiveFile(market, "monthly", symbol_id, interval, cursor, _next_month(cursor), kind)
        if month.name in monthly:
            files.append(month)
        else:
            for day in month.days():
                if day.end_ms <= first or day.start_ms >= last:
                    continue
                if day.name in daily:
                    files.append(day)
                else:
                    missing.append((max(day.start_ms, start_ms), min(day.end_ms, end_ms)))
        cursor = month.end_ms
    return files, missing, max(start_ms, last)


@dataclass
class ArchiveReport:
    """What one run did, file by file."""

    outcomes: dict[str, FileOutcome] = field(default_factory=dict)
    candles: int = 0
    details: dict[str, str] = field(default_factory=dict)

    def names(self, outcome: FileOutcome) -> list[str]:
        return sorted(name for name, seen in self.outcomes.items() if seen == outcome)


def archive_part_call(
    method: str, args: list[str], file: ArchiveFile, digest: str, part: bytes, index: int, parts: int, start: int
) -> NativeCall:
    """A RAW page's bronze: its part of the archive's CSV as one GET response, with the zip's
    sha256 and the part's place in it (any archive kind: klines, trades, aggTrades)."""
    return NativeCall(
        ccxt_version=ccxt.__version__,
        method=method,
        args=args,
        responses=[
            NativeResponse(
                method="GET",
                path=file.path,
                status=200,
                headers={
                    "x-archive-sha256": digest,
                    "x-archive-part": f"{index + 1}/{parts}",
                    "x-archive-bytes": f"{start}-{start + len(part)}",
                },
                body=part.decode("utf-8", errors="replace"),
            )
        ],
    )


async def dead_letter_file(
    session: ExchangeSession,
    dataset: Dataset,
    symbol: str,
    job: str,
    file: ArchiveFile,
    exc: Exception,
    details: dict[str, str],
) -> None:
    """An archive file refused (checksum mismatch, unreadable): a DeadLetter naming it."""
    log.error("archive file refused", extra={"job": job, "file": file.name, "error": str(exc)})
    await session.publisher.dead_letter(
        DeadLetter(
            stage=Stage.EXTRACTOR,
            dataset=dataset,
            reason=str(exc),
            error_type=type(exc).__name__,
            payload=file.path,
            details={
                "exchange": session.exchange_id,
                "symbol": symbol,
                "source": ARCHIVE_SOURCE,
                "file": file.name,
                **details,
            },
        )
    )


class ArchiveFetcher:
    """GETs against the archive host, retried on network errors and 5xx; None for a 404. The
    bucket listing is on `list_url` (data.binance.vision's S3 bucket; the simulator lists its
    tree on its own host)."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession, list_url: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        if list_url is None:
            list_url = DEFAULT_LIST_URL if self.base_url == DEFAULT_ARCHIVE_URL else self.base_url
        self.list_url = list_url.rstrip("/")

    async def list(self, prefix: str) -> set[str]:
        """The zip names under a prefix (S3 ListObjects v1, every page)."""
        names: set[str] = set()
        marker = ""
        while True:
            query = urlencode({"delimiter": "/", "prefix": prefix, "marker": marker})
            body = await self._get(f"{self.list_url}/?{query}")
            if body is None:
                return names
            text = body.decode("utf-8", errors="replace")
            keys = _LIST_KEY.findall(text)
            names |= {key.rsplit("/", 1)[-1] for key in keys if key.endswith(".zip")}
            if "<IsTruncated>true</IsTruncated>" not in text or not keys:
                return names
            marker = keys[-1]

    async def get(self, path: str) -> bytes | None:
        return await self._get(self.base_url + path)

    async def _get(self, url: str) -> bytes | None:
        delay = 0.2
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                async with self.http.get(url) as response:
                    if response.status == 404:
                        return None
                    if response.status < 500 and response.status != 429:
                        response.raise_for_status()
                        return await response.read()
                    error = f"HTTP {response.status}"
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                error = repr(exc)
            if attempt == FETCH_ATTEMPTS:
                raise ArchiveError(f"GET {url}: {error} after {FETCH_ATTEMPTS} attempts")
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")


@dataclass
class ArchiveJob:
    """One symbol's candles of one interval from the archive tree, over [start, end)."""

    session: ExchangeSession
    fetcher: ArchiveFetcher
    checkpoints: CheckpointStore
    symbol: str
    timeframe: str
    start_ms: int
    end_ms: int
    market: str = "spot"
    part_bytes: int = PART_BYTES
    report: ArchiveReport = field(default_factory=ArchiveReport)
    now_ms: Callable[[], int] = field(default=lambda: int(datetime.now(UTC).timestamp() * 1000))
    on_file: Callable[[], None] | None = None
    # Filled by run(): the days no archive has (REST reads them), the files loaded now or before.
    missing_days: list[tuple[int, int]] = field(default_factory=list)
    files_done: list[ArchiveFile] = field(default_factory=list)
    # The open time the next candle should have (after the last file's last candle): a later one
    # leaves a hole, recorded as a known gap as the REST job records one.
    _expected_ts: int | None = field(default=None, init=False)

    @property
    def symbol_id(self) -> str:
        return str(self.session.exchange.market(self.symbol)["id"])

    @property
    def name(self) -> str:
        return f"{self.session.exchange_id} {self.symbol} ohlcv {self.timeframe} archive"

    def checkpoint_key(self, file: ArchiveFile) -> str:
        # Per file, not per range: a later backfill over the same months skips what is loaded.
        return f"archive.{self.session.exchange_id}.{file.market.replace('/', '_')}.{file.name}".replace(
            "-", "_"
        ).replace(".zip", "")

    async def run(self) -> int:
        """Load every archived file of the range; returns where the archives stopped (ms): REST
        goes on from there. Missing days are in `missing_days` for REST to fill."""
        base = f"data/{self.market}/{{}}/klines/{self.symbol_id}/{self.timeframe}/"
        monthly = await self.fetcher.list(base.format("monthly"))
        daily = await self.fetcher.list(base.format("daily"))
        files, missing, reached = plan_files(
            self.market, self.symbol_id, self.timeframe, self.start_ms, self.end_ms, monthly, daily
        )
        for start, end in missing:
            await self._missing(
                ArchiveFile(
                    self.market,
                    "daily",
                    self.symbol_id,
                    self.timeframe,
                    start - start % DAY_MS,
                    start - start % DAY_MS + DAY_MS,
                ),
                start,
                end,
            )
        for file in files:
            outcome = await self.load(file)
            if outcome == "missing" and file.period == "monthly":
                # Listed but not there (yet): its days may be.
                del self.report.outcomes[file.name]
                for day in file.days():
                    if day.end_ms > self.start_ms and day.start_ms < self.end_ms:
                        await self.load(day)
        self.missing_days.sort()
        return reached

    def rest_fills(self, rest: OhlcvJob) -> list[OhlcvJob]:
        """REST jobs like `rest` for the days the archive lacks, each with checkpoints of its own."""
        tf_ms = timeframe_ms(self.timeframe)
        return [
            replace(rest, since_ms=start, until_ms=end - tf_ms, checkpoint_prefix=f"archive_fill.{start}.{end}.")
            for start, end in self.missing_days
        ]

    async def _missing(self, day: ArchiveFile, start: int, end: int) -> None:
        log.warning("archive day missing: REST reads it", extra={"job": self.name, "file": day.name})
        self.report.outcomes[day.name] = "missing"
        ARCHIVE_FILES.labels(self.session.exchange_id, self.timeframe, "missing").inc()
        await self._record_missing_day(start, end)

    async def _record_missing_day(self, start: int, end: int) -> None:
        """REST reads the day; that the archive lacks it is recorded (known_gaps, kind
        archive_missing: `source_coverage`), once whatever the reruns (same event id)."""
        self.missing_days.append((start, end))
        self.missing_days.sort()
        await self._publish_gap(start, end - 1, 0, "archive_missing")

    async def _publish_gap(self, start: int, end: int, missing: int, kind: GapKind = "no_records") -> None:
        await self.session.publisher.gap(
            KnownGap(
                exchange=self.session.exchange_id,
                symbol=self.symbol,
                dataset=Dataset.OHLCV,
                timeframe=self.timeframe,
                start_ts=start,
                end_ts=end,
                missing=missing,
                detected_at=datetime.now(UTC),
                kind=kind,
            )
        )

    async def load(self, file: ArchiveFile) -> FileOutcome:
        outcome = await self._load(file)
        self.report.outcomes[file.name] = outcome
        ARCHIVE_FILES.labels(self.session.exchange_id, self.timeframe, outcome).inc()
        if outcome in ("loaded", "skipped", "replaced"):
            self.files_done.append(file)
        elif outcome == "missing" and file.period == "daily":
            await self._record_missing_day(max(file.start_ms, self.start_ms), min(file.end_ms, self.end_ms))
            # REST reads that day: whether it has holes is for REST to find, not a gap to record here.
            self._expected_ts = file.end_ms
        if self.on_file is not None:
            self.on_file()
        return outcome

    async def _load(self, file: ArchiveFile) -> FileOutcome:
        checksum = await self.fetcher.get(file.path + ".CHECKSUM")
        if checksum is None:
            log.warning("archive file missing", extra={"job": self.name, "file": file.name})
            return "missing"
        expected = expected_digest(checksum.decode("utf-8", errors="replace"))
        key = self.checkpoint_key(file)
        state = await self.checkpoints.state(key)
        if state is not None and state.get("sha256") == expected:
            if state.get("last_ts") is not None:
                self._expected_ts = int(state["last_ts"]) + timeframe_ms(self.timeframe)
            return "skipped"
        content = await self.fetcher.get(file.path)
        if content is None:
            log.warning("archive file missing (its CHECKSUM is there)", extra={"job": self.name, "file": file.name})
            return "missing"
        try:
            # Hashing, inflating and parsing release the GIL: other symbols' pages go out meanwhile.
            digest, csv, times = await asyncio.to_thread(
                open_kline_archive, file.name, content, checksum.decode("utf-8", errors="replace")
            )
            timestamps = await self._publish(file, digest, csv, times)
        except ChecksumMismatch as exc:
            await dead_letter_file(
                self.session,
                Dataset.OHLCV,
                self.symbol,
                self.name,
                file,
                exc,
                {"expected_sha256": exc.expected, "actual_sha256": exc.actual},
            )
            self.report.details[file.name] = str(exc)
            return "corrupt"
        except ArchiveError as exc:
            await dead_letter_file(self.session, Dataset.OHLCV, self.symbol, self.name, file, exc, {})
            self.report.details[file.name] = str(exc)
            return "corrupt"
        await self._record_holes(timestamps)
        candles = timestamps.len()
        replaced = state is not None
        await self.checkpoints.put_state(
            key,
            {
                "sha256": digest,
                "candles": candles,
                "last_ts": int(timestamps[-1]) if candles else None,
                "loaded_at": datetime.now(UTC).isoformat(),
                **({"replaced_sha256": state["sha256"]} if state is not None else {}),
            },
        )
        self.report.candles += candles
        if replaced:
            assert state is not None
            self.report.details[file.name] = f"sha256 {state.get('sha256')} -> {digest}"
            log.warning(
                "archive file replaced since it was loaded: loaded again",
                extra={"job": self.name, "file": file.name, "was": state.get("sha256"), "now": digest},
            )
            return "replaced"
        return "loaded"

    async def _publish(self, file: ArchiveFile, digest: str, csv: bytes, times: pl.Series) -> pl.Series:
        """Every part of the CSV as a RAW page; returns the open times of the candles published.

        The file is parsed once (its unit and header detected for the whole file: `times` are its
        open times in ms); a page carries its part of the CSV as bronze and no payload: its candles
        are parsed from the part where they are needed (the transformer), between the page's first
        and last open times. The pages are made off the event loop (hashing a page's part for its
        id is most of the work): the loop goes on publishing other files' pages meanwhile."""
        pages = await asyncio.to_thread(self._pages, file, digest, csv, times)
        # All of a file's pages in flight together; its checkpoint only after every one is acked.
        await asyncio.gather(*(self.session.publisher.snapshot(snapshot) for snapshot, _ in pages))
        loaded = pl.concat([inside for _, inside in pages]) if pages else pl.Series("open_time", [], pl.Int64)
        CANDLES_PUBLISHED.labels(self.session.exchange_id, self.symbol, self.timeframe).inc(loaded.len())
        log.info(
            "archive file loaded",
            extra={"job": self.name, "file": file.name, "candles": loaded.len(), "pages": len(pages)},
        )
        return loaded

    def _pages(
        self, file: ArchiveFile, digest: str, csv: bytes, times: pl.Series
    ) -> list[tuple[RawSnapshot, pl.Series]]:
        """The file's RAW pages, each with the open times of its candles inside the range."""
        parts = split_lines(csv, self.part_bytes)
        lo, hi = max(file.start_ms, self.start_ms), min(file.end_ms, self.end_ms) - 1
        fetched_at = datetime.now(UTC)
        offset, row = 0, 0
        pages: list[tuple[RawSnapshot, pl.Series]] = []
        for index, part in enumerate(parts):
            start, offset = offset, offset + len(part)
            lines = part.count(b"\n") + (0 if part.endswith(b"\n") else 1)
            if index == 0 and has_header(part):
                lines -= 1
            window = times.slice(row, lines)
            inside = window.filter((window >= lo) & (window <= hi))
            row += lines
            if inside.is_empty():
                continue
            snapshot = RawSnapshot(
                schema_version=2,
                native=[
                    archive_part_call(
                        ARCHIVE_KLINES_METHOD,
                        [self.symbol, self.timeframe, file.name],
                        file,
                        digest,
                        part,
                        index,
                        len(parts),
                        start,
                    )
                ],
                dataset=Dataset.OHLCV,
                exchange=self.session.exchange_id,
                symbol=self.symbol,
                timeframe=self.timeframe,
                fetched_at=fetched_at,
                request={"source": ARCHIVE_SOURCE, "file": file.name, "sha256": digest, "part": index},
                payload=None,
                first_ts=int(inside[0]),
                last_ts=int(inside[-1]),
                final=True,
            )
            pages.append((snapshot, inside))
        return pages

    def _in_missing_days(self, start: int, end: int) -> bool:
        merged: list[list[int]] = []
        for day_start, day_end in sorted(self.missing_days):
            if merged and day_start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], day_end)
            else:
                merged.append([day_start, day_end])
        return any(lo <= start and end < hi for lo, hi in merged)

    async def _record_holes(self, timestamps: pl.Series) -> None:
        """Holes inside the file and between it and the file before (not before the first candle:
        that is the market's start, as for REST)."""
        tf_ms = timeframe_ms(self.timeframe)
        for start, end in holes_in(timestamps, tf_ms, self._expected_ts):
            if self._in_missing_days(start, end):
                continue  # days the archive lacks: REST reads them, and finds their holes if any
            KNOWN_GAPS.labels(self.session.exchange_id, self.symbol, self.timeframe).inc()
            await self._publish_gap(start, end, (end - start) // tf_ms + 1)
        if not timestamps.is_empty():
            self._expected_ts = int(timestamps[-1]) + tf_ms


@dataclass
class ArchiveThenRest:
    """An ohlcv job with `source: binance-archive`: on its first catch-up, the archives from its
    checkpoint (or `since`) as far as they reach, missing days by REST; then the REST job from
    where the archives stopped, polling as any ohlcv job does. A restart goes through the
    archives again from the checkpoint: finished files are skipped unread."""

    rest: OhlcvJob
    archive_url: str
    market: str = "spot"
    now_ms: Callable[[], int] = field(default=lambda: int(datetime.now(UTC).timestamp() * 1000))
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
        tf_ms = timeframe_ms(rest.timeframe)
        start = await rest.checkpoints.next_since(rest.key) or rest.since_ms
        end = rest.until_ms + 1 if rest.until_ms is not None else self.now_ms()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
            job = ArchiveJob(
                session=rest.session,
                fetcher=ArchiveFetcher(self.archive_url, http),
                checkpoints=rest.checkpoints,
                symbol=rest.symbol,
                timeframe=rest.timeframe,
                start_ms=start,
                end_ms=end,
                market=self.market,
                report=self.report,
                now_ms=self.now_ms,
            )
            reached = await job.run()
        for fill in job.rest_fills(rest):
            await fill.catch_up(self.now_ms)
        if reached > start:
            # REST goes on where the archives stopped (a candle boundary: files are whole days).
            await rest.checkpoints.advance(rest.key, reached, reached - tf_ms)
        return self.report.candles
