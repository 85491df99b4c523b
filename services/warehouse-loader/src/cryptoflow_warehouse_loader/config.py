"""Warehouse-loader settings (env prefix WAREHOUSE_LOADER_; NATS_URL, DATABASE_URL, LAKE_URL shared)."""

from __future__ import annotations

from cryptoflow_runtime import DatabaseSettings, LakeSettings, ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class WarehouseLoaderSettings(ServiceSettings, LakeSettings, DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="WAREHOUSE_LOADER_", extra="ignore", populate_by_name=True)

    max_deliver: int = Field(default=20, ge=1, description="Deliveries before a message is dead-lettered")
    ack_wait_s: float = Field(default=300.0, gt=0, description="Redelivery timeout of an unacked message")
    durable: str = Field(default="warehouse-loader", description="JetStream durable consumer name")
    pool_size: int = Field(default=4, ge=1, le=64)
