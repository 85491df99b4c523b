"""Decode a response of each format with its standard reader (pyarrow, polars), to a polars frame."""

from __future__ import annotations

import io

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

FORMATS = ("json", "csv", "parquet", "arrow")


def _utc_times(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    return frame.with_columns(
        pl.col(c).str.to_datetime(time_zone="UTC", time_unit="us") for c in columns if frame.schema[c] == pl.String
    )


def decode(fmt: str, content: bytes, time_columns: tuple[str, ...] = ("ts",)) -> pl.DataFrame:
    if fmt == "json":
        import orjson

        body = orjson.loads(content)
        rows = body["data"]
        frame = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
        return _utc_times(frame, [c for c in time_columns if c in frame.columns])
    if fmt == "csv":
        # The API writes an empty string quoted ("") and a null as nothing: read them apart.
        table = pa_csv.read_csv(
            io.BytesIO(content), convert_options=pa_csv.ConvertOptions(quoted_strings_can_be_null=False)
        )
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame.with_columns(
            pl.col(c).dt.convert_time_zone("UTC").dt.cast_time_unit("us")
            for c in time_columns
            if c in frame.columns and isinstance(frame.schema[c], pl.Datetime)
        )
    if fmt == "parquet":
        frame = pl.from_arrow(pq.read_table(io.BytesIO(content)))
    else:
        frame = pl.from_arrow(pa.ipc.open_stream(content).read_all())
    assert isinstance(frame, pl.DataFrame)
    return frame
