"""Silver compaction: a closed partition's batch files rewritten as one file, committed by manifest.

Per partition, in this order (decision 0050):

1. sweep: once the latest manifest is older than the grace period, delete what it superseded —
   replaced batch files, compacted files it does not name (older generations, or a compaction that
   lost a race, once that file is itself older than the grace), and older manifests;
2. compact a closed partition (its day ended `older_than` ago) that has batch files no manifest
   covers: read every live file, write one Parquet file under `_compacted/` holding every row
   (each version of a key, with its lineage), sorted by the table's key, then commit the next
   manifest generation with a never-overwrite put. Until that put readers see the old files; after
   it, the new one. Rows are neither deduplicated nor changed: readers decide which version of a
   key wins exactly as before.

Only `silver/` is touched: bronze is never compacted, rewritten or deleted.
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import polars as pl
from cryptoflow_contracts import SILVER_SCHEMA_VERSION
from cryptoflow_contracts.silver import SCHEMA_VERSION_METADATA_KEY, TABLE_METADATA_KEY, TABLES, SilverTable

from ..lake import MaintainedLake, ObjectConflictError, ObjectMissingError, sha256_hex
from .frames import ROW, SILVER_KEY, WRITTEN_NS, file_metadata, read_file_rows
from .live_files import SILVER_PREFIX, LiveSilverFile, PartitionListing, group_partitions, live_in_partition
from .manifest import CompactedFile, Manifest, compacted_generation, compacted_key, read_manifest

log = logging.getLogger(__name__)

DEFAULT_OLDER_THAN = timedelta(days=1)
DEFAULT_GRACE = timedelta(hours=1)
# Row groups of ~128k rows: large enough for scans to read few, small enough that a query on a
# key range skips most of a big partition by the groups' min/max statistics.
DEFAULT_ROW_GROUP_ROWS = 131_072
COMPACTED_METADATA_KEY = "cryptoflow.compacted_generation"


class CompactionRefusedError(ValueError):
    """A partition that cannot be compacted as it is (mixed tables, unknown table)."""


@dataclass
class CompactionReport:
    partitions_seen: int = 0
    partitions_compacted: int = 0
    files_replaced: int = 0
    rows_written: int = 0
    files_deleted: int = 0
    lost_races: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # partition → why

    def summary(self) -> str:
        text = (
            f"compacted {self.partitions_compacted} of {self.partitions_seen} partition(s): "
            f"{self.files_replaced} file(s) into {self.partitions_compacted} ({self.rows_written} row(s)); "
            f"deleted {self.files_deleted} superseded object(s)"
        )
        if self.lost_races:
            text += f"; {self.lost_races} partition(s) committed by another compactor first"
        if self.refused:
            text += f"; refused {len(self.refused)}: " + "; ".join(f"{p}: {why}" for p, why in self.refused.items())
        return text


def partition_day(partition: str) -> date | None:
    value = partition.rpartition("/date=")[2]
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def is_closed(partition: str, now: datetime, older_than: timedelta) -> bool:
    """Its day ended at least `older_than` ago (late data may still come; the next run takes it)."""
    day = partition_day(partition)
    if day is None:
        return False
    day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return day_end + older_than <= now


def table_of(files: list[bytes], manifest: Manifest | None) -> SilverTable:
    """The one silver table the files (and the partition's earlier compactions) belong to."""
    names = {manifest.table} if manifest is not None else set()
    names.update(file_metadata(data).get(TABLE_METADATA_KEY, "") for data in files)
    if len(names) != 1:
        raise CompactionRefusedError(f"files of several tables: {sorted(names)}")
    name = names.pop()
    if name not in TABLES:
        raise CompactionRefusedError(f"files of unknown table {name!r}")
    return TABLES[name]


@dataclass(frozen=True)
class Compactor:
    lake: MaintainedLake
    older_than: timedelta = DEFAULT_OLDER_THAN
    grace: timedelta = DEFAULT_GRACE
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS

    async def run(self, prefix: str = SILVER_PREFIX, now: datetime | None = None) -> CompactionReport:
        """Sweep and compact every partition under `prefix` (within `silver/`)."""
        if not prefix.startswith(SILVER_PREFIX):
            raise ValueError(f"compaction works on silver/ only, not {prefix!r}")
        moment = now or datetime.now(UTC)
        report = CompactionReport()
        partitions, _ = group_partitions(await self.lake.list_written(prefix))
        for listing in partitions.values():
            report.partitions_seen += 1
            latest = listing.latest_manifest
            manifest = await read_manifest(self.lake, latest.key) if latest is not None else None
            report.files_deleted += await self.sweep(listing, manifest, moment)
            if not is_closed(listing.partition, moment, self.older_than):
                continue
            try:
                await self.compact(listing, manifest, moment, report)
            except CompactionRefusedError as exc:
                report.refused[listing.partition] = str(exc)
                log.warning("silver partition not compacted", extra={"partition": listing.partition, "why": str(exc)})
            except ObjectMissingError:
                # Another compactor committed a newer generation and swept what this one was
                # reading (a grace shorter than a compaction): that partition is done already.
                report.lost_races += 1
        return report

    async def sweep(self, listing: PartitionListing, manifest: Manifest | None, now: datetime) -> int:
        """Delete what the latest manifest superseded, once it is older than the grace period."""
        if manifest is None or manifest.created_at + self.grace > now:
            return 0
        live_compacted = {f.key for f in manifest.files}
        grace_ns = int((now - self.grace).timestamp() * 1e9)
        doomed = [obj.key for obj in listing.batch_files if obj.key in manifest.replaced]
        # A compacted file of a later generation than the latest manifest's may be a compaction in
        # progress: it goes only once it is older than the grace (the compactor died). Of the
        # latest generation or an earlier one, it was superseded, or lost the race to commit.
        doomed += [
            obj.key
            for obj in listing.compacted_files
            if obj.key not in live_compacted
            and (compacted_generation(obj.key) <= manifest.generation or obj.written_ns <= grace_ns)
        ]
        doomed += [obj.key for generation, obj in listing.manifests.items() if generation < manifest.generation]
        for key in doomed:
            if not key.startswith(SILVER_PREFIX):  # never anything else, whatever a manifest says
                raise AssertionError(f"compaction would delete {key!r} outside silver/")
            await self.lake.delete(key)
        if doomed:
            log.info("superseded silver files deleted", extra={"partition": listing.partition, "files": len(doomed)})
        return len(doomed)

    async def compact(
        self, listing: PartitionListing, manifest: Manifest | None, now: datetime, report: CompactionReport
    ) -> None:
        live = live_in_partition(listing, manifest)
        uncovered = [f for f in live if not f.compacted]
        if not uncovered or (manifest is None and len(uncovered) < 2):
            return  # already one file
        stored = {f.key: await self.lake.get(f.key) for f in live}
        table = table_of([stored[f.key] for f in uncovered], manifest)
        shas = {f.key: sha256_hex(stored[f.key]) for f in uncovered}
        generation = (manifest.generation if manifest is not None else 0) + 1
        # Polars in a thread: the loader runs compaction beside its loads, on one event loop.
        rows, data = await asyncio.to_thread(self._rewrite, live, stored, table, generation)
        key = compacted_key(listing.partition, generation, sha256_hex(data))
        await self.lake.put(key, data)
        committed = Manifest(
            partition=listing.partition,
            generation=generation,
            table=table.name,
            created_at=now,
            files=(CompactedFile(key, sha256_hex(data), rows.height),),
            replaced={**(manifest.replaced if manifest is not None else {}), **shas},
        )
        try:
            await self.lake.put(committed.key, committed.to_json())
        except ObjectConflictError:
            # Another compactor committed this generation first: its file is live, ours an
            # orphan that a later sweep deletes.
            report.lost_races += 1
            return
        report.partitions_compacted += 1
        report.files_replaced += len(live)
        report.rows_written += rows.height
        log.info(
            "silver partition compacted",
            extra={"partition": listing.partition, "generation": generation, "files": len(live), "rows": rows.height},
        )

    def _rewrite(
        self, live: list[LiveSilverFile], stored: dict[str, bytes], table: SilverTable, generation: int
    ) -> tuple[pl.DataFrame, bytes]:
        rows = pl.concat([read_file_rows(stored[f.key], table, f) for f in live])
        # Sorted by key, each key's versions in the order they were written (what readers rank by).
        rows = rows.sort([*table.key, WRITTEN_NS, SILVER_KEY, ROW])
        return rows, self._parquet(rows, table.name, generation)

    def _parquet(self, rows: pl.DataFrame, table: str, generation: int) -> bytes:
        buffer = io.BytesIO()
        rows.write_parquet(
            buffer,
            compression="zstd",
            statistics=True,
            row_group_size=self.row_group_rows,
            metadata={
                SCHEMA_VERSION_METADATA_KEY: str(SILVER_SCHEMA_VERSION),
                TABLE_METADATA_KEY: table,
                COMPACTED_METADATA_KEY: str(generation),
            },
        )
        return buffer.getvalue()
