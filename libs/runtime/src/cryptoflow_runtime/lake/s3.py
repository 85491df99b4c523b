"""`s3://bucket[/prefix]` lake: S3, MinIO or moto through aiobotocore."""

from __future__ import annotations

import builtins
import contextlib
from typing import Any
from urllib.parse import urlparse

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from .base import ObjectConflictError, sha256_hex


class S3Lake:
    def __init__(self, url: str, endpoint_url: str | None) -> None:
        parsed = urlparse(url)
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.endpoint_url = endpoint_url
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def _s3(self) -> Any:
        if self._client is None:
            session = get_session()
            config = Config(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=5, read_timeout=30)
            self._client = await self._stack.enter_async_context(
                session.create_client("s3", endpoint_url=self.endpoint_url, config=config)
            )
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def ensure_bucket(self) -> None:
        s3 = await self._s3()
        try:
            await s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            with contextlib.suppress(ClientError):
                await s3.create_bucket(Bucket=self.bucket)

    async def put(self, key: str, data: bytes) -> None:
        s3 = await self._s3()
        full = self._key(key)
        existing = await self._get_or_none(full)
        if existing is not None:
            if sha256_hex(existing) != sha256_hex(data):
                raise ObjectConflictError(self.url, key)
            return
        # PUT returns only after S3 stored the object: that is our durability point.
        await s3.put_object(Bucket=self.bucket, Key=full, Body=data)

    async def _get_or_none(self, full_key: str) -> bytes | None:
        s3 = await self._s3()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=full_key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def get(self, key: str) -> bytes:
        data = await self._get_or_none(self._key(key))
        if data is None:
            raise FileNotFoundError(f"{self.url}/{key}")
        return data

    async def exists(self, key: str) -> bool:
        s3 = await self._s3()
        try:
            await s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError:
            return False
        return True

    async def list(self, prefix: str) -> builtins.list[str]:
        s3 = await self._s3()
        keys: list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
