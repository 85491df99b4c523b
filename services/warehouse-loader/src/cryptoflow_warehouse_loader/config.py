"""Warehouse-loader settings (env prefix WAREHOUSE_LOADER_; NATS_URL, DATABASE_URL, LAKE_URL shared)."""

from __future__ import annotations

import re
from typing import Literal

from cryptoflow_runtime import DatabaseSettings, LakeSettings, ServiceSettings
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from .tables import TABLES

_RULE_NAME = re.compile(r"^[a-z0-9_-]+$")


class AlertRule(BaseModel):
    """One threshold rule; its name is the last token of `cryptoflow.alerts.<name>`."""

    name: str
    kind: Literal["price_move", "spread", "staleness", "price_divergence"]
    threshold: float = Field(gt=0, description="price_move/spread/price_divergence: percent; staleness: seconds")
    window: Literal["1h", "24h", "7d", "30d"] = Field(
        default="24h",
        description="price_move: the return's horizon; price_divergence: how far back snapshots are checked",
    )
    tables: list[str] = Field(default_factory=lambda: ["ohlcv"], description="staleness: tables whose series to watch")

    @field_validator("name")
    @classmethod
    def _token(cls, value: str) -> str:
        if not _RULE_NAME.match(value):
            raise ValueError(f"{value!r}: rule names are lower-case letters, digits, '_' or '-'")
        return value

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in TABLES]
        if unknown:
            raise ValueError(f"unknown table(s) {unknown}; known: {', '.join(TABLES)}")
        return value


DEFAULT_ALERT_RULES = [
    AlertRule(name="price-move-24h", kind="price_move", threshold=10.0, window="24h"),
    AlertRule(name="spread", kind="spread", threshold=2.0),
    AlertRule(name="stale", kind="staleness", threshold=3600.0),
    AlertRule(name="price-divergence", kind="price_divergence", threshold=2.0, window="1h"),
]


class WarehouseLoaderSettings(ServiceSettings, LakeSettings, DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="WAREHOUSE_LOADER_", extra="ignore", populate_by_name=True)

    max_deliver: int = Field(default=20, ge=1, description="Deliveries before a message is dead-lettered")
    ack_wait_s: float = Field(default=300.0, gt=0, description="Redelivery timeout of an unacked message")
    durable: str = Field(default="warehouse-loader", description="JetStream durable consumer name (prefix)")
    batch_size: int = Field(
        default=32,
        ge=1,
        le=1000,
        description="Silver batches pulled at once; those of one table are loaded in one transaction",
    )
    batch_timeout_s: float = Field(
        default=0.1,
        gt=0,
        le=5,
        description="Longest wait for more silver batches once one has arrived (and between idle pulls)",
    )
    pool_size: int = Field(default=4, ge=1, le=64, description="PostgreSQL connections the loader keeps open")
    migrate: bool = Field(default=True, description="Apply pending migrations at start (else require head)")
    retention_days: int | None = Field(
        default=None, ge=1, description="Drop monthly partitions whose month ended more than this many days ago; off"
    )
    retention_tables: str = Field(
        default=",".join(TABLES), description="Comma-separated tables retention applies to (default: all)"
    )
    maintenance_interval_s: float = Field(
        default=5.0, gt=0, description="How often marts are refreshed (when rows changed) and alerts evaluated"
    )
    run_report_interval_s: float = Field(default=30.0, gt=0, description="Longest pause between RunReports")
    compaction: bool = Field(
        default=True, description="Compact closed silver partitions into one file each (decision 0050)"
    )
    compaction_interval_s: float = Field(
        default=3600.0, gt=0, description="Pause between silver compactions (the first one interval after start)"
    )
    compaction_older_than_s: float = Field(
        default=86400.0, ge=0, description="Compact a silver partition once its day ended this many seconds ago"
    )
    compaction_grace_s: float = Field(
        default=3600.0,
        ge=0,
        description="Delete silver files a compaction replaced once it is this many seconds old (longest reader)",
    )
    alert_rules: list[AlertRule] = Field(
        default_factory=lambda: list(DEFAULT_ALERT_RULES), description="JSON list of threshold rules; [] = none"
    )

    @field_validator("retention_tables")
    @classmethod
    def _retention_tables(cls, value: str) -> str:
        unknown = [t for t in value.split(",") if t.strip() and t.strip() not in TABLES]
        if unknown:
            raise ValueError(f"unknown table(s) {unknown}; known: {', '.join(TABLES)}")
        return value

    @property
    def retention_table_list(self) -> list[str]:
        return [t.strip() for t in self.retention_tables.split(",") if t.strip()]
