"""Binary COPY built column-wise: PostgreSQL reads back exactly the frame, whatever the values."""

from __future__ import annotations

import io
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import polars as pl
import pytest
from cryptoflow_contracts.silver import ColumnType
from cryptoflow_warehouse_loader.copy_binary import HEADER, TRAILER, encode, stream

COLUMNS = [
    ("name", ColumnType.TEXT),
    ("n", ColumnType.INT),
    ("x", ColumnType.FLOAT),
    ("flag", ColumnType.BOOL),
    ("ts", ColumnType.TIMESTAMP),
]
FRAME = pl.DataFrame(
    {
        "name": ["BTC/USDT", "", None, "ÉTH/€", "a much longer name than the others", "x"],
        "n": [0, -1, 2**62, None, 7, 42],
        "x": [0.09946999000000001, -0.0, None, 1e-300, float("inf"), 123456789.12345679],
        "flag": [True, False, None, True, False, True],
        "ts": [
            datetime(2024, 6, 1, 12, 0, 0, 123000, tzinfo=UTC),
            datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),  # before PostgreSQL's epoch
            None,
            datetime(2000, 1, 1, tzinfo=UTC),
            datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC),
        ],
    },
    schema={"name": pl.String, "n": pl.Int64, "x": pl.Float64, "flag": pl.Boolean, "ts": pl.Datetime("ms", "UTC")},
).with_row_index("id")


@pytest.fixture
async def conn(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh_database_url)
    try:
        await connection.execute(
            "CREATE TABLE t (id bigint, name text, n bigint, x double precision, flag boolean, ts timestamptz)"
        )
        yield connection
    finally:
        await connection.close()


async def test_postgres_reads_back_exactly_the_frame(conn: asyncpg.Connection) -> None:
    data = encode(FRAME, [("id", ColumnType.INT), *COLUMNS])
    await conn.copy_to_table("t", source=io.BytesIO(data), format="binary")
    stored = [dict(r) for r in await conn.fetch("SELECT * FROM t ORDER BY id")]
    assert stored == FRAME.rows(named=True)


async def test_rows_of_one_field_length_are_one_group(conn: asyncpg.Connection) -> None:
    same = pl.DataFrame({"id": [1, 2, 3], "name": ["aa", "bb", "cc"]}, schema={"id": pl.Int64, "name": pl.String})
    data = encode(same, [("id", ColumnType.INT), ("name", ColumnType.TEXT)])
    assert data.startswith(HEADER) and data.endswith(TRAILER)
    row = struct.pack(">hi", 2, 8) + (1).to_bytes(8, "big") + struct.pack(">i", 2) + b"aa"
    assert data[len(HEADER) : len(HEADER) + len(row)] == row  # frame order kept within a group
    await conn.copy_to_table("t", source=io.BytesIO(data), columns=["id", "name"], format="binary")
    assert [tuple(r) for r in await conn.fetch("SELECT id, name FROM t ORDER BY id")] == [
        (1, "aa"),
        (2, "bb"),
        (3, "cc"),
    ]


async def test_empty_frame_is_header_and_trailer(conn: asyncpg.Connection) -> None:
    data = encode(FRAME.head(0), [("id", ColumnType.INT), *COLUMNS])
    assert data == HEADER + TRAILER
    await conn.copy_to_table("t", source=io.BytesIO(data), format="binary")
    assert await conn.fetchval("SELECT count(*) FROM t") == 0


# rows → data chunks, for chunks of 2, 8, 32, then 40 rows (ends at 2, 10, 42, 82, 122, 162).
CHUNKS = {0: 0, 1: 1, 2: 1, 3: 2, 10: 2, 11: 3, 42: 3, 43: 4, 150: 6}


@pytest.mark.parametrize("rows", list(CHUNKS))
async def test_streamed_chunks_grow_and_carry_every_row_once(conn: asyncpg.Connection, rows: int) -> None:
    frame = pl.concat([FRAME] * 25).head(rows).drop("id").with_row_index("id").cast({"id": pl.Int64})
    columns = [("id", ColumnType.INT), *COLUMNS]
    chunks = [chunk async for chunk in stream(frame, columns, chunk_rows=40, first_rows=2)]
    assert chunks[0] == HEADER and chunks[-1] == TRAILER
    assert len(chunks) - 2 == CHUNKS[rows]
    await conn.copy_to_table("t", source=iter_bytes(chunks), format="binary")
    assert [r["id"] for r in await conn.fetch("SELECT id FROM t ORDER BY id")] == list(range(rows))


async def iter_bytes(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
