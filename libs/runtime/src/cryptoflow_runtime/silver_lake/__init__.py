"""Silver as readers see it: the live files (batch files less what a manifest replaced, plus the
compacted files it names), their rows with lineage, and the compaction that commits by manifest
(decision 0050).

Not imported by the package root: it needs polars, which only the stages that read silver install.
"""

from __future__ import annotations

from .compaction import DEFAULT_GRACE, DEFAULT_OLDER_THAN, CompactionReport, Compactor, is_closed
from .frames import LINEAGE_COLUMNS, ROW, SILVER_KEY, WRITTEN_NS, SilverFileError, read_file_rows, read_live_rows
from .live_files import SILVER_PREFIX, LiveSilverFile, live_silver_files, partition_of, read_with_retry
from .manifest import CompactedFile, Manifest, ManifestError, read_manifest
from .replaced_batches import ReplacedBatch, read_replaced_batch

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_OLDER_THAN",
    "LINEAGE_COLUMNS",
    "ROW",
    "SILVER_KEY",
    "SILVER_PREFIX",
    "WRITTEN_NS",
    "CompactedFile",
    "CompactionReport",
    "Compactor",
    "LiveSilverFile",
    "Manifest",
    "ManifestError",
    "ReplacedBatch",
    "SilverFileError",
    "is_closed",
    "live_silver_files",
    "partition_of",
    "read_file_rows",
    "read_live_rows",
    "read_manifest",
    "read_replaced_batch",
    "read_with_retry",
]
