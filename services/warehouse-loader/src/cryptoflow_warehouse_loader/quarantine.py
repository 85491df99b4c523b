"""Quarantined rows → `quarantine`: the transformer's DeadLetter names the Parquet of rejected rows.

Rejected rows differ in columns per table and may hold any garbage, so each is kept whole as
JSON (`row_data`) beside the columns dashboards filter on (exchange, symbol, ts, reason). The
same quarantine object loaded again changes nothing (key: object, row number).
"""

from __future__ import annotations

import io

import asyncpg
import polars as pl
from cryptoflow_contracts import DeadLetter
from cryptoflow_contracts.silver import TABLE_METADATA_KEY
from cryptoflow_runtime import Lake, PoisonMessageError

from .upsert import CSV_DATETIME_FORMAT

QUARANTINE_KEY_DETAIL = "quarantine_key"
COLUMNS = [
    "quarantine_key",
    "row_no",
    "dataset",
    "table_name",
    "exchange",
    "symbol",
    "ts",
    "reason",
    "row_data",
    "source_key",
    "dead_letter_event_id",
]

_INSERT = f"""
    INSERT INTO quarantine ({", ".join(COLUMNS)})
    SELECT {", ".join(COLUMNS)} FROM incoming_quarantine
    ON CONFLICT (quarantine_key, row_no) DO NOTHING
"""


def quarantine_key(letter: DeadLetter) -> str | None:
    key = letter.details.get(QUARANTINE_KEY_DETAIL)
    return key if isinstance(key, str) and key else None


def rows_for_copy(data: bytes, key: str, letter: DeadLetter) -> pl.DataFrame:
    frame = pl.read_parquet(io.BytesIO(data))
    metadata = pl.read_parquet_metadata(io.BytesIO(data))
    table_name = metadata.get(TABLE_METADATA_KEY)
    source_key = letter.details.get("source_key")

    def optional(name: str, dtype: pl.DataType) -> pl.Expr:
        return (pl.col(name).cast(dtype, strict=False) if name in frame.columns else pl.lit(None, dtype)).alias(name)

    # jsonb has no NaN/Infinity: such floats become null in row_data (the reason says what was wrong).
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    row_data = frame.with_columns(
        pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c) for c in floats
    ).select(pl.struct(pl.all()).struct.json_encode().alias("row_data"))
    return pl.concat(
        [
            frame.with_row_index("row_no").select(
                pl.lit(key).alias("quarantine_key"),
                pl.col("row_no").cast(pl.Int32),
                pl.lit(letter.dataset.value if letter.dataset else None, pl.String).alias("dataset"),
                pl.lit(table_name, pl.String).alias("table_name"),
                optional("exchange", pl.String()),
                optional("symbol", pl.String()),
                optional("ts", pl.Datetime("ms", "UTC")),
                optional("reason", pl.String()).fill_null("unknown"),
                pl.lit(source_key if isinstance(source_key, str) else None, pl.String).alias("source_key"),
                pl.lit(letter.event_id).alias("dead_letter_event_id"),
            ),
            row_data,
        ],
        how="horizontal",
    ).select(COLUMNS)


async def load_quarantine(conn: asyncpg.Connection, lake: Lake, letter: DeadLetter) -> int:
    """Rows newly stored; 0 for a DeadLetter without a quarantine object (not ours to keep)."""
    key = quarantine_key(letter)
    if key is None:
        return 0
    if not key.startswith("quarantine/"):
        raise PoisonMessageError(f"{key[:200]!r} is not a quarantine object; only quarantine/ is kept")
    rows = rows_for_copy(await lake.get(key), key, letter)
    buffer = io.BytesIO()
    rows.write_csv(buffer, include_header=False, datetime_format=CSV_DATETIME_FORMAT)
    async with conn.transaction():
        await conn.execute("CREATE TEMP TABLE incoming_quarantine (LIKE quarantine INCLUDING DEFAULTS) ON COMMIT DROP")
        await conn.copy_to_table(
            "incoming_quarantine", source=io.BytesIO(buffer.getvalue()), columns=COLUMNS, format="csv"
        )
        status: str = await conn.execute(_INSERT)
    return int(status.rsplit(" ", 1)[-1])
