"""A user's file (`cryptoflow ingest`): its rows as ccxt-shaped records, by the ingest mapping.

Bronze of a file page is the file's own text (a CSV part: the header line and its lines, as read)
or, for Parquet, its rows as read (NDJSON: a Parquet file has no self-contained byte ranges); the
mapping that reads it rides in the page's request, so a mapping or parser fix can be replayed.
The same function reads a page in the extractor (for its time range) and in the transformer (for
its rows): values stay text, a value that does not parse is kept as sent, and the transformer's
checks quarantine its row with the reason (`unparsable_number`, `null_field`, ...).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

FILE_ROWS_METHOD = "fileRows"
# Response header naming the page body's format.
FORMAT_HEADER = "x-file-format"
CSV_BODY = "csv"
PARQUET_ROWS_BODY = "parquet-rows-ndjson"

# Fields a mapping names a column for, per dataset (ccxt's names; `ts` is the record's time).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "ohlcv": ("ts", "open", "high", "low", "close", "volume"),
    "trades": ("ts", "id", "price", "amount"),
}
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {"ohlcv": (), "trades": ("side",)}
TS_UNITS = {"s": 1000.0, "ms": 1.0, "us": 0.001, "ns": 0.000001}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FileMapping(BaseModel):
    """How a file's columns become records: `mapping.yaml` of `cryptoflow ingest`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: dict[str, str] = Field(description="record field (ts, open, ..., id, price, amount, side) → file column")
    format: Literal["csv", "parquet"] | None = Field(default=None, description="default: from the file name")
    ts_unit: Literal["s", "ms", "us", "ns", "iso"] = Field(
        default="ms", description="epoch unit of `ts`, or iso (ISO 8601 text)"
    )
    timezone: str = Field(default="UTC", description="zone of ISO times written without an offset")
    exchange: str | None = Field(default=None, description="the exchange of every row")
    exchange_column: str | None = Field(default=None, description="...or the column naming each row's exchange")
    symbol: str | None = Field(default=None, description="the market of every row, e.g. BTC/USDT")
    symbol_column: str | None = Field(default=None, description="...or the column naming each row's market")
    timeframe: str | None = Field(default=None, description="candle timeframe (ohlcv), e.g. 1m")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: bool = Field(default=True, description="false: columns are column_1, column_2, ...")

    @model_validator(mode="after")
    def _one_of_each(self) -> FileMapping:
        for what in ("exchange", "symbol"):
            given, column = getattr(self, what), getattr(self, f"{what}_column")
            if (given is None) == (column is None):
                raise ValueError(f"give either {what} or {what}_column (exactly one)")
        return self

    def check(self, dataset: str) -> None:
        """Raise ValueError unless the mapping can make records of `dataset`."""
        if dataset not in REQUIRED_FIELDS:
            raise ValueError(f"files can be ingested as {', '.join(REQUIRED_FIELDS)}, not {dataset!r}")
        missing = [field for field in REQUIRED_FIELDS[dataset] if field not in self.columns]
        if missing:
            raise ValueError(f"columns: no column for {', '.join(missing)} (a {dataset} record needs them)")
        unknown = sorted(set(self.columns) - set(REQUIRED_FIELDS[dataset]) - set(OPTIONAL_FIELDS[dataset]))
        if unknown:
            raise ValueError(f"columns: {', '.join(unknown)} is not a field of {dataset} records")
        if dataset == "ohlcv" and not self.timeframe:
            raise ValueError("timeframe: required for ohlcv (e.g. 1m)")

    def source_columns(self) -> list[str]:
        named = [*self.columns.values(), self.exchange_column, self.symbol_column]
        return list(dict.fromkeys(column for column in named if column is not None))


def read_csv_text(body: bytes, mapping: FileMapping) -> pl.DataFrame:
    """A CSV part, every column as text (nothing inferred: a bad value stays as sent). Without a
    header its columns are column_1, column_2, ... (ours, whatever Polars' default)."""
    frame = pl.read_csv(
        io.BytesIO(body),
        has_header=mapping.header,
        separator=mapping.delimiter,
        infer_schema=False,
        truncate_ragged_lines=True,
    )
    if not mapping.header:
        frame.columns = [f"column_{i}" for i in range(1, frame.width + 1)]
    return frame


def read_body(body: bytes, body_format: str, mapping: FileMapping) -> pl.DataFrame:
    if body_format == PARQUET_ROWS_BODY:
        rows = pl.read_ndjson(io.BytesIO(body), infer_schema_length=None) if body.strip() else pl.DataFrame()
        return rows.select(pl.all().cast(pl.String)) if rows.width else rows
    return read_csv_text(body, mapping)


def ts_ms(text: pl.Series, mapping: FileMapping) -> pl.Series:
    """Epoch milliseconds of the ts column (null where it does not parse)."""
    if mapping.ts_unit == "iso":
        zone = ZoneInfo(mapping.timezone)
        # One file may mix `Z`, offsets and naive times: each value is read on its own.
        return pl.Series(text.name, [_iso_ms(value, zone) for value in text.to_list()], dtype=pl.Int64)
    number = text.str.strip_chars().cast(pl.Float64, strict=False)
    return (number * TS_UNITS[mapping.ts_unit]).round(0).cast(pl.Int64, strict=False)


def _iso_ms(text: str | None, zone: ZoneInfo) -> int | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)  # naive: in the mapping's zone
    return (when - EPOCH) // timedelta(milliseconds=1)


def missing_columns(frame: pl.DataFrame, mapping: FileMapping) -> list[str]:
    return [column for column in mapping.source_columns() if column not in frame.columns]


def file_records(frame: pl.DataFrame, mapping: FileMapping, dataset: str) -> list[Any]:
    """The rows as ccxt records: candles `[ts, open, high, low, close, volume]`, trades
    `{id, timestamp, price, amount, side}`; values as text, ts in ms where it parses (else as sent)."""
    absent = missing_columns(frame, mapping)
    if absent:
        raise ValueError(f"the file has no column {', '.join(absent)} (its columns: {', '.join(frame.columns)})")
    col = mapping.columns
    frame = frame.with_columns(ts_ms(frame[col["ts"]], mapping).alias("_ts_ms"))
    ts = pl.coalesce(pl.col("_ts_ms").cast(pl.String), pl.col(col["ts"]))
    if dataset == "ohlcv":
        values = [pl.col(col[field]) for field in ("open", "high", "low", "close", "volume")]
        return frame.select(pl.concat_list([ts, *values]).alias("candle"))["candle"].to_list()
    side = pl.col(col["side"]).str.to_lowercase() if "side" in col else pl.lit(None, pl.String)
    return frame.select(
        pl.col(col["id"]).alias("id"),
        ts.alias("timestamp"),
        pl.col(col["price"]).alias("price"),
        pl.col(col["amount"]).alias("amount"),
        side.alias("side"),
    ).to_dicts()


def page_records(body: bytes, body_format: str, mapping: dict[str, Any], dataset: str) -> list[Any]:
    """A file page's records (the transformer's entry: the mapping as the page's request has it)."""
    file_mapping = FileMapping.model_validate(mapping)
    return file_records(read_body(body, body_format, file_mapping), file_mapping, dataset)
