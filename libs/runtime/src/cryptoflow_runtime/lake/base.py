"""What a lake is: an immutable object store addressed by key."""

from __future__ import annotations

import builtins
import hashlib
from typing import Protocol


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


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
