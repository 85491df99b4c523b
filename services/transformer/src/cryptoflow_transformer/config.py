"""Transformer settings (env prefix TRANSFORMER_; NATS_URL, LAKE_URL, S3_ENDPOINT_URL shared)."""

from __future__ import annotations

from cryptoflow_runtime import LakeSettings, ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class TransformerSettings(ServiceSettings, LakeSettings):
    model_config = SettingsConfigDict(env_prefix="TRANSFORMER_", extra="ignore", populate_by_name=True)

    max_deliver: int = Field(default=5, ge=1, description="Deliveries before a message is dead-lettered")
    ack_wait_s: float = Field(default=120.0, gt=0, description="Redelivery timeout of an unacked message")
    durable: str = Field(default="transformer", description="JetStream durable consumer name")
    concurrency: int = Field(default=4, ge=1, le=64, description="Bronze objects processed at once")
