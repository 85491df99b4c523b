"""Stream and subject names, defined once (scheme: docs/architecture.md).

No service spells a subject by hand: each event class names its stream and one of the subject
templates below (`Event.STREAM`, `Event.SUBJECT`), and the functions here fill them in, so the
scheme can change in one place. A template's `{placeholders}` are the AsyncAPI channel
parameters.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import ClassVar

from .datasets import Dataset
from .names import RegisteredName

PREFIX = "cryptoflow"
_FORBIDDEN = (".", "*", ">", "/", " ")


class Stream(StrEnum):
    RAW = "RAW"
    LAKE = "LAKE"
    SILVER = "SILVER"
    WAREHOUSE = "WAREHOUSE"
    DLQ = "DLQ"
    ANOMALIES = "ANOMALIES"
    GAPS = "GAPS"
    DRIFT = "DRIFT"
    ALERTS = "ALERTS"
    RUNS = "RUNS"
    LIVE = "LIVE"


class Stage(RegisteredName):
    """A stage of the pipeline by its service name: the built-in four, plus any registered one."""

    EXTRACTOR: ClassVar[Stage]
    LAKE_WRITER: ClassVar[Stage]
    TRANSFORMER: ClassVar[Stage]
    WAREHOUSE_LOADER: ClassVar[Stage]


Stage.EXTRACTOR = Stage.register("extractor")
Stage.LAKE_WRITER = Stage.register("lake-writer")
Stage.TRANSFORMER = Stage.register("transformer")
Stage.WAREHOUSE_LOADER = Stage.register("warehouse-loader")


# Every subject a stream captures; the stream owns its whole namespace.
STREAM_SUBJECTS: dict[Stream, str] = {
    Stream.RAW: f"{PREFIX}.raw.>",
    Stream.LAKE: f"{PREFIX}.lake.>",
    Stream.SILVER: f"{PREFIX}.silver.>",
    Stream.WAREHOUSE: f"{PREFIX}.warehouse.>",
    Stream.DLQ: f"{PREFIX}.dlq.>",
    Stream.ANOMALIES: f"{PREFIX}.anomalies.>",
    Stream.GAPS: f"{PREFIX}.gaps.>",
    Stream.DRIFT: f"{PREFIX}.drift.>",
    Stream.ALERTS: f"{PREFIX}.alerts.>",
    Stream.RUNS: f"{PREFIX}.runs.>",
    Stream.LIVE: f"{PREFIX}.live.>",
}


def symbol_token(symbol: str) -> str:
    """`BTC/USDT` → `BTC-USDT`: a unified symbol as one subject token."""
    return token(symbol.replace("/", "-"))


@functools.lru_cache(maxsize=4096)
def token(value: str) -> str:
    # Cached: every event published asks for its subject, and the same few names come back.
    if not value or any(ch in value for ch in _FORBIDDEN):
        raise ValueError(f"{value!r} cannot be a subject token (empty, or contains one of {_FORBIDDEN})")
    return value


# Subject templates, one per stream: `{name}` is one token (see `token`).
RAW_SUBJECT = f"{PREFIX}.raw.{{dataset}}.{{exchange}}.{{symbol}}"
LAKE_SUBJECT = f"{PREFIX}.lake.{{dataset}}.{{exchange}}.{{symbol}}"
SILVER_SUBJECT = f"{PREFIX}.silver.{{table}}.{{exchange}}.{{symbol}}"
WAREHOUSE_SUBJECT = f"{PREFIX}.warehouse.{{dataset}}"
DLQ_SUBJECT = f"{PREFIX}.dlq.{{stage}}.{{dataset}}"
ANOMALIES_SUBJECT = f"{PREFIX}.anomalies.{{exchange}}.{{symbol}}"
GAPS_SUBJECT = f"{PREFIX}.gaps.{{exchange}}.{{symbol}}"
DRIFT_SUBJECT = f"{PREFIX}.drift.{{exchange}}.{{dataset}}"
ALERTS_SUBJECT = f"{PREFIX}.alerts.{{rule}}"
RUNS_SUBJECT = f"{PREFIX}.runs.{{service}}"
LIVE_SUBJECT = f"{PREFIX}.live.{{dataset}}.{{exchange}}.{{symbol}}"


def raw_subject(dataset: Dataset, exchange: str, symbol: str) -> str:
    return RAW_SUBJECT.format(dataset=dataset.value, exchange=token(exchange), symbol=symbol_token(symbol))


def live_subject(dataset: Dataset, exchange: str, symbol: str) -> str:
    return LIVE_SUBJECT.format(dataset=dataset.value, exchange=token(exchange), symbol=symbol_token(symbol))


def lake_subject(dataset: Dataset, exchange: str, symbol: str) -> str:
    return LAKE_SUBJECT.format(dataset=dataset.value, exchange=token(exchange), symbol=symbol_token(symbol))


def silver_subject(table: str, exchange: str, symbol: str) -> str:
    """The silver *table* (ohlcv, indicators, ...), not the source dataset, leads: one table of one
    market is one subject."""
    return SILVER_SUBJECT.format(table=token(table), exchange=token(exchange), symbol=symbol_token(symbol))


def warehouse_subject(dataset: Dataset) -> str:
    return WAREHOUSE_SUBJECT.format(dataset=dataset.value)


def dlq_subject(stage: Stage, dataset: Dataset | None) -> str:
    return DLQ_SUBJECT.format(stage=stage.value, dataset=dataset.value if dataset else "unknown")


def gaps_subject(exchange: str, symbol: str) -> str:
    return GAPS_SUBJECT.format(exchange=token(exchange), symbol=symbol_token(symbol))


def drift_subject(exchange: str, dataset: Dataset) -> str:
    return DRIFT_SUBJECT.format(exchange=token(exchange), dataset=dataset.value)


def alerts_subject(rule: str) -> str:
    return ALERTS_SUBJECT.format(rule=token(rule))


def runs_subject(service: str) -> str:
    return RUNS_SUBJECT.format(service=token(service))


def anomaly_subject(exchange: str, symbol: str) -> str:
    return ANOMALIES_SUBJECT.format(exchange=token(exchange), symbol=symbol_token(symbol))


def partition_symbol(key: str) -> str:
    """The market token of a lake key's `symbol=` partition (`.../symbol=BTC-USDT/...`)."""
    for part in key.split("/"):
        if part.startswith("symbol="):
            return token(part.removeprefix("symbol="))
    raise ValueError(f"lake key {key!r} has no symbol= partition")
