"""A silver partition's manifest: which compacted files are live and which batch files they replaced.

Manifests are immutable like every lake object: generation N of a partition is the object
`<partition>/_manifest/<N:010d>.json`, written with the lake's never-overwrite put, so two
compactors of one partition cannot both commit generation N (the second gets
ObjectConflictError). The highest generation listed is the partition's state (decision 0050).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson

from ..lake import Lake

MANIFEST_DIR = "_manifest"
COMPACTED_DIR = "_compacted"
MANIFEST_FORMAT = 1


class ManifestError(ValueError):
    """A manifest object this code cannot read (another format, or not a manifest at all)."""


@dataclass(frozen=True)
class CompactedFile:
    key: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class Manifest:
    partition: str  # e.g. silver/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-01-01
    generation: int
    table: str
    created_at: datetime  # when it was committed: replaced files may go once it is older than the grace
    files: tuple[CompactedFile, ...]
    # Every batch file (key → sha256) whose rows a compacted file of this generation holds:
    # cumulative over generations, so one manifest alone tells a reader what to skip.
    replaced: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return manifest_key(self.partition, self.generation)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": MANIFEST_FORMAT,
                "partition": self.partition,
                "generation": self.generation,
                "table": self.table,
                "created_at": self.created_at.isoformat(),
                "files": [{"key": f.key, "sha256": f.sha256, "rows": f.rows} for f in self.files],
                "replaced": dict(sorted(self.replaced.items())),
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            raw = orjson.loads(data)
            if raw.get("format") != MANIFEST_FORMAT:
                raise ManifestError(f"manifest format {raw.get('format')!r}; this reader knows {MANIFEST_FORMAT}")
            return cls(
                partition=str(raw["partition"]),
                generation=int(raw["generation"]),
                table=str(raw["table"]),
                created_at=datetime.fromisoformat(raw["created_at"]),
                files=tuple(CompactedFile(str(f["key"]), str(f["sha256"]), int(f["rows"])) for f in raw["files"]),
                replaced={str(k): str(v) for k, v in raw["replaced"].items()},
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"not a silver manifest: {exc}") from exc


def manifest_key(partition: str, generation: int) -> str:
    return f"{partition}/{MANIFEST_DIR}/{generation:010d}.json"


def manifest_generation(key: str) -> int | None:
    """The generation a manifest key names, None for any other key."""
    folder, _, name = key.rpartition("/")
    if not folder.endswith(f"/{MANIFEST_DIR}") or not name.endswith(".json"):
        return None
    stem = name.removesuffix(".json")
    return int(stem) if stem.isdigit() else None


def compacted_key(partition: str, generation: int, sha256: str) -> str:
    return f"{partition}/{COMPACTED_DIR}/{generation:010d}-{sha256[:24]}.parquet"


def compacted_generation(key: str) -> int:
    """The generation a compacted file was written for (its name's first part); 0 if unnamed."""
    stem = key.rpartition("/")[2].partition("-")[0]
    return int(stem) if stem.isdigit() else 0


async def read_manifest(lake: Lake, key: str) -> Manifest:
    return Manifest.from_json(await lake.get(key))
