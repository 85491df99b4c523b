"""The local server launchers start real servers, keep their data across restarts and stop them by PID."""

from __future__ import annotations

import os
import signal
import socket
import uuid
from pathlib import Path

import asyncpg
import nats
import psutil
import pytest
from aiobotocore.session import get_session
from cryptoflow_cli.servers import (
    HOST,
    ServerProcess,
    ServerStartError,
    free_port,
    start_moto_s3,
    start_nats,
    start_postgres,
)
from nats.js.api import StreamConfig

pytestmark = pytest.mark.timeout(60)


def assert_gone(server: ServerProcess) -> None:
    assert not server.running
    assert not psutil.pid_exists(server.pid)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, port))


async def test_nats_jetstream_dedups_and_keeps_streams_across_restart(tmp_path: Path) -> None:
    with start_nats(tmp_path) as server:
        assert server.url == f"nats://{HOST}:{server.port}"
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="TEST", subjects=["test.>"]))
            first = await js.publish("test.a", b"x", headers={"Nats-Msg-Id": "m-1"})
            second = await js.publish("test.a", b"x", headers={"Nats-Msg-Id": "m-1"})
            assert not first.duplicate
            assert second.duplicate
            assert (await js.stream_info("TEST")).state.messages == 1
        finally:
            await nc.close()
        first_pid = server.pid
        server.restart()
        assert server.pid != first_pid
        assert not psutil.pid_exists(first_pid)
        nc = await nats.connect(server.url)
        try:
            assert (await nc.jetstream().stream_info("TEST")).state.messages == 1
        finally:
            await nc.close()
    assert_gone(server)
    assert (tmp_path / "jetstream").is_dir()


def test_stop_kills_a_server_that_ignores_its_stop_signal(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    # A stopped (SIGSTOP) process cannot act on SIGTERM; only the SIGKILL fallback ends it.
    os.kill(server.pid, signal.SIGSTOP)
    server.stop(timeout=0.3)
    assert_gone(server)
    server.stop()  # idempotent


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        with pytest.raises(ServerStartError, match=r"(?i)address already in use") as info:
            start_nats(tmp_path, port=taken.getsockname()[1])
    assert info.value.port_in_use


async def test_postgres_serves_and_keeps_data_across_stop_and_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    server = start_postgres(data_dir, fast_unsafe=True)
    try:
        assert server.url == f"postgresql://postgres@{HOST}:{server.port}/cryptoflow"
        conn = await asyncpg.connect(server.url)
        try:
            await conn.execute("CREATE TABLE kept (v text)")
            await conn.execute("INSERT INTO kept VALUES ('row')")
        finally:
            await conn.close()

        # A second server on the same data dir is refused, and the error says why.
        with pytest.raises(ServerStartError, match=r"postmaster\.pid"):
            start_postgres(data_dir, fast_unsafe=True)
    finally:
        server.stop()
    assert_gone(server)

    # What `cryptoflow up` does on its second run: the same data dir, initdb skipped.
    with start_postgres(data_dir, port=server.port, fast_unsafe=True) as again:
        assert again.url == server.url
        conn = await asyncpg.connect(again.url)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "row"
        finally:
            await conn.close()
        again.restart()
        conn = await asyncpg.connect(again.url)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "row"
        finally:
            await conn.close()
    assert_gone(again)


async def test_moto_s3_put_and_get(tmp_path: Path) -> None:
    with start_moto_s3(log_path=tmp_path / "moto.log") as server:
        async with get_session().create_client(
            "s3",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ) as s3:
            await s3.create_bucket(Bucket="lake")
            await s3.put_object(Bucket="lake", Key="a/b.json", Body=b'{"ok": true}')
            response = await s3.get_object(Bucket="lake", Key="a/b.json")
            async with response["Body"] as body:
                assert await body.read() == b'{"ok": true}'
    assert_gone(server)


async def test_fresh_database_is_its_own(fresh_database_url: str, database_url: str) -> None:
    assert fresh_database_url != database_url
    conn = await asyncpg.connect(fresh_database_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == fresh_database_url.rsplit("/", 1)[1]
        await conn.execute("CREATE TABLE only_here (v int)")
    finally:
        await conn.close()


async def test_s3_bucket_exists(s3_bucket: str, s3_endpoint_url: str) -> None:
    async with get_session().create_client(
        "s3",
        endpoint_url=s3_endpoint_url,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    ) as s3:
        await s3.head_bucket(Bucket=s3_bucket)
        await s3.put_object(Bucket=s3_bucket, Key=f"k-{uuid.uuid4().hex}", Body=b"x")


async def test_fresh_nats_url_has_jetstream(fresh_nats_url: str, nats_url: str) -> None:
    if "NATS_URL" not in os.environ:
        assert fresh_nats_url != nats_url
    for url in (fresh_nats_url, nats_url):
        nc = await nats.connect(url)
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()
