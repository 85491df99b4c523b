"""A batch file compaction replaced and deleted, read back from the compacted file that holds it.

A BatchReady names its batch file; replaying the SILVER stream after the grace period finds that
file gone. Its rows are still in the partition's compacted file, marked with the batch's key
(`_silver_key`), and the manifest kept the file's sha256, so the loader checks the announced
bytes against what was compacted and loads the very rows the file held, in its order.
"""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import TABLES

from ..lake import Lake
from .frames import ROW, SILVER_KEY, read_file_rows
from .live_files import LiveSilverFile, group_partitions, list_written, partition_of
from .manifest import MANIFEST_DIR, read_manifest


class ReplacedBatch:
    def __init__(self, table: str, sha256: str, rows: pl.DataFrame) -> None:
        self.table = table
        self.sha256 = sha256  # of the batch file as it was written
        self.rows = rows  # the table's columns, in the file's row order


async def read_replaced_batch(lake: Lake, key: str) -> ReplacedBatch | None:
    """The rows of batch file `key` from its compacted file; None when no manifest replaced it."""
    partition = partition_of(key)
    if partition is None:
        return None
    partitions, _ = group_partitions(await list_written(lake, f"{partition}/{MANIFEST_DIR}/"))
    listing = partitions.get(partition)
    latest = listing.latest_manifest if listing is not None else None
    if latest is None:
        return None
    manifest = await read_manifest(lake, latest.key)
    sha256 = manifest.replaced.get(key)
    if sha256 is None or manifest.table not in TABLES:
        return None
    table = TABLES[manifest.table]
    frames = []
    for compacted in manifest.files:
        file = LiveSilverFile(compacted.key, partition, 0, compacted=True)
        rows = read_file_rows(await lake.get(compacted.key), table, file)
        frames.append(rows.filter(pl.col(SILVER_KEY) == key))
    rows = pl.concat(frames).sort(ROW) if frames else pl.DataFrame()
    return ReplacedBatch(manifest.table, sha256, rows.select(table.column_names))
