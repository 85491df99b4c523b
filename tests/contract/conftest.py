"""Lakes of every kind, empty, for the shared contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptoflow_runtime.lake import Lake, S3Lake, open_lake

S3_PREFIX = "some/prefix"
BACKENDS = ["file", "s3", "s3-prefix", "s3-read-compare"]


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str | None]:
    """(backend, lake URL, S3 endpoint) of an empty lake of the parametrized kind."""
    backend = str(request.param)
    if backend == "file":
        return backend, f"file://{tmp_path / 'lake'}", None
    request.getfixturevalue("s3_credentials")
    endpoint: str = request.getfixturevalue("s3_endpoint_url")
    bucket: str = request.getfixturevalue("s3_bucket")
    return backend, f"s3://{bucket}/{S3_PREFIX}" if backend == "s3-prefix" else f"s3://{bucket}", endpoint


@pytest.fixture
async def lake(location: tuple[str, str, str | None]) -> AsyncIterator[Lake]:
    """An empty lake: a directory; a bucket; a bucket under a key prefix; or a bucket written without
    conditional PUTs (the read-compare fallback for stores that ignore If-None-Match)."""
    backend, url, endpoint = location
    if backend == "s3-read-compare":
        opened: Lake = S3Lake(url, endpoint, conditional_writes=False)
    else:
        opened = await open_lake(url, endpoint)
    try:
        yield opened
    finally:
        await opened.close()
