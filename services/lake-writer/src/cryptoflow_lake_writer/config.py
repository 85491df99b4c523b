"""Lake-writer settings (env prefix LAKE_WRITER_; NATS_URL, LAKE_URL, S3_ENDPOINT_URL shared)."""

from __future__ import annotations

from cryptoflow_runtime import LakeSettings, ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict

MAX_BATCH_SIZE = 48


class LakeWriterSettings(ServiceSettings, LakeSettings):
    model_config = SettingsConfigDict(env_prefix="LAKE_WRITER_", extra="ignore", populate_by_name=True)

    # A batch closes on whichever comes first: batch_size messages or batch_timeout_s; each of its
    # partitions becomes objects of at most max_object_bytes (uncompressed NDJSON).
    # At most 48: a fetch's messages are sent at once, and a RawSnapshot may be up to NATS's max_payload
    # (1 MiB), so 48 stay under the 64 MiB that nats-server lets a client fall behind (max_pending)
    # and that nats-py buffers per subscription. Past either, the server cuts the connection as a
    # slow consumer and the whole fetch waits out ack_wait to be redelivered, out of order: 1000-candle
    # pages with their native bodies (~240 KiB) did that at 500 (bench/e2e.py, 2026-12-02).
    batch_size: int = Field(
        default=MAX_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE, description="RawSnapshots fetched per batch"
    )
    # 0.2 s: a quiet stream's snapshot reaches the lake within 0.2 s (p99 RAW → warehouse fell
    # from 1.9 s to 0.2 s in bench/e2e.py), a busy one fills batch_size long before.
    batch_timeout_s: float = Field(default=0.2, gt=0, description="Longest wait to fill a batch")
    max_object_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest uncompressed NDJSON per bronze object; a partition over it is split",
    )
    max_deliver: int = Field(default=5, ge=1, description="Deliveries before a message is dead-lettered")
    ack_wait_s: float = Field(default=60.0, gt=0, description="Redelivery timeout of an unacked message")
    durable: str = Field(default="lake-writer", description="JetStream durable consumer name")
    zstd_level: int = Field(default=3, ge=1, le=19, description="zstd level of bronze objects (1 fastest, 19 smallest)")
