"""What a lake is: an immutable object store addressed by key."""

from __future__ import annotations

import builtins
import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class KeyOutsideLakeError(ValueError):
    """A key that would name something outside the lake's root (`..`, absolute, empty parts)."""


class ObjectMissingError(FileNotFoundError):
    """No object under the key."""


def checked_key(key: str) -> str:
    """The key, if it names an object inside the lake: relative, no `.`/`..` or empty segments."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\0" in key:
        raise KeyOutsideLakeError(f"key {key[:200]!r} escapes the lake root")
    return key


class ObjectConflictError(Exception):
    """A key already holds different bytes; lake objects are immutable."""

    def __init__(self, url: str, key: str, existing_sha256: str | None = None, new_sha256: str | None = None) -> None:
        super().__init__(f"{url}/{key} already exists with different content; lake objects are immutable")
        self.url = url
        self.key = key
        self.existing_sha256 = existing_sha256
        self.new_sha256 = new_sha256


class Lake(Protocol):
    url: str

    async def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, durable on return.

        Writing the same bytes again is a no-op; different bytes raise
        ObjectConflictError (never overwrite) after the conflict is counted and logged.
        """

    async def get(self, key: str) -> bytes: ...

    async def exists(self, key: str) -> bool: ...

    async def list(self, prefix: str) -> builtins.list[str]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ListedObject:
    """A key with the time the store last wrote it (ns since the epoch; S3 gives whole seconds or ms)."""

    key: str
    written_ns: int


@runtime_checkable
class MaintainedLake(Lake, Protocol):
    """A lake that can also say when each object was written and delete an object: what silver
    compaction and its readers need (decision 0050). Only compaction ever deletes, and only silver."""

    async def list_written(self, prefix: str) -> builtins.list[ListedObject]:
        """The objects under `prefix`, sorted by key, with their write times."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error (a retried delete)."""
        ...


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
