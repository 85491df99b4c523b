"""Which silver files are live: the one listing every silver reader goes through (decision 0050).

A partition's live files are its batch files (`<partition>/<name>.parquet`, as the transformer
writes them) less those its latest manifest says were replaced, plus the compacted files that
manifest names. A compacted file no manifest names yet (a compaction in progress, or one that
lost a race) and superseded manifests are not live. Compaction deletes replaced files only a
grace period after the manifest that replaced them, so a reader that resolved the live files
before that manifest still finds every file it chose; a reader slower than the grace gets
ObjectMissingError and resolves again (`read_with_retry`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from ..lake import Lake, ListedObject, MaintainedLake, ObjectMissingError
from .manifest import COMPACTED_DIR, MANIFEST_DIR, Manifest, manifest_generation, read_manifest

SILVER_PREFIX = "silver/"
# Resolving again after a file vanished: enough for any reader that is not slower than the grace
# period several times over.
RESOLVE_ATTEMPTS = 4
_MANIFEST_READS = 16  # manifests read at once

T = TypeVar("T")


@dataclass(frozen=True)
class LiveSilverFile:
    key: str
    partition: str | None  # None: not in a `date=` partition, so no manifest can cover it
    # Batch file: when the store wrote it (orders versions of a key, as the loader's arrival
    # order would); a compacted file's rows carry their own (lineage columns, frames.py).
    written_ns: int
    compacted: bool = False


@dataclass
class PartitionListing:
    """One partition's objects as one listing saw them."""

    partition: str
    batch_files: list[ListedObject] = field(default_factory=list)
    compacted_files: list[ListedObject] = field(default_factory=list)
    manifests: dict[int, ListedObject] = field(default_factory=dict)  # generation → object

    @property
    def latest_manifest(self) -> ListedObject | None:
        return self.manifests[max(self.manifests)] if self.manifests else None


def partition_of(key: str) -> str | None:
    """The `…/date=YYYY-MM-DD` partition a silver object (batch, compacted file or manifest) is in."""
    folder = key.rpartition("/")[0]
    if folder.endswith((f"/{COMPACTED_DIR}", f"/{MANIFEST_DIR}")):
        folder = folder.rpartition("/")[0]
    return folder if folder.rpartition("/")[2].startswith("date=") else None


async def list_written(lake: Lake, prefix: str) -> list[ListedObject]:
    """The objects under `prefix` with their write times; a lake that cannot say (a test double)
    gives 0 for every object, so versions of a key are then ordered by key alone."""
    if isinstance(lake, MaintainedLake):
        return await lake.list_written(prefix)
    return [ListedObject(key, 0) for key in await lake.list(prefix)]


def group_partitions(listed: Iterable[ListedObject]) -> tuple[dict[str, PartitionListing], list[ListedObject]]:
    """Silver objects by partition, and the Parquet files outside any partition."""
    partitions: dict[str, PartitionListing] = {}
    loose: list[ListedObject] = []
    for obj in listed:
        name = obj.key.rpartition("/")[2]
        partition = partition_of(obj.key)
        if partition is None:
            if name.endswith(".parquet"):
                loose.append(obj)
            continue
        listing = partitions.setdefault(partition, PartitionListing(partition))
        folder = obj.key[len(partition) + 1 :].rpartition("/")[0]  # "" for a batch file
        if folder == MANIFEST_DIR:
            generation = manifest_generation(obj.key)
            if generation is not None:
                listing.manifests[generation] = obj
        elif folder == COMPACTED_DIR:
            if name.endswith(".parquet"):
                listing.compacted_files.append(obj)
        elif not folder and name.endswith(".parquet") and not name.startswith("."):
            listing.batch_files.append(obj)
    return partitions, loose


def live_in_partition(listing: PartitionListing, manifest: Manifest | None) -> list[LiveSilverFile]:
    replaced = manifest.replaced if manifest is not None else {}
    live = [
        LiveSilverFile(obj.key, listing.partition, obj.written_ns)
        for obj in listing.batch_files
        if obj.key not in replaced
    ]
    if manifest is not None:
        live.extend(LiveSilverFile(f.key, listing.partition, 0, compacted=True) for f in manifest.files)
    return live


async def latest_manifests(lake: Lake, partitions: Iterable[PartitionListing]) -> dict[str, Manifest]:
    """Each partition's latest manifest (partitions without one are absent)."""
    gate = asyncio.Semaphore(_MANIFEST_READS)

    async def read(listing: PartitionListing, key: str) -> tuple[str, Manifest]:
        async with gate:
            return listing.partition, await read_manifest(lake, key)

    reads = [read(p, latest.key) for p in partitions if (latest := p.latest_manifest) is not None]
    return dict(await asyncio.gather(*reads))


async def live_silver_files(lake: Lake, prefix: str = SILVER_PREFIX) -> list[LiveSilverFile]:
    """The live silver files under `prefix`, sorted by key.

    `prefix` should end at a folder (`silver/ohlcv/`, `silver/ohlcv/exchange=binance/`); a prefix
    that cuts into a partition's file names would miss its manifest and compacted files.
    """
    for attempt in range(RESOLVE_ATTEMPTS):
        partitions, loose = group_partitions(await list_written(lake, prefix))
        try:
            manifests = await latest_manifests(lake, partitions.values())
        except ObjectMissingError:
            # A manifest superseded more than a grace period ago was deleted under us: list again.
            if attempt + 1 == RESOLVE_ATTEMPTS:
                raise
            continue
        live = [LiveSilverFile(obj.key, None, obj.written_ns) for obj in loose]
        for partition, listing in partitions.items():
            live.extend(live_in_partition(listing, manifests.get(partition)))
        return sorted(live, key=lambda f: f.key)
    raise AssertionError("unreachable")


async def read_with_retry(
    lake: Lake, prefix: str, read: Callable[[list[LiveSilverFile]], Awaitable[T]], attempts: int = RESOLVE_ATTEMPTS
) -> T:
    """`read(live files)`, resolving the live files again when one vanished meanwhile (the reader
    took longer than compaction's grace period)."""
    for attempt in range(attempts):
        files = await live_silver_files(lake, prefix)
        try:
            return await read(files)
        except ObjectMissingError:
            if attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")
