"""The lake: immutable objects in S3/MinIO (`s3://`) or a directory (`file://`)."""

from __future__ import annotations

from .base import (
    KeyOutsideLakeError,
    Lake,
    ListedObject,
    MaintainedLake,
    ObjectConflictError,
    ObjectMissingError,
    checked_key,
    sha256_hex,
)
from .conflicts import LAKE_CONFLICTS
from .file import FileLake
from .s3 import DEFAULT_MAX_ATTEMPTS, S3Lake


async def open_lake(url: str, s3_endpoint_url: str | None = None, s3_max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Lake:
    if url.startswith("file://"):
        return FileLake(url)
    if url.startswith("s3://"):
        lake = S3Lake(url, s3_endpoint_url, max_attempts=s3_max_attempts)
        await lake.ensure_bucket()
        return lake
    raise ValueError(f"unsupported lake URL {url!r} (expected file:// or s3://)")


__all__ = [
    "LAKE_CONFLICTS",
    "FileLake",
    "KeyOutsideLakeError",
    "Lake",
    "ListedObject",
    "MaintainedLake",
    "ObjectConflictError",
    "ObjectMissingError",
    "S3Lake",
    "checked_key",
    "open_lake",
    "sha256_hex",
]
