"""Settings every service shares; each service subclasses with its own env prefix.

Connection settings use the platform-wide names (`NATS_URL`, `DATABASE_URL`,
`LAKE_URL`, `S3_ENDPOINT_URL`) so one environment configures every service;
tuning knobs carry the service's prefix (`LAKE_WRITER_BATCH_SIZE`).
"""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """A setting is wrong; the message names it."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias=AliasChoices("NATS_URL", "nats_url"),
        description="NATS server URL (nats://host:port)",
    )
    http_host: str = Field(default="127.0.0.1", description="Bind address of /healthz and /metrics")
    http_port: int = Field(default=0, ge=0, le=65535, description="Port of /healthz and /metrics; 0 = any")
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level"))
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "otlp_endpoint"),
        description="OTLP/HTTP endpoint for traces; off when unset",
    )

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str) -> str:
        for url in value.split(","):
            if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"{url!r} is not a NATS URL (expected nats://host:port)")
        return value


class LakeSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    lake_url: str = Field(
        default="file://./.cryptoflow/lake",
        validation_alias=AliasChoices("LAKE_URL", "lake_url"),
        description="file:///abs/dir, or s3://bucket[/prefix]",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("S3_ENDPOINT_URL", "s3_endpoint_url"),
        description="S3 API endpoint (MinIO, moto); AWS when unset",
    )

    @field_validator("lake_url")
    @classmethod
    def _lake_scheme(cls, value: str) -> str:
        if not value.startswith(("file://", "s3://")):
            raise ValueError(f"{value!r} is not a lake URL (expected file:///dir or s3://bucket)")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/cryptoflow",
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="PostgreSQL URL",
    )

    @field_validator("database_url")
    @classmethod
    def _pg_scheme(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("is not a PostgreSQL URL (expected postgresql://user@host:port/db)")
        return value


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Build settings from the environment, or raise ConfigError naming each bad setting."""
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(cls, exc)) from None


def describe_validation_error(cls: type[BaseSettings], exc: ValidationError) -> str:
    prefix = str(cls.model_config.get("env_prefix", "") or "")
    from .postgres import redact

    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"])
        env_name = name if name.isupper() else f"{prefix}{name}".upper()
        given = error.get("input")
        # URLs can carry credentials: echo them only with the password masked.
        shown = redact(given) if isinstance(given, str) else given
        problems.append(f"{env_name}: {error['msg']} (got {shown!r})")
    return "invalid configuration: " + "; ".join(problems)


def exit_on_config_error(error: ConfigError) -> None:
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2)
