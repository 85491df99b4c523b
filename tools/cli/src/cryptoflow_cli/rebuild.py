"""`cryptoflow rebuild --from-lake`: silver and the warehouse again, from the lake's bronze objects alone.

The streams may have expired, so nothing here reads one. Each bronze object goes through the live
path's own code: the transformer's `transform_object` (checks, bounds, quarantine, silver keys) and
`derive` (resampled candles, indicators, anomalies), the loader's `read_batch` (silver/ prefix,
checksum, table metadata), `load_batch` (ledger, series, upsert) and `load_quarantine`. Design and
rationale: docs/decisions/0038-rebuild-from-the-lake.md. In short:

* **What is rebuilt**: what the lake-writer wrote. Its objects are named by their content:
  `bronze/<dataset>/exchange=…/symbol=…/date=…/<first_ts>-<sha256(NDJSON)[:24]>.ndjson.zst`, one
  partition each, the snapshots in its order. An object is rebuilt only if its name is the
  digest of its NDJSON and its RawSnapshots are laid out as `build_objects` lays them out under
  that key; anything else (a stray file, a conflicting writer's object, bytes replaced, not zstd,
  not NDJSON of RawSnapshots) was never announced by the lake-writer, and is refused.
* **Refused objects** are skipped, not fatal: each becomes a DeadLetter (stage transformer; a batch
  the database rejects: stage warehouse-loader) published to DLQ when NATS is reachable, and is
  listed with its reason in any case; the exit status is 3 when anything was refused.
* **Order**: objects are rebuilt per market (dataset·exchange·symbol) in time order — the order the
  lake-writer wrote them, in which a transformer taking one object at a time derives them — and
  markets run concurrently (workers, processes). Derived series start from empty checkpoints kept
  in memory (never the live KV bucket), so every derived batch is the one that transformer made.
  Anomalies are recomputed but not republished: they are events, which consumers received when
  they happened.
* **Durability**: every load commits without waiting for its WAL flush (synchronous_commit off);
  one synchronous commit at the end flushes them all before the rebuild reports success. A crash
  in between loses some loads and their ledger rows together, so running the rebuild again
  restores them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from queue import Empty
from typing import Any, Protocol, TextIO

import asyncpg
import nats
import zstandard
from cryptoflow_contracts import BatchReady, Dataset, DeadLetter, ObjectWritten, RawSnapshot, Stage
from cryptoflow_lake_writer import BronzeObject, partition_date, partition_prefix
from cryptoflow_runtime import Lake, PoisonMessageError, ensure_streams, load_settings, msg_id_headers, open_lake
from cryptoflow_runtime.dead_letters import permanent
from cryptoflow_runtime.lake import sha256_hex
from cryptoflow_runtime.nats_auth import connect_options, server_urls
from cryptoflow_runtime.postgres import create_pool
from cryptoflow_runtime.progress import Progress
from cryptoflow_runtime.redaction import redact, redact_text
from cryptoflow_runtime.settings import ServiceSettings
from cryptoflow_transformer import (
    DerivedConfig,
    MemoryStateStore,
    TransformerSettings,
    configure_bounds,
    derive,
    transform_object,
)
from cryptoflow_warehouse_loader import (
    BATCH_ERRORS,
    TABLES,
    BatchShapeError,
    Warehouse,
    WarehouseLoaderSettings,
    load_batch,
    load_quarantine,
    read_batch,
    refresh_marts,
)
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pydantic import ValidationError

from .replay import ReplayFilter

FOUND_BY = "cryptoflow rebuild --from-lake"
DEFAULT_CONCURRENCY = 4  # markets at once per process (their database round trips overlap)
MAX_DEFAULT_PROCESSES = 4  # processes by default: one per CPU, up to this
EXIT_REFUSED = 3  # rebuilt, but some objects or batches were refused (listed, dead-lettered)
NATS_CONNECT_TIMEOUT_S = 3.0

# What the lake-writer names an object (services/lake-writer objects.py build_objects).
BRONZE_KEY = re.compile(
    r"^bronze/(?P<dataset>[^/]+)/exchange=(?P<exchange>[^/]+)/symbol=(?P<symbol>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})"
    r"/(?P<first>-?\d+)-(?P<digest>[0-9a-f]{24})\.ndjson\.zst$"
)

# Why an object is refused (DeadLetter details.check, and the summary's grouping).
LAYOUT = "layout"
NOT_ZSTD = "not_zstd"
NAME_NOT_CONTENT = "name_not_content"
NOT_SNAPSHOTS = "not_raw_snapshots"
NOT_LAKE_WRITER = "not_lake_writer_object"
TRANSFORMER = "transformer"
DERIVED = "derived_series"
LOADER = "loader"
CHECKS = {
    LAYOUT: "key not in the lake-writer's layout",
    NOT_ZSTD: "not zstd",
    NAME_NOT_CONTENT: "name does not match content",
    NOT_SNAPSHOTS: "not NDJSON of RawSnapshots",
    NOT_LAKE_WRITER: "not as the lake-writer writes",
    TRANSFORMER: "refused by the transformer",
    DERIVED: "derived series failed",
    LOADER: "rejected by the loader",
}


class Refused(Exception):
    """The object (or one of its batches) cannot be rebuilt; `check` says which check failed."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(reason)
        self.check = check
        self.reason = reason


@dataclass(frozen=True, order=True)
class BronzeKey:
    """A key in the lake-writer's layout, ordered as the lake-writer wrote a market's objects."""

    first_ts: int
    digest: str
    key: str = field(compare=False)
    dataset: str = field(compare=False)
    exchange: str = field(compare=False)
    symbol: str = field(compare=False)

    @classmethod
    def parse(cls, key: str) -> BronzeKey | None:
        match = BRONZE_KEY.match(key)
        if match is None:
            return None
        return cls(
            first_ts=int(match["first"]),
            digest=match["digest"],
            key=key,
            dataset=match["dataset"],
            exchange=match["exchange"],
            symbol=match["symbol"],
        )

    @property
    def market(self) -> tuple[str, str, str]:
        return (self.dataset, self.exchange, self.symbol)


def plan(keys: Iterable[str]) -> tuple[list[list[BronzeKey]], list[str]]:
    """Bronze keys → per market, in time order (largest market first, to balance the workers);
    and the keys outside the lake-writer's layout."""
    markets: dict[tuple[str, str, str], list[BronzeKey]] = {}
    strays = []
    for key in keys:
        parsed = BronzeKey.parse(key)
        if parsed is None:
            strays.append(key)
        else:
            markets.setdefault(parsed.market, []).append(parsed)
    groups = [sorted(group) for _, group in sorted(markets.items())]
    groups.sort(key=len, reverse=True)
    return groups, strays


def verified_snapshots(bronze: BronzeKey, data: bytes) -> list[RawSnapshot]:
    """The object's snapshots, if it is exactly what the lake-writer writes under its key; else Refused."""
    try:
        ndjson = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31)
    except zstandard.ZstdError as exc:
        raise Refused(NOT_ZSTD, f"not a zstd object ({exc})") from None
    digest = sha256_hex(ndjson)[:24]
    if digest != bronze.digest:
        raise Refused(
            NAME_NOT_CONTENT,
            f"its name says sha256 {bronze.digest}…, its NDJSON has {digest}…: not written by the lake-writer "
            "(another writer's object under a lake-writer key, or bytes replaced)",
        )
    snapshots = []
    for number, line in enumerate(ndjson.splitlines(), 1):
        if not line:
            continue
        try:
            snapshots.append(RawSnapshot.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "line"
            raise Refused(NOT_SNAPSHOTS, f"line {number} is not a RawSnapshot: {where}: {first['msg']}") from None
    if not snapshots:
        raise Refused(NOT_SNAPSHOTS, "no RawSnapshot in it")
    as_lake_writer_writes(bronze, snapshots)
    return snapshots


def as_lake_writer_writes(bronze: BronzeKey, snapshots: list[RawSnapshot]) -> None:
    """Refused unless the snapshots are laid out as `build_objects` lays them out under this key:
    all of its partition, the key's first_ts their earliest, each event once, in its order.

    Checked on the parsed snapshots, not by serializing them again: the name already proves the
    bytes are the ones named, and a snapshot written before a field was added to RawSnapshot
    reads with the field's default but would not serialize to its old bytes."""
    partition = bronze.key.rsplit("/", 1)[0]
    try:
        found = {partition_prefix("bronze", s.dataset, s.exchange, s.symbol, partition_date(s)) for s in snapshots}
    except (ValueError, OverflowError, OSError) as exc:  # a snapshot the lake-writer cannot store
        raise Refused(NOT_LAKE_WRITER, f"the lake-writer would not store these snapshots: {exc}") from None
    if found != {partition}:
        raise Refused(NOT_LAKE_WRITER, f"snapshots of {', '.join(sorted(found))[:300]}, filed in {partition}")
    first = min((s.first_ts or 0) for s in snapshots)
    if first != bronze.first_ts:
        raise Refused(NOT_LAKE_WRITER, f"its earliest snapshot starts at {first}, its name says {bronze.first_ts}")
    ids = [s.event_id for s in snapshots]
    if len(set(ids)) != len(ids):
        raise Refused(NOT_LAKE_WRITER, "a snapshot is in it twice (the lake-writer keeps one copy per event)")
    if [s.event_id for s in sorted(snapshots, key=lake_writer_order)] != ids:
        raise Refused(NOT_LAKE_WRITER, "its snapshots are not in the lake-writer's order")


def lake_writer_order(snapshot: RawSnapshot) -> tuple[str, int, str]:
    """How `build_objects` orders an object's snapshots (services/lake-writer objects.py)."""
    return (snapshot.timeframe or "", snapshot.first_ts or 0, snapshot.event_id)


class ObjectCache:
    """The lake, remembering the bytes of one object's reads and writes: the transformer re-reads
    the bronze object it was handed, and the loader the silver files just written (whose puts
    were durable, and refused any other bytes), without going back to the store."""

    def __init__(self, lake: Lake) -> None:
        self.inner = lake
        self.url = lake.url
        self._known: dict[str, bytes] = {}

    def remember(self, key: str, data: bytes) -> None:
        self._known[key] = data

    def forget(self) -> None:
        self._known.clear()

    async def put(self, key: str, data: bytes) -> None:
        await self.inner.put(key, data)
        self._known[key] = data

    async def get(self, key: str) -> bytes:
        known = self._known.get(key)
        return known if known is not None else await self.inner.get(key)

    async def exists(self, key: str) -> bool:
        return key in self._known or await self.inner.exists(key)

    async def list(self, prefix: str) -> list[str]:
        return await self.inner.list(prefix)

    async def close(self) -> None:
        self._known.clear()


class LetterBox:
    """DeadLetters of the rebuild: kept for the summary, and published to DLQ when NATS answers
    (connected on the first letter: a rebuild with nothing to refuse never touches NATS)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.nats_url = redact(settings.nats_url)
        self.letters: list[DeadLetter] = []
        self.published = 0
        self.error: str | None = None
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._tried = False

    async def _jetstream(self) -> JetStreamContext | None:
        if not self._tried:
            self._tried = True

            async def quiet(_: Exception) -> None:
                return None

            try:
                nc = await asyncio.wait_for(
                    nats.connect(
                        server_urls(self.settings.nats_url),
                        connect_timeout=NATS_CONNECT_TIMEOUT_S,
                        allow_reconnect=False,
                        # One attempt per server (nats-py retries an initial connect forever with 0).
                        max_reconnect_attempts=1,
                        reconnect_time_wait=0.1,
                        error_cb=quiet,
                        **connect_options(self.settings),  # its identity, inbox and TLS (decision 0036)
                    ),
                    NATS_CONNECT_TIMEOUT_S * 2,
                )
                self._nc = nc
                self._js = nc.jetstream()
                await ensure_streams(self._js)
            except Exception as exc:
                self.error = f"NATS at {self.nats_url} unreachable ({type(exc).__name__}: {exc})"
                self._js = None
        return self._js

    async def send(self, letter: DeadLetter) -> None:
        self.letters.append(letter)
        js = await self._jetstream()
        if js is None:
            return
        try:
            await js.publish(
                letter.subject(), letter.to_json(), headers=msg_id_headers(letter.event_id), stream=letter.STREAM.value
            )
        except Exception as exc:
            self.error = f"publishing to DLQ failed ({type(exc).__name__}: {exc})"
            return
        self.published += 1

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


@dataclass
class RebuildSummary:
    objects: int = 0
    rebuilt: int = 0
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # key, check, reason
    rows: Counter[str] = field(default_factory=Counter)  # table → rows inserted or updated
    batches: Counter[str] = field(default_factory=Counter)  # table → batches loaded
    quarantined_rows: int = 0
    anomalies: int = 0
    letters: int = 0
    letters_published: int = 0
    letters_error: str | None = None
    derived: str = "off"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def merge(self, other: RebuildSummary) -> None:
        """Add a child process's counts (its letters were sent on as they came)."""
        self.rebuilt += other.rebuilt
        self.refused.extend(other.refused)
        self.rows.update(other.rows)
        self.batches.update(other.batches)
        self.quarantined_rows += other.quarantined_rows
        self.anomalies += other.anomalies

    @property
    def rows_written(self) -> int:
        return sum(self.rows.values())

    @property
    def exit_code(self) -> int:
        return EXIT_REFUSED if self.refused else 0

    def lines(self) -> list[str]:
        """The summary: first line `rebuilt N of M bronze object(s) …; refused K: …`."""
        refused = Counter(check for _, check, _ in self.refused)
        head = (
            f"rebuilt {self.rebuilt} of {self.objects} bronze object(s) into silver and the warehouse "
            f"({self.rows_written} row(s) written) in {self.seconds:.1f}s"
        )
        if refused:
            head += f"; refused {len(self.refused)}: " + ", ".join(
                f"{count} {CHECKS.get(check, check)}" for check, count in sorted(refused.items())
            )
        lines = [head]
        tables = ", ".join(
            f"{table} {self.rows[table]} in {self.batches[table]} batch(es)" for table in sorted(self.rows)
        )
        lines.append(f"  rows by table: {tables or 'none'}; quarantined rows: {self.quarantined_rows}")
        lines.append(f"  derived series: {self.derived}; anomalies found: {self.anomalies} (not republished)")
        for key, check, reason in sorted(self.refused):
            lines.append(f"  refused {key}: [{check}] {reason}")
        lines.extend(f"  {note}" for note in self.notes)
        if self.letters:
            if self.letters_published == self.letters:
                lines.append(f"  {self.letters} DeadLetter(s) published to DLQ")
            else:
                lines.append(
                    f"  {self.letters_published} of {self.letters} DeadLetter(s) published to DLQ: "
                    f"{self.letters_error or 'unknown error'}; the list above is their only record"
                )
        return lines


def describe(config: DerivedConfig) -> str:
    if not config.enabled:
        return "off (TRANSFORMER_RESAMPLE_TO / TRANSFORMER_INDICATORS / TRANSFORMER_ANOMALIES unset)"
    parts = []
    if config.resample_to:
        parts.append("resampled " + ",".join(config.resample_to))
    if config.indicators:
        parts.append("indicators")
    if config.anomalies:
        parts.append("anomalies")
    return " + ".join(parts)


class Letters(Protocol):
    async def send(self, letter: DeadLetter) -> None: ...


class ToParent:
    """A child process's letters and progress, sent to the parent (which publishes and shows them)."""

    def __init__(self, queue: Queue[tuple[str, Any]]) -> None:
        self.queue = queue

    async def send(self, letter: DeadLetter) -> None:
        self.queue.put(("letter", letter.to_json()))

    def done(self) -> None:
        self.queue.put(("done", 1))


class Rebuilder:
    """Rebuilds objects, one market at a time per worker, each worker on its own connection."""

    def __init__(
        self,
        lake: Lake,
        config: DerivedConfig,
        letters: Letters,
        summary: RebuildSummary,
        on_done: Callable[[], None],
        out: TextIO,
        run_id: str,
    ) -> None:
        self.lake = lake
        self.config = config
        self.store = MemoryStateStore()
        self.letters = letters
        self.summary = summary
        self.on_done = on_done
        self.out = out
        self.run_id = run_id

    async def markets(self, pool: asyncpg.Pool, groups: list[list[BronzeKey]], workers: int) -> None:
        """Every market of `groups`, `workers` at a time, each on its own connection."""
        queue = list(groups)

        async def worker() -> None:
            async with pool.acquire() as conn:
                # Durable at the end, not per batch (see the module's docstring); reset on release.
                await conn.execute("SET synchronous_commit TO off")
                while queue:
                    await self.market(conn, queue.pop(0))

        # One failing worker (the lake or the database gone) cancels the others.
        async with asyncio.TaskGroup() as group:
            for _ in range(min(workers, len(groups))):
                group.create_task(worker())

    async def market(self, conn: asyncpg.Connection, keys: list[BronzeKey]) -> None:
        """A market's objects in time order; objects of one start time in the order of their fetches."""
        cache = ObjectCache(self.lake)
        index = 0
        while index < len(keys):
            run = [keys[index]]
            while index + len(run) < len(keys) and keys[index + len(run)].first_ts == run[0].first_ts:
                run.append(keys[index + len(run)])
            index += len(run)
            if len(run) == 1:
                await self.one(conn, cache, run[0])
                continue
            read = [(bronze, await self.read(bronze)) for bronze in run]
            read.sort(key=lambda item: fetch_order(item[1]))
            for bronze, found in read:
                await self.one(conn, cache, bronze, found)

    async def read(self, bronze: BronzeKey) -> tuple[bytes, list[RawSnapshot]] | Refused:
        try:
            data = await self.lake.get(bronze.key)
            return data, verified_snapshots(bronze, data)
        except Refused as refused:
            return refused
        except Exception as exc:
            poison = permanent(exc)
            if poison is None:
                raise
            return Refused(TRANSFORMER, str(poison))

    async def one(
        self,
        conn: asyncpg.Connection,
        cache: ObjectCache,
        bronze: BronzeKey,
        found: tuple[bytes, list[RawSnapshot]] | Refused | None = None,
    ) -> None:
        written: ObjectWritten | None = None
        try:
            if found is None:
                found = await self.read(bronze)
            if isinstance(found, Refused):
                raise found
            data, snapshots = found
            # The ObjectWritten the lake-writer announced for it: same key, bytes and ids.
            first = snapshots[0]
            stored = BronzeObject(first.dataset, first.exchange, bronze.key, data, [s.event_id for s in snapshots])
            written = stored.announcement(self.lake.url)
            cache.remember(bronze.key, data)
            if await self.transform(conn, cache, written):  # none of its batches rejected either
                self.summary.rebuilt += 1
        except Refused as refused:
            await self.refuse(bronze.key, refused, written)
        finally:
            cache.forget()
            self.on_done()

    async def transform(self, conn: asyncpg.Connection, cache: ObjectCache, written: ObjectWritten) -> bool:
        """What the transformer's handler and then the loader do with one ObjectWritten; False
        when the loader rejected one of its batches."""
        try:
            result = await transform_object(cache, written)
        except Exception as exc:
            raise as_refusal(exc, TRANSFORMER) from None
        loaded = True
        if result.quarantine is not None:
            loaded &= await self.quarantine(conn, cache, result.quarantine)
        if result.batch is not None:
            loaded &= await self.load(conn, cache, result.batch)
        if self.config.enabled and written.dataset is Dataset.OHLCV and result.silver is not None:
            try:
                outputs = await derive(cache, self.store, self.config, result.silver, written)
            except Exception as exc:
                raise as_refusal(exc, DERIVED) from None
            for batch in outputs.batches:
                loaded &= await self.load(conn, cache, batch)
            self.summary.anomalies += len(outputs.anomalies)
        return loaded

    async def load(self, conn: asyncpg.Connection, cache: ObjectCache, batch: BatchReady) -> bool:
        """The loader's `on_batch`, without the Loaded event: its checks, then one transaction."""
        table = TABLES.get(batch.table)
        try:
            if table is None:
                raise PoisonMessageError(f"no warehouse table {batch.table!r} (known: {', '.join(TABLES)})")
            frame = await read_batch(cache, batch)
            result = await load_batch(conn, table, frame, batch, run_id=self.run_id)
        except (*BATCH_ERRORS, BatchShapeError) as exc:
            await self.reject(batch, f"database rejected batch: {type(exc).__name__}: {exc}")
            return False
        except Exception as exc:
            poison = permanent(exc)
            if poison is None:
                raise
            await self.reject(batch, str(poison))
            return False
        self.summary.rows[batch.table] += result.inserted + result.updated
        self.summary.batches[batch.table] += 1
        return True

    async def quarantine(self, conn: asyncpg.Connection, cache: ObjectCache, letter: DeadLetter) -> bool:
        """The loader's `on_dead_letter`: the quarantined rows into `quarantine` (the letter itself
        was published when the object was first transformed, and is not published again)."""
        try:
            self.summary.quarantined_rows += await load_quarantine(conn, cache, letter)
        except BATCH_ERRORS as exc:
            await self.reject(letter, f"database rejected DeadLetter: {type(exc).__name__}: {exc}")
            return False
        except Exception as exc:
            poison = permanent(exc)
            if poison is None:
                raise
            await self.reject(letter, str(poison))
            return False
        return True

    async def reject(self, event: BatchReady | DeadLetter, reason: str) -> None:
        """A batch (or quarantine letter) the loader refuses: dead-lettered as the live loader
        would, and the rebuild goes on."""
        key = event.key if isinstance(event, BatchReady) else str(event.details.get("quarantine_key", ""))
        self.summary.refused.append((key, LOADER, reason))
        print(f"refused {key}: [{LOADER}] {reason}", file=self.out, flush=True)
        await self.letters.send(
            DeadLetter(
                stage=Stage.WAREHOUSE_LOADER,
                dataset=event.dataset,
                reason=reason,
                error_type="BatchRejected" if isinstance(event, BatchReady) else "QuarantineRejected",
                source_event_id=event.event_id,
                payload=event.to_json().decode(),
                details={"found_by": FOUND_BY, "key": key},
            )
        )

    async def refuse(self, key: str, refused: Refused, written: ObjectWritten | None = None) -> None:
        self.summary.refused.append((key, refused.check, refused.reason))
        print(f"refused {key}: [{refused.check}] {refused.reason}", file=self.out, flush=True)
        await self.letters.send(refusal_letter(self.lake.url, key, refused, written))


def fetch_order(found: tuple[bytes, list[RawSnapshot]] | Refused) -> tuple[int, str]:
    """Objects starting at the same time: the earlier fetch was written (and derived) first."""
    if isinstance(found, Refused):
        return (0, "")
    return (int(min(s.fetched_at for s in found[1]).timestamp() * 1_000_000), found[1][0].event_id)


def as_refusal(exc: Exception, check: str) -> Refused:
    """A permanent failure of the live code as a refusal of the object; anything else (the lake or
    the database unavailable) stops the rebuild."""
    if isinstance(exc, Refused):
        return exc
    poison = permanent(exc)
    if poison is None:
        raise exc
    return Refused(check, str(poison))


def refusal_letter(lake_url: str, key: str, refused: Refused, written: ObjectWritten | None) -> DeadLetter:
    parsed = BronzeKey.parse(key)
    dataset = parsed.dataset if parsed is not None else key.split("/")[1] if key.count("/") > 1 else ""
    details: dict[str, Any] = {"found_by": FOUND_BY, "check": refused.check, "source_key": key, "lake_url": lake_url}
    if written is not None:
        details.update({"sha256": written.sha256, "bytes": written.bytes})
    return DeadLetter(
        stage=Stage.TRANSFORMER,
        dataset=Dataset(dataset) if dataset in Dataset else None,
        reason=f"{key}: {refused.reason}",
        error_type="RebuildRefused",
        source_event_id=written.event_id if written is not None else None,
        details=details,
    )


def selected(keys: Iterable[str], where: ReplayFilter) -> list[str]:
    return [k for k in keys if where.admits_key(k) and (where.exchange == "*" or f"/exchange={where.exchange}/" in k)]


def shares(groups: list[list[BronzeKey]], count: int) -> list[list[list[BronzeKey]]]:
    """Markets dealt to `count` processes, largest first to the least loaded (by objects)."""
    dealt: list[list[list[BronzeKey]]] = [[] for _ in range(max(1, min(count, len(groups))))]
    loads = [0] * len(dealt)
    for group in sorted(groups, key=len, reverse=True):
        least = loads.index(min(loads))
        dealt[least].append(group)
        loads[least] += len(group)
    return dealt


def default_processes() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_PROCESSES))


async def rebuild(
    where: ReplayFilter,
    out: TextIO = sys.stderr,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    processes: int | None = None,
) -> RebuildSummary:
    """Bronze → silver → warehouse, with no stream at all (DLQ aside); what was done and refused.

    Markets are dealt to `processes` processes (this one and children), each rebuilding its
    markets `concurrency` at a time; a market is rebuilt by one worker, in time order.
    """
    started = time.perf_counter()
    transformer = load_settings(TransformerSettings)
    configure_bounds(transformer.bounds())
    config = transformer.derived()
    loader_settings = load_settings(WarehouseLoaderSettings)
    workers = max(1, concurrency)
    lake = await open_lake(transformer.lake_url, transformer.s3_endpoint_url)
    warehouse = Warehouse(loader_settings.model_copy(update={"pool_size": workers + 1}))
    letters = LetterBox(transformer)
    summary = RebuildSummary(derived=describe(config))
    children: list[SpawnProcess] = []
    try:
        await warehouse.open()  # the schema at head (migrations) before any child connects
        prefix = "bronze/" if where.dataset == "*" else f"bronze/{where.dataset}/"
        keys = selected(await lake.list(prefix), where)
        groups, strays = plan(keys)
        summary.objects = len(keys)
        progress = Progress(len(keys), out, "bronze objects")
        done = 0

        def on_done() -> None:
            nonlocal done
            done += 1
            progress.show(done)

        run_id = f"rebuild-{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}"
        rebuilder = Rebuilder(lake, config, letters, summary, on_done, out, run_id)
        for key in strays:
            await rebuilder.refuse(
                key, Refused(LAYOUT, "not <first_ts>-<sha256[:24]>.ndjson.zst in a bronze partition")
            )
            on_done()
        mine, *theirs = shares(groups, processes or default_processes()) if groups else [[]]
        context = multiprocessing.get_context("spawn")  # Polars' threads do not survive fork()
        queue: Queue[tuple[str, Any]] = context.Queue()
        for share in theirs:
            child = context.Process(
                target=child_main,
                args=([[b.key for b in group] for group in share], queue, workers, run_id),
                name="cryptoflow-rebuild",
                daemon=True,
            )
            child.start()
            children.append(child)

        async def from_children() -> None:
            finished = 0
            while finished < len(children):
                try:
                    kind, value = await asyncio.to_thread(queue.get, True, 0.2)
                except Empty:
                    if any(c.exitcode not in (None, 0) for c in children):
                        raise RuntimeError("a rebuild process died") from None
                    continue
                if kind == "done":
                    on_done()
                elif kind == "letter":
                    await letters.send(DeadLetter.model_validate_json(value))
                elif kind == "summary":
                    summary.merge(value)
                    finished += 1
                else:
                    raise RuntimeError(f"a rebuild process failed: {value}")

        async with asyncio.TaskGroup() as group:
            if mine:
                group.create_task(rebuilder.markets(warehouse.pool, mine, workers))
            if children:
                group.create_task(from_children())
        progress.show(done, final=True)
        async with warehouse.pool.acquire() as conn:
            # A synchronous commit that writes WAL flushes everything committed before it, by
            # any session: every load of the rebuild is durable from here on.
            async with conn.transaction():
                await conn.execute("SELECT txid_current()")
            if summary.rows_written:
                try:
                    await refresh_marts(conn)
                except asyncpg.PostgresError as exc:
                    summary.notes.append(
                        f"marts not refreshed ({type(exc).__name__}: {exc}); the loader refreshes them"
                    )
    finally:
        for child in children:  # only ours; still running only when the rebuild stopped early
            if child.is_alive():
                child.terminate()
            child.join(5)
        summary.letters = len(letters.letters)
        summary.letters_published = letters.published
        summary.letters_error = letters.error
        summary.seconds = time.perf_counter() - started
        await letters.close()
        await warehouse.close()
        await lake.close()
    return summary


def child_main(markets: list[list[str]], queue: Queue[tuple[str, Any]], workers: int, run_id: str) -> None:
    """A child process: rebuild these markets (keys in order), report to the parent over `queue`."""
    try:
        summary = asyncio.run(child_rebuild(markets, queue, workers, run_id))
    except BaseException as exc:
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        queue.put(("failed", f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    queue.put(("summary", summary))


async def child_rebuild(
    markets: list[list[str]], queue: Queue[tuple[str, Any]], workers: int, run_id: str
) -> RebuildSummary:
    transformer = load_settings(TransformerSettings)
    configure_bounds(transformer.bounds())
    loader_settings = load_settings(WarehouseLoaderSettings)
    lake = await open_lake(transformer.lake_url, transformer.s3_endpoint_url)
    pool = await create_pool(loader_settings.database_url, max_size=workers)
    summary = RebuildSummary()
    to_parent = ToParent(queue)
    groups = [[bronze for key in keys if (bronze := BronzeKey.parse(key)) is not None] for keys in markets]
    try:
        rebuilder = Rebuilder(lake, transformer.derived(), to_parent, summary, to_parent.done, sys.stderr, run_id)
        await rebuilder.markets(pool, groups, workers)
    finally:
        await pool.close()
        await lake.close()
    return summary


def run(
    filter_text: str | None,
    concurrency: int = DEFAULT_CONCURRENCY,
    processes: int | None = None,
    *,
    local_stack: bool = False,
) -> int:
    """The `rebuild` command: 0 when everything was rebuilt, 3 when some objects or batches were
    refused (and skipped), 1 when the rebuild could not go on, 2 for a bad filter.

    `local_stack`: rebuilding the lake of a running `cryptoflow up`, whose transformer derives
    what up.py's DERIVED_DEFAULTS say unless the environment said otherwise: so does the rebuild
    (the summary names what it derived)."""
    if local_stack:
        from .up import DERIVED_DEFAULTS

        for name, value in DERIVED_DEFAULTS.items():
            os.environ.setdefault(name, value)
    try:
        where = ReplayFilter.parse(filter_text)
    except ValueError as exc:
        print(f"cryptoflow rebuild: error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(rebuild(where, concurrency=concurrency, processes=processes))
    except Exception as exc:
        while isinstance(exc, ExceptionGroup):  # from the workers' task groups
            exc = exc.exceptions[0]
        print(f"cryptoflow rebuild: error: stopped by {type(exc).__name__}: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    print("\n".join(summary.lines()))
    return summary.exit_code
