"""S3 throttling and server errors are retried with backoff; a PUT returns only once the object is stored."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from cryptoflow_runtime.lake import S3Lake, open_lake

from .s3_faults import FaultPlan, faulty_s3_proxy

KEY = "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/1-a.ndjson.zst"


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
async def test_put_is_retried_through_errors_and_lands_once(
    s3_credentials: None, s3_endpoint_url: str, s3_bucket: str, status: int, code: str
) -> None:
    plan = FaultPlan(count=3, status=status, code=code)
    async with faulty_s3_proxy(s3_endpoint_url, plan) as proxy:
        lake = S3Lake(f"s3://{s3_bucket}", proxy, max_attempts=8)
        try:
            await lake.put(KEY, b"payload")
            await lake.put(KEY, b"payload")  # retried write of the same bytes: still a no-op
        finally:
            await lake.close()
    assert plan.injected == 3
    assert plan.forwarded_puts == [f"/{s3_bucket}/{KEY}"] * 2
    direct = await open_lake(f"s3://{s3_bucket}", s3_endpoint_url)
    try:
        assert await direct.get(KEY) == b"payload"
    finally:
        await direct.close()


async def test_put_gives_up_after_max_attempts_and_stores_nothing(
    s3_credentials: None, s3_endpoint_url: str, s3_bucket: str
) -> None:
    plan = FaultPlan(count=1000)
    async with faulty_s3_proxy(s3_endpoint_url, plan) as proxy:
        lake = S3Lake(f"s3://{s3_bucket}", proxy, max_attempts=3)
        try:
            with pytest.raises(ClientError) as failed:
                await lake.put(KEY, b"payload")
        finally:
            await lake.close()
    assert failed.value.response["Error"]["Code"] == "SlowDown"
    assert plan.injected == 1 + 3  # botocore: the first try, then max_attempts retries
    direct = await open_lake(f"s3://{s3_bucket}", s3_endpoint_url)
    try:
        assert not await direct.exists(KEY)
    finally:
        await direct.close()
