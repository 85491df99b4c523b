"""Bronze objects: RawSnapshots grouped by partition, as zstd NDJSON under deterministic keys."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import zstandard
from cryptoflow_contracts import Dataset, ObjectWritten, RawSnapshot, plausible_ts, symbol_token
from cryptoflow_runtime.lake import checked_key, sha256_hex


@dataclass(frozen=True)
class BronzeObject:
    dataset: Dataset
    exchange: str
    key: str
    data: bytes
    event_ids: list[str]
    ndjson_bytes: int = 0

    def announcement(self, lake_url: str, stored: bytes | None = None) -> ObjectWritten:
        """The ObjectWritten that says this object is durable in the lake at `lake_url` (`stored`:
        the bytes actually there, when they are another compression of the same NDJSON)."""
        data = self.data if stored is None else stored
        return ObjectWritten(
            dataset=self.dataset,
            exchange=self.exchange,
            lake_url=lake_url,
            key=self.key,
            sha256=sha256_hex(data),
            bytes=len(data),
            records=len(self.event_ids),
            source_event_ids=self.event_ids,
        )


def partition_date(snapshot: RawSnapshot) -> str:
    """The day of the page's first record; of its fetch when that time is implausible (the page is
    stored as sent, and the transformer quarantines the implausible rows, one by one)."""
    first = snapshot.first_ts
    when = datetime.fromtimestamp(first / 1000, UTC) if plausible_ts(first) and first else snapshot.fetched_at
    return when.strftime("%Y-%m-%d")


def partition_prefix(layer: str, dataset: Dataset, exchange: str, symbol: str, date: str) -> str:
    return f"{layer}/{dataset.value}/exchange={exchange}/symbol={symbol_token(symbol)}/date={date}"


def storable(snapshot: RawSnapshot) -> None:
    """Raise ValueError when the snapshot has no place in the lake (its partition would not be a key)."""
    date = partition_date(snapshot)
    checked_key(f"{partition_prefix('bronze', snapshot.dataset, snapshot.exchange, snapshot.symbol, date)}/object")


def first_copy(copies: list[RawSnapshot]) -> RawSnapshot:
    """One snapshot per event_id, whatever the arrival order.

    event_id leaves out fetched_at, so a re-fetch of the same page is the same event with another
    fetch time: keep the earliest fetch (ties: the smaller JSON), never "the last one seen".
    """
    return min(copies, key=lambda s: (s.fetched_at, s.to_json()))


def chunks_by_size(lines: list[bytes], max_bytes: int | None) -> list[list[int]]:
    """Indexes of `lines` in consecutive runs of at most max_bytes (a longer line stands alone)."""
    runs: list[list[int]] = [[]]
    size = 0
    for index, line in enumerate(lines):
        if max_bytes is not None and runs[-1] and size + len(line) > max_bytes:
            runs.append([])
            size = 0
        runs[-1].append(index)
        size += len(line)
    return [run for run in runs if run]


def build_objects(
    snapshots: list[RawSnapshot], zstd_level: int = 3, max_object_bytes: int | None = None
) -> list[BronzeObject]:
    """One object per partition (several when its NDJSON exceeds max_object_bytes).

    The same snapshots in any order, with any duplicates, give the same keys and bytes.
    """
    groups: dict[tuple[Dataset, str, str, str], dict[str, list[RawSnapshot]]] = defaultdict(lambda: defaultdict(list))
    for snapshot in snapshots:
        partition = (snapshot.dataset, snapshot.exchange, snapshot.symbol, partition_date(snapshot))
        groups[partition][snapshot.event_id].append(snapshot)
    compressor = zstandard.ZstdCompressor(level=zstd_level)
    objects = []
    for (dataset, exchange, symbol, date), by_id in sorted(groups.items()):
        chosen = [first_copy(copies) for copies in by_id.values()]
        ordered = sorted(chosen, key=lambda s: (s.timeframe or "", s.first_ts or 0, s.event_id))
        lines = [s.to_json() + b"\n" for s in ordered]
        for run in chunks_by_size(lines, max_object_bytes):
            ndjson = b"".join(lines[i] for i in run)
            members = [ordered[i] for i in run]
            # The name comes from the content, so a retried batch lands on the same key with the same bytes.
            digest = sha256_hex(ndjson)[:24]
            first = min((s.first_ts or 0) for s in members)
            objects.append(
                BronzeObject(
                    dataset=dataset,
                    exchange=exchange,
                    key=f"{partition_prefix('bronze', dataset, exchange, symbol, date)}/{first}-{digest}.ndjson.zst",
                    data=compressor.compress(ndjson),
                    event_ids=[s.event_id for s in members],
                    ndjson_bytes=len(ndjson),
                )
            )
    return objects


def decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31)


def read_object(data: bytes) -> list[RawSnapshot]:
    return [RawSnapshot.model_validate_json(line) for line in decompress(data).splitlines() if line]
