"""Stream retention and limits: STREAM_<NAME>_* settings, applied by every service at start."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from cryptoflow_contracts import Stream
from cryptoflow_lake_writer.app import build
from cryptoflow_lake_writer.config import LakeWriterSettings
from cryptoflow_runtime import ConfigError, ensure_streams
from cryptoflow_runtime.jetstream import DEFAULT_LIMITS
from cryptoflow_runtime.settings import StreamLimits, stream_limits_from_env
from nats.js import JetStreamContext

GIB = 1024**3


@pytest.fixture(autouse=True)
def no_stream_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start each test without STREAM_* variables of the environment running the suite."""
    import os

    for name in list(os.environ):
        if name.startswith("STREAM_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def js(fresh_nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(fresh_nats_url)
    yield nc.jetstream()
    await nc.close()


def test_every_stream_has_its_settings_and_unset_means_not_configured() -> None:
    env = {
        "STREAM_RAW_MAX_AGE_S": "3600",
        "STREAM_RAW_MAX_BYTES": "10G",
        "STREAM_DLQ_MAX_MSGS": "1000000",
        "STREAM_SILVER_REPLICAS": "3",
        "STREAM_LAKE_MAX_BYTES": "-1",
        "STREAM_WAREHOUSE_MAX_AGE_S": "0",
    }
    limits = stream_limits_from_env(env)
    assert set(limits) == set(Stream)
    assert limits[Stream.RAW] == StreamLimits(max_age_s=3600, max_bytes=10 * GIB)
    assert limits[Stream.DLQ] == StreamLimits(max_msgs=1_000_000)
    assert limits[Stream.SILVER] == StreamLimits(replicas=3)
    assert limits[Stream.LAKE] == StreamLimits(max_bytes=-1)
    assert limits[Stream.WAREHOUSE] == StreamLimits(max_age_s=0)
    assert limits[Stream.GAPS] == StreamLimits()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAM_RAW_MAX_AGE_S", "a week"),
        ("STREAM_RAW_MAX_AGE_S", "-1"),
        ("STREAM_LAKE_MAX_BYTES", "0"),
        ("STREAM_LAKE_MAX_BYTES", "10 parsecs"),
        ("STREAM_DLQ_MAX_MSGS", "0"),
        ("STREAM_SILVER_REPLICAS", "7"),
        ("STREAM_GAPS_REPLICAS", "two"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}: .*got '{value}'"):
        stream_limits_from_env({name: value})


async def stream_config(js: JetStreamContext, stream: Stream) -> tuple[float | None, int | None, int | None]:
    config = (await js.stream_info(stream.value)).config
    return config.max_age, config.max_bytes, config.max_msgs


async def start_and_stop(settings: LakeWriterSettings) -> None:
    service = await build(settings)
    await service.app.start()
    await service.app.stop()


async def test_a_service_start_creates_then_updates_streams_with_the_configured_limits(
    fresh_nats_url: str, js: JetStreamContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = LakeWriterSettings(nats_url=fresh_nats_url, lake_url=f"file://{tmp_path / 'lake'}", http_port=0)

    monkeypatch.setenv("STREAM_RAW_MAX_AGE_S", "3600")
    monkeypatch.setenv("STREAM_RAW_MAX_BYTES", "1G")
    await start_and_stop(settings)
    assert await stream_config(js, Stream.RAW) == (3600, GIB, -1)
    # Streams without settings get the defaults.
    assert await stream_config(js, Stream.LAKE) == (DEFAULT_LIMITS.max_age_s, -1, -1)

    # Changed: the next start updates the existing stream, keeping its messages and other settings.
    await js.publish("cryptoflow.raw.ohlcv.binance.BTC-USDT", b"{}", headers={"Nats-Msg-Id": "kept"})
    monkeypatch.setenv("STREAM_RAW_MAX_AGE_S", "7200")
    monkeypatch.setenv("STREAM_RAW_MAX_MSGS", "500")
    monkeypatch.setenv("STREAM_LAKE_MAX_AGE_S", "0")
    await start_and_stop(settings)
    assert await stream_config(js, Stream.RAW) == (7200, GIB, 500)
    assert await stream_config(js, Stream.LAKE) == (0, -1, -1)
    info = await js.stream_info(Stream.RAW.value)
    assert info.state.messages == 1
    assert info.config.duplicate_window == 15 * 60
    assert info.config.subjects == ["cryptoflow.raw.>"]

    # Unset: not enforced. A process without the variables (a backfill, another tool) keeps them.
    for name in ("STREAM_RAW_MAX_AGE_S", "STREAM_RAW_MAX_BYTES", "STREAM_RAW_MAX_MSGS", "STREAM_LAKE_MAX_AGE_S"):
        monkeypatch.delenv(name)
    await ensure_streams(js)
    assert await stream_config(js, Stream.RAW) == (7200, GIB, 500)
    assert await stream_config(js, Stream.LAKE) == (0, -1, -1)


async def test_replicas_a_single_server_cannot_have_are_a_config_error_naming_the_variable(
    js: JetStreamContext,
) -> None:
    await ensure_streams(js, {})
    with pytest.raises(ConfigError, match="STREAM_SILVER_REPLICAS=3"):
        await ensure_streams(js, {Stream.SILVER: StreamLimits(replicas=3)})
    assert (await js.stream_info(Stream.SILVER.value)).config.num_replicas == 1


def test_a_service_with_a_bad_stream_setting_exits_2_naming_it(fresh_nats_url: str, tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "NATS_URL": fresh_nats_url,
        "LAKE_URL": f"file://{tmp_path / 'lake'}",
        "STREAM_RAW_MAX_AGE_S": "forever",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cryptoflow_lake_writer.main"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "STREAM_RAW_MAX_AGE_S" in done.stderr
