"""`cryptoflow ingest` reads the file where it is: a local path, or s3://bucket/key on a real S3 API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiobotocore.session import get_session
from cryptoflow_extractor.ingest import IngestError, read_source

BODY = b"t,o,h,l,c,v\n1704067260000,1,2,0.5,1.5,10\n"


async def test_a_file_on_s3_is_read_from_the_configured_endpoint(
    s3_endpoint_url: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Credentials as the lake takes them: from the environment.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, os.environ.get(name, "testing"))
    client = get_session().create_client(
        "s3",
        endpoint_url=s3_endpoint_url,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )
    async with client as s3:
        await s3.put_object(Bucket=s3_bucket, Key="exports/2024/candles.csv", Body=BODY)
    assert await read_source(f"s3://{s3_bucket}/exports/2024/candles.csv", s3_endpoint_url) == BODY
    with pytest.raises(IngestError, match="cannot be read"):
        await read_source(f"s3://{s3_bucket}/exports/none.csv", s3_endpoint_url)
    with pytest.raises(IngestError, match="expected s3://bucket/key"):
        await read_source(f"s3://{s3_bucket}", s3_endpoint_url)


async def test_a_local_file_is_read_by_path_or_file_url(tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    path.write_bytes(BODY)
    assert await read_source(str(path), None) == BODY
    assert await read_source(f"file://{path}", None) == BODY
    with pytest.raises(IngestError, match="No such file"):
        await read_source(str(tmp_path / "none.csv"), None)
