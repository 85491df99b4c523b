"""One bronze object → silver Parquet, quarantine Parquet, and the events announcing them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl
import zstandard
from cryptoflow_contracts import BatchReady, DeadLetter, ObjectWritten, Stage
from cryptoflow_runtime import Lake, PoisonMessageError
from cryptoflow_runtime.lake import sha256_hex

from .datasets import TRANSFORMS
from .native import unified_bronze
from .silver_files import to_parquet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransformResult:
    batch: BatchReady | None
    quarantine: DeadLetter | None
    reasons: dict[str, int]
    silver: pl.DataFrame | None = None  # the rows of `batch`, for the derived series
    duplicates: int = 0


def layer_key(bronze_key: str, layer: str) -> str:
    """bronze/<partition>/<name>.ndjson.zst → <layer>/<partition>/<name>.parquet (deterministic)."""
    if not bronze_key.startswith("bronze/"):
        raise PoisonMessageError(f"{bronze_key!r} is not a bronze key")
    return layer + bronze_key.removeprefix("bronze").removesuffix(".ndjson.zst") + ".parquet"


async def transform_object(lake: Lake, written: ObjectWritten) -> TransformResult:
    transform = TRANSFORMS.get(written.dataset)
    if transform is None:
        raise PoisonMessageError(f"no transformer for dataset {written.dataset.value!r}")
    if not written.key.startswith(f"bronze/{written.dataset.value}/"):
        raise PoisonMessageError(f"{written.key!r} is not a bronze object of {written.dataset.value}")
    data = await lake.get(written.key)
    if sha256_hex(data) != written.sha256:
        raise PoisonMessageError(f"{written.key}: sha256 differs from ObjectWritten; object corrupt or replaced")
    try:
        ndjson = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31)
    except zstandard.ZstdError as exc:
        raise PoisonMessageError(f"{written.key}: not a zstd object ({exc})") from exc
    # Version 2 snapshots are parsed from what the exchange sent, with the current ccxt.
    checked = transform.check(unified_bronze(ndjson))
    table = transform.table.name
    reasons = checked.reasons

    quarantine: DeadLetter | None = None
    if checked.rejected.height:
        quarantine_key = layer_key(written.key, "quarantine")
        await lake.put(quarantine_key, to_parquet(checked.rejected, table))
        quarantine = DeadLetter(
            stage=Stage.TRANSFORMER,
            dataset=written.dataset,
            reason=f"{checked.rejected.height} row(s) quarantined: "
            + ", ".join(f"{reason} ×{count}" for reason, count in sorted(reasons.items())),
            error_type="RowsQuarantined",
            source_event_id=written.event_id,
            details={
                "quarantine_key": quarantine_key,
                "source_key": written.key,
                "table": table,
                "reasons": reasons,
                "check_failures": checked.check_failures,
                "input_rows": checked.input_rows,
                "quality_score": checked.quality_score,
            },
        )

    batch: BatchReady | None = None
    if checked.good.height:
        silver_key = layer_key(written.key, "silver")
        parquet = to_parquet(checked.good, table)
        await lake.put(silver_key, parquet)
        ts_ms = checked.good["ts"].dt.epoch("ms")
        batch = BatchReady(
            dataset=written.dataset,
            table=table,
            exchange=written.exchange,
            lake_url=lake.url,
            key=silver_key,
            sha256=sha256_hex(parquet),
            rows=checked.good.height,
            quarantined_rows=checked.rejected.height,
            min_ts=int(ts_ms.min()),  # type: ignore[arg-type]
            max_ts=int(ts_ms.max()),  # type: ignore[arg-type]
            source_key=written.key,
            source_event_id=written.event_id,
            quality_score=checked.quality_score,
            check_failures=checked.check_failures,
        )
    return TransformResult(
        batch=batch,
        quarantine=quarantine,
        reasons=reasons,
        silver=checked.good if checked.good.height else None,
        duplicates=checked.duplicates,
    )
