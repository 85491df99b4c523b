"""`file://` lake: a directory tree, for the embedded local default."""

from __future__ import annotations

import asyncio
import builtins
import os
from pathlib import Path

from .base import ObjectConflictError, sha256_hex


class FileLake:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.root = Path(url.removeprefix("file://")).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"key {key!r} escapes the lake root")
        return path

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.exists():
            if sha256_hex(path.read_bytes()) != sha256_hex(data):
                raise ObjectConflictError(self.url, key)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if another writer got there first, unlike rename(): no silent overwrite.
        try:
            os.link(tmp, path)
        except FileExistsError:
            if sha256_hex(path.read_bytes()) != sha256_hex(data):
                raise ObjectConflictError(self.url, key) from None
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def exists(self, key: str) -> bool:
        return self._path(key).exists()

    async def list(self, prefix: str) -> builtins.list[str]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[str]:
        keys = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def close(self) -> None:
        return None
