"""`file://` lake: a directory tree, for the embedded local default."""

from __future__ import annotations

import asyncio
import builtins
import os
import uuid
from pathlib import Path

from .base import KeyOutsideLakeError, ListedObject, ObjectMissingError, checked_key
from .conflicts import refuse_overwrite


class FileLake:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.root = Path(url.removeprefix("file://")).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / checked_key(key)).resolve()
        if self.root not in path.parents:  # a link inside the lake pointing out of it
            raise KeyOutsideLakeError(f"key {key[:200]!r} escapes the lake root")
        return path

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.is_file():
            self._same_or_refuse(key, path, data)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unique per writer (puts run in worker threads, and other processes share the lake), so
        # two writers of one key never share, truncate or unlink each other's temporary file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if another writer got there first, unlike rename(): no silent overwrite.
        try:
            os.link(tmp, path)
        except FileExistsError:
            self._same_or_refuse(key, path, data)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _same_or_refuse(self, key: str, path: Path, data: bytes) -> None:
        existing = path.read_bytes()
        if existing != data:
            raise refuse_overwrite(self.url, key, existing, data)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise ObjectMissingError(f"{self.url}/{key}")
        return await asyncio.to_thread(path.read_bytes)

    async def exists(self, key: str) -> bool:
        # A directory is a key prefix, not an object (as in S3).
        return self._path(key).is_file()

    async def list(self, prefix: str) -> builtins.list[str]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[str]:
        # Walk only the directory the prefix names (not the whole lake), then filter by the rest.
        folder, _, _ = prefix.rpartition("/")
        start = self.root / folder if folder else self.root
        if not start.is_dir() or (folder and self.root not in start.resolve().parents):
            return []
        keys = []
        for path in start.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def list_written(self, prefix: str) -> builtins.list[ListedObject]:
        return await asyncio.to_thread(self._list_written, prefix)

    def _list_written(self, prefix: str) -> builtins.list[ListedObject]:
        listed = []
        for key in self._list(prefix):
            try:
                listed.append(ListedObject(key, (self.root / key).stat().st_mtime_ns))
            except FileNotFoundError:
                continue  # deleted between the walk and the stat
        return listed

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def close(self) -> None:
        return None
