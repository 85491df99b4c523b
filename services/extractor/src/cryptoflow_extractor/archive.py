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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import aiohttp
import ccxt
from cryptoflow_contracts import (
    Dataset,
    DeadLetter,
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
    csv_member,
    expected_digest,
    kline_rows,
    split_lines,
    verify_checksum,
)

from .checkpoints import CheckpointStore
from .gaps import holes
from .metrics import ARCHIVE_FILES, CANDLES_PUBLISHED, KNOWN_GAPS
from .session import ExchangeSession

log = logging.getLogger(__name__)

ARCHIVE_SOURCE = "binance-archive"
DEFAULT_ARCHIVE_URL = "https://data.binance.vision"
# CSV per RAW page: with its parsed payload beside it, well under NATS's 1 MiB message limit.
PART_BYTES = 200_000
DAY_MS = 86_400_000
FETCH_ATTEMPTS = 4

Period = Literal["monthly", "daily"]
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
    """One zip of the tree: `data/spot/<period>/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-<label>.zip`."""

    market: str  # spot, futures/um, futures/cm
    period: Period
    symbol_id: str
    interval: str
    start_ms: int
    end_ms: int  # exclusive

    @property
    def label(self) -> str:
        moment = datetime.fromtimestamp(self.start_ms / 1000, UTC)
        return moment.strftime("%Y-%m" if self.period == "monthly" else "%Y-%m-%d")

    @property
    def name(self) -> str:
        return f"{self.symbol_id}-{self.interval}-{self.label}.zip"

    @property
    def path(self) -> str:
        return f"/data/{self.market}/{self.period}/klines/{self.symbol_id}/{self.interval}/{self.name}"

    def days(self) -> list[ArchiveFile]:
        """A month's daily files."""
        return [
            ArchiveFile(self.market, "daily", self.symbol_id, self.interval, start, start + DAY_MS)
            for start in range(self.start_ms, self.end_ms, DAY_MS)
        ]


def plan_files(
    market: str, symbol_id: str, interval: str, start_ms: int, end_ms: int, now_ms: int
) -> tuple[list[ArchiveFile], int]:
    """The files that cover [start, end) as far as the archives reach, and where they stop (REST
    takes over there). Monthly files for months ended before this one, daily files for this
    month's ended days."""
    files: list[ArchiveFile] = []
    this_month = _month_start(now_ms)
    cursor = _month_start(start_ms)
    while cursor < min(end_ms, this_month):
        files.append(ArchiveFile(market, "monthly", symbol_id, interval, cursor, _next_month(cursor)))
        cursor = _next_month(cursor)
    day = max(cursor, start_ms - start_ms % DAY_MS)
    while day < end_ms and day + DAY_MS <= now_ms:
        files.append(ArchiveFile(market, "daily", symbol_id, interval, day, day + DAY_MS))
        day += DAY_MS
    reached = max(start_ms, min(end_ms, files[-1].end_ms)) if files else start_ms
    return files, reached


@dataclass
class ArchiveReport:
    """What one run did, file by file."""

    outcomes: dict[str, FileOutcome] = field(default_factory=dict)
    candles: int = 0
    details: dict[str, str] = field(default_factory=dict)

    def names(self, outcome: FileOutcome) -> list[str]:
        return sorted(name for name, seen in self.outcomes.items() if seen == outcome)


class ArchiveFetcher:
    """GETs against the archive host, retried on network errors and 5xx; None for a 404."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http

    async def get(self, path: str) -> bytes | None:
        delay = 0.2
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                async with self.http.get(self.base_url + path) as response:
                    if response.status == 404:
                        return None
                    if response.status < 500 and response.status != 429:
                        response.raise_for_status()
                        return await response.read()
                    error = f"HTTP {response.status}"
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                error = repr(exc)
            if attempt == FETCH_ATTEMPTS:
                raise ArchiveError(f"GET {path}: {error} after {FETCH_ATTEMPTS} attempts")
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
        files, reached = plan_files(
            self.market, self.symbol_id, self.timeframe, self.start_ms, self.end_ms, self.now_ms()
        )
        for file in files:
            outcome = await self.load(file)
            if outcome == "missing" and file.period == "monthly":
                # Not every month has its zip: its days may.
                del self.report.outcomes[file.name]
                for day in file.days():
                    if day.end_ms > self.start_ms and day.start_ms < self.end_ms:
                        await self.load(day)
        return reached

    async def load(self, file: ArchiveFile) -> FileOutcome:
        outcome = await self._load(file)
        self.report.outcomes[file.name] = outcome
        ARCHIVE_FILES.labels(self.session.exchange_id, self.timeframe, outcome).inc()
        if outcome in ("loaded", "skipped", "replaced"):
            self.files_done.append(file)
        elif outcome == "missing" and file.period == "daily":
            self.missing_days.append((max(file.start_ms, self.start_ms), min(file.end_ms, self.end_ms)))
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
            digest = verify_checksum(file.name, content, checksum.decode("utf-8", errors="replace"))
            csv = csv_member(content)
            timestamps = await self._publish(file, digest, csv)
        except ChecksumMismatch as exc:
            await self._dead_letter(file, exc, {"expected_sha256": exc.expected, "actual_sha256": exc.actual})
            self.report.details[file.name] = str(exc)
            return "corrupt"
        except ArchiveError as exc:
            await self._dead_letter(file, exc, {})
            self.report.details[file.name] = str(exc)
            return "corrupt"
        await self._record_holes(timestamps)
        candles = len(timestamps)
        replaced = state is not None
        await self.checkpoints.put_state(
            key,
            {
                "sha256": digest,
                "candles": candles,
                "last_ts": timestamps[-1] if timestamps else None,
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

    async def _publish(self, file: ArchiveFile, digest: str, csv: bytes) -> list[int]:
        """Every part of the CSV as a RAW page; returns the open times of the candles published."""
        parts = split_lines(csv, self.part_bytes)
        lo, hi = max(file.start_ms, self.start_ms), min(file.end_ms, self.end_ms) - 1
        published: list[int] = []
        fetched_at = datetime.now(UTC)
        offset = 0
        pending: list[Awaitable[None]] = []
        for index, part in enumerate(parts):
            start, offset = offset, offset + len(part)
            rows = [row for row in kline_rows(part) if lo <= row[0] <= hi]
            if not rows:
                continue
            snapshot = RawSnapshot(
                schema_version=2,
                native=[self._native(file, digest, part, index, len(parts), start)],
                dataset=Dataset.OHLCV,
                exchange=self.session.exchange_id,
                symbol=self.symbol,
                timeframe=self.timeframe,
                fetched_at=fetched_at,
                request={"source": ARCHIVE_SOURCE, "file": file.name, "sha256": digest, "part": index},
                payload=rows,
                first_ts=rows[0][0],
                last_ts=rows[-1][0],
                final=True,
            )
            pending.append(self.session.publisher.snapshot(snapshot))
            published += [row[0] for row in rows]
        # All of a file's pages in flight together; its checkpoint only after every one is acked.
        await asyncio.gather(*pending)
        CANDLES_PUBLISHED.labels(self.session.exchange_id, self.symbol, self.timeframe).inc(len(published))
        log.info(
            "archive file loaded",
            extra={"job": self.name, "file": file.name, "candles": len(published), "pages": len(pending)},
        )
        return published

    async def _record_holes(self, timestamps: list[int]) -> None:
        """Holes inside the file and between it and the file before (not before the first candle:
        that is the market's start, as for REST)."""
        tf_ms = timeframe_ms(self.timeframe)
        for start, end in holes(timestamps, tf_ms, self._expected_ts):
            KNOWN_GAPS.labels(self.session.exchange_id, self.symbol, self.timeframe).inc()
            await self.session.publisher.gap(
                KnownGap(
                    exchange=self.session.exchange_id,
                    symbol=self.symbol,
                    dataset=Dataset.OHLCV,
                    timeframe=self.timeframe,
                    start_ts=start,
                    end_ts=end,
                    missing=(end - start) // tf_ms + 1,
                    detected_at=datetime.now(UTC),
                )
            )
        if timestamps:
            self._expected_ts = timestamps[-1] + tf_ms

    def _native(self, file: ArchiveFile, digest: str, part: bytes, index: int, parts: int, start: int) -> NativeCall:
        return NativeCall(
            ccxt_version=ccxt.__version__,
            method=ARCHIVE_KLINES_METHOD,
            args=[self.symbol, self.timeframe, file.name],
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

    async def _dead_letter(self, file: ArchiveFile, exc: Exception, details: dict[str, str]) -> None:
        log.error("archive file refused", extra={"job": self.name, "file": file.name, "error": str(exc)})
        await self.session.publisher.dead_letter(
            DeadLetter(
                stage=Stage.EXTRACTOR,
                dataset=Dataset.OHLCV,
                reason=str(exc),
                error_type=type(exc).__name__,
                payload=file.path,
                details={
                    "exchange": self.session.exchange_id,
                    "symbol": self.symbol,
                    "source": ARCHIVE_SOURCE,
                    "file": file.name,
                    **details,
                },
            )
        )
