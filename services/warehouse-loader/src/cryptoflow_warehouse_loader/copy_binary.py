"""PostgreSQL's binary COPY format, built column-wise with numpy from a Polars frame.

PostgreSQL parses binary COPY about twice as fast as CSV (no float or timestamp text to parse;
bench/loader.py measures it). Building it must not cost that back, so no row is visited in
Python: rows are grouped by the byte lengths of their fields (one group when every field has
the same length in every row — deterministic ids, one exchange, one timeframe — otherwise a
few), and each group is one (rows × row size) byte matrix filled a column slice at a time.
Rows come out grouped, not in frame order; COPY does not care, and the loader's row locks are
ordered by its series locks, not by row order.

Layout: header `PGCOPY\\n\\377\\r\\n\\0`, flags int32 0, extension length int32 0; per row an int16
field count, then per field an int32 byte length (-1 for NULL) and the bytes; trailer int16 -1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
import polars as pl
from cryptoflow_contracts.silver import ColumnType

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
TRAILER = (-1).to_bytes(2, "big", signed=True)
PG_EPOCH_MS = 946_684_800_000  # timestamptz is microseconds since 2000-01-01 UTC
FIXED_WIDTH = {ColumnType.INT: 8, ColumnType.FLOAT: 8, ColumnType.TIMESTAMP: 8, ColumnType.BOOL: 1}
NULL = -1

Bytes = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.int64]


def _field_lengths(series: pl.Series, kind: ColumnType) -> Ints:
    """Per row: the field's byte length, or -1 for NULL."""
    if kind is ColumnType.TEXT:
        lengths = series.str.len_bytes().cast(pl.Int64).fill_null(NULL)
    else:
        lengths = pl.Series(np.full(len(series), FIXED_WIDTH[kind], dtype=np.int64)).set(series.is_null(), NULL)
    return lengths.to_numpy().astype(np.int64)


def _field_bytes(series: pl.Series, kind: ColumnType, width: int) -> Bytes:
    """Non-null values, all `width` bytes long, as a (rows × width) matrix of big-endian bytes."""
    if kind is ColumnType.TEXT:
        return np.frombuffer(series.str.join("").item().encode(), dtype=np.uint8).reshape(len(series), width)
    if kind is ColumnType.TIMESTAMP:
        values: npt.NDArray[np.generic] = ((series.dt.epoch("ms").to_numpy() - PG_EPOCH_MS) * 1000).astype(">i8")
    elif kind is ColumnType.FLOAT:
        values = series.to_numpy().astype(">f8")
    elif kind is ColumnType.INT:
        values = series.to_numpy().astype(">i8")
    else:
        values = series.to_numpy().astype(np.uint8)
    return values.view(np.uint8).reshape(len(series), width)


def _groups(lengths: list[Ints]) -> list[Ints]:
    """Row indices grouped so that within a group every field has one length."""
    n = len(lengths[0])
    varying = [lens for lens in lengths if lens.min() != lens.max()]
    if not varying:
        return [np.arange(n, dtype=np.int64)]
    order = np.lexsort(varying[::-1]).astype(np.int64)
    keys = np.stack([lens[order] for lens in varying])
    starts = np.flatnonzero(np.concatenate(([True], (keys[:, 1:] != keys[:, :-1]).any(axis=0))))
    return np.split(order, starts[1:])


def _encode_group(series: list[pl.Series], kinds: list[ColumnType], lengths: list[int], rows: Ints) -> Bytes:
    row_size = 2 + sum(4 + max(length, 0) for length in lengths)
    block = np.empty((len(rows), row_size), dtype=np.uint8)
    block[:, 0:2] = np.frombuffer(len(series).to_bytes(2, "big"), dtype=np.uint8)
    offset = 2
    whole = len(rows) == len(series[0])
    for column, kind, length in zip(series, kinds, lengths, strict=True):
        block[:, offset : offset + 4] = np.frombuffer(length.to_bytes(4, "big", signed=True), dtype=np.uint8)
        offset += 4
        if length > 0:
            values = column if whole else column.gather(rows)
            block[:, offset : offset + length] = _field_bytes(values, kind, length)
            offset += length
    return block


def encode_rows(frame: pl.DataFrame, columns: list[tuple[str, ColumnType]]) -> bytes:
    """`frame[columns]` as binary COPY rows (no header, no trailer), fields in `columns` order."""
    series = [frame[name] for name, _ in columns]
    kinds = [kind for _, kind in columns]
    pieces = []
    if frame.height:
        lengths = [_field_lengths(s, kind) for s, kind in zip(series, kinds, strict=True)]
        for rows in _groups(lengths):
            first = rows[0]
            group_lengths = [int(lens[first]) for lens in lengths]
            pieces.append(_encode_group(series, kinds, group_lengths, rows).tobytes())
    return b"".join(pieces)


def encode(frame: pl.DataFrame, columns: list[tuple[str, ColumnType]]) -> bytes:
    """`frame[columns]` as one complete binary COPY stream."""
    return HEADER + encode_rows(frame, columns) + TRAILER


def _chunk_bounds(rows: int, first_rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    bounds, offset, size = [], 0, first_rows
    while offset < rows:
        bounds.append((offset, min(size, rows - offset)))
        offset += size
        size = min(size * 4, chunk_rows)
    return bounds


async def stream(
    frame: pl.DataFrame, columns: list[tuple[str, ColumnType]], chunk_rows: int = 20_000, first_rows: int = 1_000
) -> AsyncIterator[bytes]:
    """The same stream in chunks, each encoded in a thread while the previous one is on its way:
    PostgreSQL parses and inserts chunk n while we build chunk n + 1. Chunks start small and grow
    (×4 up to `chunk_rows`), so PostgreSQL starts inserting after a few milliseconds, not after a
    whole large chunk was encoded."""
    yield HEADER
    slices = [frame.slice(offset, length) for offset, length in _chunk_bounds(frame.height, first_rows, chunk_rows)]
    pending = asyncio.create_task(asyncio.to_thread(encode_rows, slices[0], columns)) if slices else None
    for n in range(len(slices)):
        assert pending is not None
        data = await pending
        pending = (
            asyncio.create_task(asyncio.to_thread(encode_rows, slices[n + 1], columns)) if n + 1 < len(slices) else None
        )
        yield data
    yield TRAILER
