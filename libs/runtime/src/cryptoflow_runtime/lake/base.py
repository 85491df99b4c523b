"""What a lake is: an immutable object store addressed by key."""

from __future__ import annotations

import builtins
import hashlib
from typing import Protocol


class ObjectConflictError(Exception):
    """A key already holds different bytes; lake objects are immutable."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(f"{url}/{key} already exists with different content; lake objects are immutable")
        self.key = key


class Lake(Protocol):
    url: str

    async def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, durable on return.

        Writing the same bytes again is a no-op; different bytes raise
        ObjectConflictError (never overwrite).
        """

    async def get(self, key: str) -> bytes: ...

    async def exists(self, key: str) -> bool: ...

    async def list(self, prefix: str) -> builtins.list[str]: ...

    async def close(self) -> None: ...


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
