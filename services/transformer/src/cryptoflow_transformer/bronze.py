"""Bronze NDJSON (one RawSnapshot per line) → a frame of snapshots with a typed payload.

Vectorised: one `pl.read_ndjson` with a schema per dataset, numbers read as text so one bad value
becomes one null (and one rejected row) instead of failing the object. Only when a line's payload
has the wrong JSON shape altogether (an object where a list belongs), which fails the typed read,
are the lines read one by one, and that snapshot's payload is marked malformed.
"""

from __future__ import annotations

import io

import polars as pl
from cryptoflow_runtime import PoisonMessageError

ENVELOPE: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "exchange": pl.String(),
    "symbol": pl.String(),
    "timeframe": pl.String(),
    "first_ts": pl.Int64(),
    "fetched_at": pl.String(),
    # False for a page of a candle still forming (a stream's `publish_forming`); null in a line
    # written without it, which reads as final.
    "final": pl.Boolean(),
}


def read_snapshots(ndjson: bytes, payload: pl.DataType) -> pl.DataFrame:
    """ENVELOPE columns, `payload` typed as given, `malformed` (payload of the wrong shape), and
    `fetched` (fetch time): bronze files snapshots by candle time, so where two snapshots hold the
    same record, deduplication orders by `fetched` to keep the later fetch."""
    return _read(ndjson, payload).with_columns(_fetched())


def try_read_snapshots(ndjson: bytes, payload: pl.DataType) -> pl.DataFrame | None:
    """read_snapshots when every line reads with `payload` as typed, in one read; else None.

    For a payload type stricter than the one that reads any line (numbers rather than text): the
    caller reads a well-formed object fast this way, and falls back to read_snapshots otherwise.
    """
    try:
        frame = pl.read_ndjson(io.BytesIO(ndjson), schema={**ENVELOPE, "payload": payload})
    except pl.exceptions.PolarsError:
        return None
    return frame.with_columns(pl.lit(False).alias("malformed"), _fetched())


def _fetched() -> pl.Expr:
    return pl.col("fetched_at").str.to_datetime(time_unit="us", time_zone="UTC", strict=False).alias("fetched")


def in_fetch_order(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows sorted by their snapshot's fetch time, keeping bronze order among equals."""
    return rows.sort("fetched", nulls_last=False, maintain_order=True)


def _read(ndjson: bytes, payload: pl.DataType) -> pl.DataFrame:
    schema = {**ENVELOPE, "payload": payload}
    try:
        return pl.read_ndjson(io.BytesIO(ndjson), schema=schema).with_columns(pl.lit(False).alias("malformed"))
    except pl.exceptions.PolarsError:
        pass
    frames = []
    for line in ndjson.splitlines():
        if not line.strip():
            continue
        try:
            frames.append(
                pl.read_ndjson(io.BytesIO(line), schema=schema).with_columns(pl.lit(False).alias("malformed"))
            )
        except pl.exceptions.PolarsError:
            frames.append(_malformed(line, payload))
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema={**schema, "malformed": pl.Boolean()})


def _malformed(line: bytes, payload: pl.DataType) -> pl.DataFrame:
    try:
        envelope = pl.read_ndjson(io.BytesIO(line), schema=ENVELOPE)
    except pl.exceptions.PolarsError as exc:
        raise PoisonMessageError(f"bronze line is not a RawSnapshot: {exc}") from exc
    return envelope.with_columns(pl.lit(None, dtype=payload).alias("payload"), pl.lit(True).alias("malformed"))


def to_float(raw: str) -> pl.Expr:
    return pl.col(raw).cast(pl.Float64, strict=False)


def to_int(raw: str) -> pl.Expr:
    return pl.col(raw).cast(pl.Int64, strict=False)


def utc_ms(column: str) -> pl.Expr:
    return pl.from_epoch(pl.col(column), time_unit="ms").dt.replace_time_zone("UTC")
