"""Settings: a bad value raises ConfigError naming the environment variable."""

from __future__ import annotations

import pytest
from cryptoflow_extractor.config import ExtractorSettings
from cryptoflow_lake_writer.config import LakeWriterSettings
from cryptoflow_runtime.settings import (
    ConfigError,
    DatabaseSettings,
    LakeSettings,
    ServiceSettings,
    load_settings,
)
from cryptoflow_transformer.config import TransformerSettings
from cryptoflow_warehouse_loader.config import WarehouseLoaderSettings
from pydantic_settings import BaseSettings

SHARED_VARS = ["NATS_URL", "LAKE_URL", "S3_ENDPOINT_URL", "DATABASE_URL", "LOG_LEVEL", "OTEL_EXPORTER_OTLP_ENDPOINT"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite may run with NATS_URL etc. set (servers of one's own): start each test without them."""
    for name in SHARED_VARS:
        monkeypatch.delenv(name, raising=False)


# (settings class, env var, bad value): every class that carries the setting.
BAD_VALUES = [
    *[(cls, "NATS_URL", "http://127.0.0.1:4222") for cls in (ServiceSettings, LakeWriterSettings, ExtractorSettings)],
    (ServiceSettings, "NATS_URL", "nats://ok:4222,127.0.0.1:4223"),  # second URL of a list has no scheme
    *[(cls, "LAKE_URL", "/var/lake") for cls in (LakeSettings, TransformerSettings, WarehouseLoaderSettings)],
    (LakeSettings, "LAKE_URL", "gs://bucket"),
    *[(cls, "S3_ENDPOINT_URL", "127.0.0.1:9000") for cls in (LakeSettings, LakeWriterSettings)],
    *[(cls, "DATABASE_URL", "mysql://root@db/x") for cls in (DatabaseSettings, WarehouseLoaderSettings)],
]


@pytest.mark.parametrize(("cls", "var", "value"), BAD_VALUES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_bad_value_names_the_env_var(
    monkeypatch: pytest.MonkeyPatch, cls: type[BaseSettings], var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(cls)
    message = str(excinfo.value)
    assert f"{var}:" in message
    # The shared names are used as they are, never with the service's prefix.
    for prefix in ("LAKE_WRITER_", "TRANSFORMER_", "WAREHOUSE_LOADER_", "EXTRACTOR_"):
        assert f"{prefix}{var}" not in message


@pytest.mark.parametrize(
    ("cls", "var", "value"),
    [
        (LakeWriterSettings, "LAKE_WRITER_BATCH_SIZE", "0"),
        (LakeWriterSettings, "LAKE_WRITER_BATCH_TIMEOUT_S", "soon"),
        (TransformerSettings, "TRANSFORMER_MAX_DELIVER", "0"),
        (WarehouseLoaderSettings, "WAREHOUSE_LOADER_POOL_SIZE", "1000"),
        (ExtractorSettings, "EXTRACTOR_PAGE_LIMIT", "5000"),
        (ExtractorSettings, "EXTRACTOR_HTTP_PORT", "70000"),
    ],
)
def test_bad_prefixed_value_names_the_prefixed_var(
    monkeypatch: pytest.MonkeyPatch, cls: type[BaseSettings], var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(cls)
    assert f"{var}:" in str(excinfo.value)


def test_every_bad_setting_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "localhost:4222")
    monkeypatch.setenv("LAKE_URL", "bucket")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///x")
    monkeypatch.setenv("S3_ENDPOINT_URL", "minio")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(WarehouseLoaderSettings)
    message = str(excinfo.value)
    for var in ("NATS_URL", "LAKE_URL", "DATABASE_URL", "S3_ENDPOINT_URL"):
        assert f"{var}:" in message


def test_good_values_are_read_from_the_shared_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("LAKE_URL", "s3://bucket/prefix")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h:5432/db")
    monkeypatch.setenv("WAREHOUSE_LOADER_MAX_DELIVER", "7")
    settings = load_settings(WarehouseLoaderSettings)
    assert settings.nats_url == "nats://a:4222, nats://b:4222"
    assert settings.lake_url == "s3://bucket/prefix"
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.database_url == "postgres://u@h:5432/db"
    assert settings.max_deliver == 7


def test_defaults_are_valid() -> None:
    for cls in (ServiceSettings, LakeSettings, DatabaseSettings, LakeWriterSettings, TransformerSettings):
        load_settings(cls)
    settings = load_settings(WarehouseLoaderSettings)
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.s3_endpoint_url is None


def test_bad_database_url_message_does_not_leak_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresq://loader:hunter2-secret@db.internal:5432/cryptoflow")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(WarehouseLoaderSettings)
    message = str(excinfo.value)
    assert "DATABASE_URL:" in message
    assert "hunter2-secret" not in message
