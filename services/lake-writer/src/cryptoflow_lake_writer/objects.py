"""Bronze objects: RawSnapshots grouped by partition, as zstd NDJSON under deterministic keys."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import zstandard
from cryptoflow_contracts import Dataset, RawSnapshot, symbol_token
from cryptoflow_runtime.lake import sha256_hex


@dataclass(frozen=True)
class BronzeObject:
    dataset: Dataset
    exchange: str
    key: str
    data: bytes
    event_ids: list[str]


def partition_date(snapshot: RawSnapshot) -> str:
    when = datetime.fromtimestamp(snapshot.first_ts / 1000, UTC) if snapshot.first_ts else snapshot.fetched_at
    return when.strftime("%Y-%m-%d")


def partition_prefix(layer: str, dataset: Dataset, exchange: str, symbol: str, date: str) -> str:
    return f"{layer}/{dataset.value}/exchange={exchange}/symbol={symbol_token(symbol)}/date={date}"


def build_objects(snapshots: list[RawSnapshot], zstd_level: int = 3) -> list[BronzeObject]:
    """One object per partition; same snapshots in any order → same keys and bytes."""
    groups: dict[tuple[Dataset, str, str, str], dict[str, RawSnapshot]] = defaultdict(dict)
    for snapshot in snapshots:
        partition = (snapshot.dataset, snapshot.exchange, snapshot.symbol, partition_date(snapshot))
        groups[partition][snapshot.event_id] = snapshot
    compressor = zstandard.ZstdCompressor(level=zstd_level)
    objects = []
    for (dataset, exchange, symbol, date), by_id in sorted(groups.items()):
        ordered = sorted(by_id.values(), key=lambda s: (s.timeframe or "", s.first_ts or 0, s.event_id))
        ndjson = b"".join(s.to_json() + b"\n" for s in ordered)
        # The name comes from the content, so a retried batch lands on the same key with the same bytes.
        digest = sha256_hex(ndjson)[:24]
        first = min((s.first_ts or 0) for s in ordered)
        name = f"{first}-{digest}.ndjson.zst"
        objects.append(
            BronzeObject(
                dataset=dataset,
                exchange=exchange,
                key=f"{partition_prefix('bronze', dataset, exchange, symbol, date)}/{name}",
                data=compressor.compress(ndjson),
                event_ids=[s.event_id for s in ordered],
            )
        )
    return objects


def read_object(data: bytes) -> list[RawSnapshot]:
    ndjson = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31)
    return [RawSnapshot.model_validate_json(line) for line in ndjson.splitlines() if line]
