"""Shared fixtures: real NATS, PostgreSQL and S3 (moto) servers.

Each honours its env var (NATS_URL, DATABASE_URL, S3_ENDPOINT_URL) and then starts nothing, so
the suite can run against servers someone else provides; otherwise the servers are launched as
child processes for the session and stopped by PID at its end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from cryptoflow_cli.servers import start_moto_s3, start_nats, start_postgres


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("NATS_URL"):
        yield url
        return
    with start_nats(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture
def fresh_nats_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway nats-server of this test's own, so streams and consumers never leak between tests."""
    if url := os.environ.get("NATS_URL"):
        yield url
        return
    with start_nats(tmp_path / "nats") as server:
        yield server.url


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    # fast_unsafe (no fsync) is fine: the cluster is thrown away with the session.
    with start_postgres(tmp_path_factory.mktemp("postgres") / "pgdata", fast_unsafe=True) as server:
        yield server.url


@pytest.fixture
async def fresh_database_url(database_url: str) -> AsyncIterator[str]:
    """A URL of a database created for this test alone on the `database_url` server."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield urlsplit(database_url)._replace(path=f"/{name}").geturl()
    # Best effort: the server is throwaway or shared, and a failed drop must not fail the test.
    try:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError):
        pass


@pytest.fixture(scope="session")
def s3_endpoint_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("S3_ENDPOINT_URL"):
        yield url
        return
    with start_moto_s3(log_path=tmp_path_factory.mktemp("moto") / "moto-s3.log") as server:
        yield server.url


@pytest.fixture
async def s3_bucket(s3_endpoint_url: str) -> AsyncIterator[str]:
    """The name of a bucket created for this test alone on the `s3_endpoint_url` endpoint."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    client = get_session().create_client(
        "s3",
        endpoint_url=s3_endpoint_url,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )
    async with client as s3:
        # us-east-1 is the one region that rejects an explicit LocationConstraint.
        if region == "us-east-1":
            await s3.create_bucket(Bucket=name)
        else:
            await s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        yield name
        # Best effort, so a long-lived S3_ENDPOINT_URL server does not fill up with test buckets.
        try:
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
                for obj in page.get("Contents", []):
                    await s3.delete_object(Bucket=name, Key=obj["Key"])
            await s3.delete_bucket(Bucket=name)
        except (BotoCoreError, ClientError):
            pass
