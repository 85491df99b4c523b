"""Contracts shared by every cryptoflow service: events, datasets, streams and subjects."""

from .datasets import TIMEFRAME_MS, Dataset, timeframe_ms
from .events import (
    ALL_EVENTS,
    BatchReady,
    DeadLetter,
    Event,
    KnownGap,
    Loaded,
    ObjectWritten,
    RawSnapshot,
    SchemaDrift,
    content_hash,
)
from .silver import SILVER_SCHEMA_VERSION, SilverTable
from .silver import TABLES as SILVER_TABLES
from .subjects import (
    STREAM_SUBJECTS,
    Stage,
    Stream,
    dlq_subject,
    drift_subject,
    gaps_subject,
    lake_subject,
    raw_subject,
    silver_subject,
    symbol_token,
    warehouse_subject,
)

__all__ = [
    "ALL_EVENTS",
    "SILVER_SCHEMA_VERSION",
    "SILVER_TABLES",
    "STREAM_SUBJECTS",
    "TIMEFRAME_MS",
    "BatchReady",
    "Dataset",
    "DeadLetter",
    "Event",
    "KnownGap",
    "Loaded",
    "ObjectWritten",
    "RawSnapshot",
    "SchemaDrift",
    "SilverTable",
    "Stage",
    "Stream",
    "content_hash",
    "dlq_subject",
    "drift_subject",
    "gaps_subject",
    "lake_subject",
    "raw_subject",
    "silver_subject",
    "symbol_token",
    "timeframe_ms",
    "warehouse_subject",
]
