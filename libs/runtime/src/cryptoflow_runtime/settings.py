"""Settings every service shares; each service subclasses with its own env prefix.

Connection settings use the platform-wide names (`NATS_URL`, `DATABASE_URL`,
`LAKE_URL`, `S3_ENDPOINT_URL`) so one environment configures every service;
tuning knobs carry the service's prefix (`LAKE_WRITER_BATCH_SIZE`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptoflow_contracts import Stream
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .redaction import redact

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A setting is wrong; the message names it."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias=AliasChoices("NATS_URL", "nats_url"),
        description="NATS server URL (nats://host:port; tls://host:port for TLS)",
    )
    nats_user: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NATS_USER", "nats_user"),
        description="NATS user of this service (with NATS_PASSWORD); its replies come on _INBOX.<user>.>",
    )
    nats_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("NATS_PASSWORD", "nats_password"),
        description="Password of NATS_USER (never logged)",
    )
    nats_tls_ca: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("NATS_TLS_CA", "nats_tls_ca"),
        description="CA certificate (PEM) the NATS server's certificate is verified with; turns TLS on",
    )
    http_host: str = Field(default="127.0.0.1", description="Bind address of /healthz and /metrics")
    http_port: int = Field(default=0, ge=0, le=65535, description="Port of /healthz and /metrics; 0 = any")
    log_level: str = Field(
        default="INFO",
        validation_alias=AliasChoices("LOG_LEVEL", "log_level"),
        description="Log level of the JSON logs (DEBUG adds FastStream's per-message lines)",
    )
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
                raise ValueError(f"{redact(url.strip())!r} is not a NATS URL (expected nats://host:port)")
        return value

    @field_validator("nats_user")
    @classmethod
    def _nats_user(cls, value: str | None) -> str | None:
        # The user is also the last token of the reply inbox prefix (_INBOX.<user>).
        if value is not None and (not value or any(ch in value for ch in ".*> \t")):
            raise ValueError("must be non-empty without '.', '*', '>' or whitespace")
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
    s3_max_attempts: int = Field(
        default=8,
        ge=1,
        le=20,
        validation_alias=AliasChoices("S3_MAX_ATTEMPTS", "s3_max_attempts"),
        description="Tries of one S3 request (botocore's backoff between them) before it fails and is retried later",
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
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"])
        env_name = name if name.isupper() else f"{prefix}{name}".upper()
        given = error.get("input")
        # URLs can carry credentials: echo them only with the password masked.
        shown = redact(given) if isinstance(given, str) else given
        if "password" in name.lower():
            shown = "***"
        problems.append(f"{env_name}: {error['msg']} (got {shown!r})")
    return "invalid configuration: " + "; ".join(problems)


# --- Stream retention and limits -------------------------------------------------------------
#
# `STREAM_<NAME>_<KNOB>` for every stream of the `Stream` enum, read from the environment when a
# service starts (`ensure_streams`). A knob left unset is not enforced: the stream gets the default
# when it is created and keeps whatever it has afterwards, so a process started without the
# variables (a backfill, a test) never reverts limits another process configured.

STREAM_ENV_PREFIX = "STREAM_"
STREAM_KNOBS = ("MAX_AGE_S", "MAX_BYTES", "MAX_MSGS", "REPLICAS")
MAX_REPLICAS = 5  # JetStream's limit
_SIZE = re.compile(r"^\s*(-?\d+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
NumberT = TypeVar("NumberT", int, float)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclass(frozen=True)
class StreamLimits:
    """Limits of one stream; None = not configured (not enforced on an existing stream)."""

    max_age_s: float | None = None  # 0 = no age limit
    max_bytes: int | None = None  # -1 = no size limit
    max_msgs: int | None = None  # -1 = no message limit
    replicas: int | None = None


def stream_env_name(stream: Stream, knob: str) -> str:
    return f"{STREAM_ENV_PREFIX}{stream.value}_{knob}"


def stream_limits_from_env(environ: Mapping[str, str] | None = None) -> dict[Stream, StreamLimits]:
    """Every stream's configured limits; ConfigError naming each bad variable."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    def read(stream: Stream, knob: str, parse: Callable[[str], NumberT]) -> NumberT | None:
        name = stream_env_name(stream, knob)
        raw = env.get(name)
        if raw is None or not raw.strip():
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc} (got {raw!r})")
            return None

    limits = {
        stream: StreamLimits(
            max_age_s=read(stream, "MAX_AGE_S", _parse_age),
            max_bytes=read(stream, "MAX_BYTES", _parse_bytes),
            max_msgs=read(stream, "MAX_MSGS", _parse_count),
            replicas=read(stream, "REPLICAS", _parse_replicas),
        )
        for stream in Stream
    }
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    _warn_unknown(env)
    return limits


def _warn_unknown(env: Mapping[str, str]) -> None:
    """A STREAM_<known stream>_<typo> is most likely a mistake: say so (not fatal, could be anything)."""
    known = {stream_env_name(stream, knob) for stream in Stream for knob in STREAM_KNOBS}
    for name in sorted(env):
        if name in known or not name.startswith(STREAM_ENV_PREFIX):
            continue
        if any(name.startswith(f"{STREAM_ENV_PREFIX}{stream.value}_") for stream in Stream):
            log.warning(
                "unknown stream setting ignored",
                extra={"setting": name, "known": [f"{STREAM_ENV_PREFIX}<STREAM>_{k}" for k in STREAM_KNOBS]},
            )


def _parse_age(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected seconds (a number; 0 = no age limit)") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError("expected seconds >= 0 (0 = no age limit)")
    return value


def _parse_bytes(raw: str) -> int:
    match = _SIZE.match(raw)
    if not match:
        raise ValueError("expected a byte count, optionally with K, M, G or T (1024-based), e.g. 10G; -1 = no limit")
    number, unit = int(match.group(1)), match.group(2).upper()
    if number == -1 and not unit:
        return -1
    if number < 1:
        raise ValueError("expected a positive byte count, or -1 for no limit")
    return number * _SIZE_UNITS[unit]


def _parse_count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a whole number of messages; -1 = no limit") from None
    if value == 0 or value < -1:
        raise ValueError("expected a positive number of messages, or -1 for no limit")
    return value


def _parse_replicas(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"expected a whole number from 1 to {MAX_REPLICAS}") from None
    if not 1 <= value <= MAX_REPLICAS:
        raise ValueError(f"expected a whole number from 1 to {MAX_REPLICAS}")
    return value
