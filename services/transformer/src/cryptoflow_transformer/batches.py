"""One bronze object → silver Parquet, quarantine Parquet, and the events announcing them."""

from __future__ import annotations

import logging
from collections import Counter as Tally
from dataclasses import dataclass

import zstandard
from cryptoflow_contracts import BatchReady, Dataset, DeadLetter, ObjectWritten, Stage
from cryptoflow_runtime import Lake, PoisonMessageError
from cryptoflow_runtime.lake import sha256_hex

from .ohlcv import frame_from_bronze, to_parquet, validate_ohlcv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransformResult:
    batch: BatchReady | None
    quarantine: DeadLetter | None
    reasons: dict[str, int]


def layer_key(bronze_key: str, layer: str) -> str:
    """bronze/<partition>/<name>.ndjson.zst → <layer>/<partition>/<name>.parquet (deterministic)."""
    if not bronze_key.startswith("bronze/"):
        raise PoisonMessageError(f"{bronze_key!r} is not a bronze key")
    return layer + bronze_key.removeprefix("bronze").removesuffix(".ndjson.zst") + ".parquet"


async def transform_object(lake: Lake, written: ObjectWritten) -> TransformResult:
    if written.dataset is not Dataset.OHLCV:
        raise PoisonMessageError(f"no transformer for dataset {written.dataset.value!r} yet")
    data = await lake.get(written.key)
    if sha256_hex(data) != written.sha256:
        raise PoisonMessageError(f"{written.key}: sha256 differs from ObjectWritten; object corrupt or replaced")
    ndjson = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31)
    checked = validate_ohlcv(frame_from_bronze(ndjson))
    reasons = dict(Tally(checked.rejected["reason"].to_list())) if checked.rejected.height else {}

    quarantine: DeadLetter | None = None
    if checked.rejected.height:
        quarantine_key = layer_key(written.key, "quarantine")
        await lake.put(quarantine_key, to_parquet(checked.rejected))
        quarantine = DeadLetter(
            stage=Stage.TRANSFORMER,
            dataset=written.dataset,
            reason=f"{checked.rejected.height} row(s) quarantined: "
            + ", ".join(f"{reason} ×{count}" for reason, count in sorted(reasons.items())),
            error_type="RowsQuarantined",
            source_event_id=written.event_id,
            details={"quarantine_key": quarantine_key, "source_key": written.key, "reasons": reasons},
        )

    batch: BatchReady | None = None
    if checked.good.height:
        silver_key = layer_key(written.key, "silver")
        parquet = to_parquet(checked.good)
        await lake.put(silver_key, parquet)
        ts_ms = checked.good["ts"].dt.epoch("ms")
        batch = BatchReady(
            dataset=written.dataset,
            table="ohlcv",
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
        )
    return TransformResult(batch=batch, quarantine=quarantine, reasons=reasons)
