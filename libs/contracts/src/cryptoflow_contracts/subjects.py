"""Stream and subject names, defined once (scheme: DESIGN.md).

No service spells a subject by hand: they all call these functions, so the
scheme can change in one place.
"""

from __future__ import annotations

from enum import StrEnum

from .datasets import Dataset

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


class Stage(StrEnum):
    EXTRACTOR = "extractor"
    LAKE_WRITER = "lake-writer"
    TRANSFORMER = "transformer"
    WAREHOUSE_LOADER = "warehouse-loader"


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
}


def symbol_token(symbol: str) -> str:
    """`BTC/USDT` → `BTC-USDT`: a unified symbol as one subject token."""
    return token(symbol.replace("/", "-"))


def token(value: str) -> str:
    if not value or any(ch in value for ch in _FORBIDDEN):
        raise ValueError(f"{value!r} cannot be a subject token (empty, or contains one of {_FORBIDDEN})")
    return value


def raw_subject(dataset: Dataset, exchange: str, symbol: str) -> str:
    return f"{PREFIX}.raw.{dataset.value}.{token(exchange)}.{symbol_token(symbol)}"


def lake_subject(dataset: Dataset, exchange: str) -> str:
    return f"{PREFIX}.lake.{dataset.value}.{token(exchange)}"


def silver_subject(dataset: Dataset, exchange: str) -> str:
    return f"{PREFIX}.silver.{dataset.value}.{token(exchange)}"


def warehouse_subject(dataset: Dataset) -> str:
    return f"{PREFIX}.warehouse.{dataset.value}"


def dlq_subject(stage: Stage, dataset: Dataset | None) -> str:
    return f"{PREFIX}.dlq.{stage.value}.{dataset.value if dataset else 'unknown'}"


def gaps_subject(exchange: str, symbol: str) -> str:
    return f"{PREFIX}.gaps.{token(exchange)}.{symbol_token(symbol)}"


def drift_subject(exchange: str, dataset: Dataset) -> str:
    return f"{PREFIX}.drift.{token(exchange)}.{dataset.value}"


def alerts_subject(rule: str) -> str:
    return f"{PREFIX}.alerts.{token(rule)}"


def runs_subject(service: str) -> str:
    return f"{PREFIX}.runs.{token(service)}"


def anomaly_subject(exchange: str, symbol: str) -> str:
    return f"{PREFIX}.anomalies.{token(exchange)}.{symbol_token(symbol)}"
