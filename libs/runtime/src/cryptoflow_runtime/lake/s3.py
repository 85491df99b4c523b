"""`s3://bucket[/prefix]` lake: S3, MinIO or moto through aiobotocore.

Never overwrite: a PUT carries `If-None-Match: *` (S3 conditional write), so the store itself
refuses to replace an existing key, with no window between a check and the write. On 412 the
existing object is read: the same bytes are a retried write (no-op), different bytes a conflict.
Stores that ignore the header (older MinIO, some S3 clones) are detected once per lake by a probe
and fall back to read-compare-then-PUT, which is racy between concurrent writers of one key.

Retries: botocore's adaptive mode retries throttling (SlowDown, 503), 5xx and connection errors
with exponential backoff and client-side rate limiting; `put` returns only after S3 stored the
object, which is what callers ack on.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import uuid
from typing import Any
from urllib.parse import urlparse

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from .base import ListedObject, ObjectMissingError, checked_key
from .conflicts import refuse_overwrite

log = logging.getLogger(__name__)

# botocore counts retries after the first try: up to 9 requests per call.
DEFAULT_MAX_ATTEMPTS = 8
# AWS answers 409 ConditionalRequestConflict while another conditional write to the key is in flight.
_CONCURRENT_WRITE_RETRIES = 10
_PROBE_PREFIX = "_cryptoflow/probes"


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_precondition_failed(exc: ClientError) -> bool:
    return error_code(exc) == "PreconditionFailed" or http_status(exc) == 412


def is_concurrent_conditional_write(exc: ClientError) -> bool:
    return error_code(exc) == "ConditionalRequestConflict" or http_status(exc) == 409


class S3Lake:
    def __init__(
        self,
        url: str,
        endpoint_url: str | None,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        conditional_writes: bool | None = None,
    ) -> None:
        parsed = urlparse(url)
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.endpoint_url = endpoint_url
        self.max_attempts = max_attempts
        # None: not known yet; probed before the first write.
        self.conditional_writes = conditional_writes
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def _s3(self) -> Any:
        if self._client is None:
            session = get_session()
            config = Config(
                retries={"max_attempts": self.max_attempts, "mode": "adaptive"}, connect_timeout=5, read_timeout=30
            )
            self._client = await self._stack.enter_async_context(
                session.create_client("s3", endpoint_url=self.endpoint_url, config=config)
            )
        return self._client

    def _key(self, key: str, *, prefix: bool = False) -> str:
        """The full object key; an object's key (not a listing prefix) must stay inside the lake."""
        if not prefix:
            checked_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def ensure_bucket(self) -> None:
        s3 = await self._s3()
        try:
            await s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            with contextlib.suppress(ClientError):
                await s3.create_bucket(Bucket=self.bucket)

    async def supports_conditional_writes(self) -> bool:
        if self.conditional_writes is None:
            self.conditional_writes = await self._probe_conditional_writes()
            log.info(
                "s3 conditional writes",
                extra={"lake_url": self.url, "supported": self.conditional_writes},
            )
        return self.conditional_writes

    async def _probe_conditional_writes(self) -> bool:
        """Write a throwaway key twice with If-None-Match: only a store that refuses the second honours it."""
        s3 = await self._s3()
        probe = self._key(f"{_PROBE_PREFIX}/{uuid.uuid4().hex}")
        try:
            await s3.put_object(Bucket=self.bucket, Key=probe, Body=b"1", IfNoneMatch="*")
            try:
                await s3.put_object(Bucket=self.bucket, Key=probe, Body=b"2", IfNoneMatch="*")
            except ClientError as exc:
                return is_precondition_failed(exc)
            return False
        except ClientError:
            # The header itself is rejected (NotImplemented, InvalidArgument): no conditional writes.
            return False
        finally:
            with contextlib.suppress(ClientError):
                await s3.delete_object(Bucket=self.bucket, Key=probe)

    async def put(self, key: str, data: bytes) -> None:
        if await self.supports_conditional_writes():
            await self._put_if_absent(key, data)
        else:
            await self._put_after_compare(key, data)

    async def _put_if_absent(self, key: str, data: bytes) -> None:
        s3 = await self._s3()
        full = self._key(key)
        for attempt in range(_CONCURRENT_WRITE_RETRIES):
            try:
                # PUT returns only after S3 stored the object: that is our durability point.
                await s3.put_object(Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*")
                return
            except ClientError as exc:
                if is_concurrent_conditional_write(exc):
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                if not is_precondition_failed(exc):
                    raise
            existing = await self._get_or_none(full)
            if existing is None:
                continue  # gone again (a lifecycle rule?): try the conditional PUT once more
            if existing != data:
                raise refuse_overwrite(self.url, key, existing, data)
            return
        raise RuntimeError(f"{self.url}/{key}: conditional PUT kept conflicting with concurrent writers")

    async def _put_after_compare(self, key: str, data: bytes) -> None:
        s3 = await self._s3()
        full = self._key(key)
        existing = await self._get_or_none(full)
        if existing is not None:
            if existing != data:
                raise refuse_overwrite(self.url, key, existing, data)
            return
        await s3.put_object(Bucket=self.bucket, Key=full, Body=data)

    async def _get_or_none(self, full_key: str) -> bytes | None:
        s3 = await self._s3()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=full_key)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def get(self, key: str) -> bytes:
        data = await self._get_or_none(self._key(key))
        if data is None:
            raise ObjectMissingError(f"{self.url}/{key}")
        return data

    async def exists(self, key: str) -> bool:
        s3 = await self._s3()
        try:
            await s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if http_status(exc) == 404 or error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def list(self, prefix: str) -> builtins.list[str]:
        s3 = await self._s3()
        keys: list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix, prefix=True)):
            keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    async def list_written(self, prefix: str) -> builtins.list[ListedObject]:
        s3 = await self._s3()
        listed: list[ListedObject] = []
        paginator = s3.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix, prefix=True)):
            for item in page.get("Contents", []):
                written_ns = int(item["LastModified"].timestamp() * 1_000_000) * 1000
                listed.append(ListedObject(item["Key"][strip:], written_ns))
        return sorted(listed, key=lambda obj: obj.key)

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        # S3 answers 204 for a key that is not there: a retried delete is a no-op.
        await s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
