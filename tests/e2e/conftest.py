"""Fixtures for whole-pipeline tests: a Pipeline per test on fresh NATS, database and lake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .harness import Pipeline


@pytest.fixture(params=["file", "s3"])
def lake_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "file":
        yield f"file://{tmp_path / 'lake'}"
    else:
        bucket: str = request.getfixturevalue("s3_bucket")
        yield f"s3://{bucket}"


@pytest.fixture
def file_lake_url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'lake'}"


def _pipeline(nats_url: str, database_url: str, lake_url: str, tmp_path: Path, s3: str | None) -> Pipeline:
    workdir = tmp_path / "pipeline"
    workdir.mkdir()
    return Pipeline(
        nats_url=nats_url,
        database_url=database_url,
        lake_url=lake_url,
        workdir=workdir,
        s3_endpoint_url=s3 if lake_url.startswith("s3://") else None,
    )


@pytest.fixture
async def pipeline(
    request: pytest.FixtureRequest, fresh_nats_url: str, fresh_database_url: str, lake_url: str, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    s3 = request.getfixturevalue("s3_endpoint_url") if lake_url.startswith("s3://") else None
    pipe = _pipeline(fresh_nats_url, fresh_database_url, lake_url, tmp_path, s3)
    yield pipe
    pipe.stop_all()


@pytest.fixture
async def file_pipeline(
    fresh_nats_url: str, fresh_database_url: str, file_lake_url: str, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    """A pipeline on the file:// lake, for tests whose point is not the lake backend."""
    pipe = _pipeline(fresh_nats_url, fresh_database_url, file_lake_url, tmp_path, None)
    yield pipe
    pipe.stop_all()
