"""API settings (env prefix API_; NATS_URL, NATS_USER/NATS_PASSWORD and DATABASE_URL shared)."""

from __future__ import annotations

from cryptoflow_runtime import DatabaseSettings, ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

NAME = "api"  # the service's name: its logs' `service`, /healthz's answer, its stage-like label

# Public subjects a client may follow live (decision 0048): what outside consumers already read
# (silver batches, live updates, alerts, anomalies). Raw snapshots, lake objects, dead letters and
# run reports stay inside the platform.
DEFAULT_LIVE_SUBJECTS = "cryptoflow.silver.>,cryptoflow.live.>,cryptoflow.alerts.>,cryptoflow.anomalies.>"


class ApiSettings(ServiceSettings, DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore", populate_by_name=True)

    # The API serves everything on one port: its resources, /healthz, /readyz, /metrics, /docs.
    http_host: str = Field(default="127.0.0.1", description="Bind address of the API (0.0.0.0 in a container)")
    http_port: int = Field(default=8080, ge=0, le=65535, description="Port of the API (and its health and metrics)")
    pool_size: int = Field(default=8, ge=1, le=128, description="PostgreSQL connections the API keeps open")
    auth_required: bool = Field(
        default=True, description="Require an API key (Authorization: Bearer) on every resource but health and metrics"
    )
    key_cache_s: float = Field(
        default=5.0, ge=0, description="How long a checked key is trusted before it is read again (revocation delay)"
    )
    anonymous_rate_per_s: float = Field(
        default=5.0, gt=0, description="Requests per second of each client address when API_AUTH_REQUIRED=false"
    )
    anonymous_burst: int = Field(default=20, ge=1, description="Burst of each client address without a key")
    cors_origins: str = Field(
        default="", description="Comma-separated origins allowed by CORS ('*' = any); none when empty"
    )
    max_page_rows: int = Field(
        default=1_000_000, ge=1, description="Largest `limit` of one page (without `limit` a range streams whole)"
    )
    chunk_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes of PostgreSQL output decoded at once: a record batch, the memory one response holds",
    )
    live_subjects: str = Field(
        default=DEFAULT_LIVE_SUBJECTS, description="Comma-separated NATS subject patterns clients may follow live"
    )
    live_queue_messages: int = Field(
        default=1000,
        ge=1,
        description="Messages queued for one live client; a client that falls this far behind is dropped",
    )
    live_max_subjects: int = Field(default=16, ge=1, description="Subject patterns one live connection may ask for")

    @field_validator("live_subjects")
    @classmethod
    def _subjects(cls, value: str) -> str:
        if not [part for part in value.split(",") if part.strip()]:
            raise ValueError("at least one subject pattern")
        return value

    @property
    def live_subject_patterns(self) -> list[str]:
        return [part.strip() for part in self.live_subjects.split(",") if part.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [part.strip() for part in self.cors_origins.split(",") if part.strip()]
