"""From a resource and a request's filters to SQL: the page's key bounds, then the rows as CSV
through `COPY … TO STDOUT`, decoded into Arrow record batches a few MB at a time.

COPY is PostgreSQL's fastest way out, and pyarrow's CSV reader turns its text into columns in C++:
no Python object per row or value on the way (decision 0047). Identifiers come from the resource
registry only; every value is a bind parameter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.csv as pa_csv

from .cursor import KeyValue, encode_cursor
from .resources import Resource

_ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "float8": pa.float64(),
    "float4": pa.float64(),
    "numeric": pa.float64(),
    "int8": pa.int64(),
    "int4": pa.int64(),
    "int2": pa.int64(),
    "bool": pa.bool_(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "interval": pa.float64(),
}


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    arrow_type: pa.DataType

    @property
    def select(self) -> str:
        """The column as COPY writes it for pyarrow: times as they are (ISO with their offset, which
        pyarrow reads as UTC instants), intervals in seconds, numerics as floats, anything else
        (jsonb, arrays) as its text."""
        q = quote(self.name)
        if self.pg_type == "interval":
            return f"extract(epoch FROM {q})::float8 AS {q}"
        if self.pg_type == "numeric":
            return f"{q}::float8 AS {q}"
        if self.pg_type not in _ARROW_TYPES:
            return f"{q}::text AS {q}"
        return q

    @property
    def parse_type(self) -> pa.DataType:
        # A timestamp without zone has no offset in its text: read as it is, then taken as UTC.
        return pa.timestamp("us") if self.pg_type == "timestamp" else self.arrow_type


@dataclass(frozen=True)
class Shape:
    """A resource's returned columns and the types of its key, read from the database once."""

    columns: tuple[Column, ...]
    key_types: tuple[str, ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])


async def describe(conn: asyncpg.Connection, resource: Resource) -> Shape:
    statement = await conn.prepare(f"SELECT * FROM {resource.relation} LIMIT 0")
    attributes = {a.name: a.type.name for a in statement.get_attributes()}
    columns = tuple(
        Column(name, pg_type, _ARROW_TYPES.get(pg_type, pa.string()))
        for name, pg_type in attributes.items()
        if name not in resource.hidden
    )
    return Shape(columns=columns, key_types=tuple(attributes[k] for k in resource.key))


@dataclass(frozen=True)
class Selection:
    """What a request asks for; filters are already checked against the resource's."""

    filters: dict[str, str]
    start: datetime | None
    end: datetime | None
    after: tuple[KeyValue, ...] | None
    limit: int | None


@dataclass(frozen=True)
class Plan:
    sql: str
    args: tuple[Any, ...]
    next_cursor: str | None
    empty: bool  # no series matched: nothing to read


class _Args:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _row(columns: tuple[str, ...]) -> str:
    return "(" + ", ".join(quote(c) for c in columns) + ")"


async def plan(conn: asyncpg.Connection, resource: Resource, shape: Shape, selection: Selection) -> Plan:
    """The page's SQL, and the cursor of the page after it (None on the last page). Run in the
    same repeatable-read transaction as the COPY, so both see the same rows."""
    args = _Args()
    where: list[str] = []
    if resource.series_table is not None:
        lookup = _Args()
        conditions = [f"table_name = {lookup.add(resource.series_table)}"]
        conditions += [f"{quote(resource.filters[f])} = {lookup.add(v)}" for f, v in selection.filters.items()]
        ids = await conn.fetchval(
            f"SELECT coalesce(array_agg(series_id ORDER BY series_id), '{{}}') FROM series WHERE {' AND '.join(conditions)}",
            *lookup.values,
        )
        if not ids:
            return Plan(sql="", args=(), next_cursor=None, empty=True)
        if len(ids) == 1:
            # One series: its partitions are in time order, so PostgreSQL appends them (a merge
            # of per-partition scans otherwise, about a third slower).
            where.append(f"series_id = {args.add(ids[0])}")
        else:
            where.append(f"series_id = ANY({args.add(list(ids))}::int8[])")
    else:
        where += [f"{quote(resource.filters[f])} = {args.add(v)}" for f, v in selection.filters.items()]
    if resource.time_column is not None:
        last = quote(resource.time_end_column or resource.time_column)
        if selection.start is not None:
            where.append(f"{last} >= {args.add(selection.start)}")
        if selection.end is not None:
            where.append(f"{quote(resource.time_column)} < {args.add(selection.end)}")
    key = _row(resource.key)
    if selection.after is not None:
        where.append(f"{key} > ({', '.join(args.add(v) for v in selection.after)})")
    condition = " AND ".join(where) or "true"
    order = ", ".join(quote(c) for c in resource.key)

    next_cursor: str | None = None
    if selection.limit is not None:
        # The key of the page's last row and whether a row follows it: an ordered index range of
        # limit + 1 keys, numbered as they come (no OFFSET, no sort).
        n = selection.limit
        bounds = await conn.fetch(
            f"SELECT {order}, rn FROM (SELECT {order}, row_number() OVER (ORDER BY {order}) AS rn "
            f"FROM {resource.relation} WHERE {condition} ORDER BY {order} LIMIT {n + 1}) AS page WHERE rn >= {n}",
            *args.values,
        )
        if len(bounds) == 2:
            last_key = tuple(bounds[0][c] for c in resource.key)
            next_cursor = encode_cursor(resource.name, last_key)
            condition += f" AND {key} <= ({', '.join(args.add(v) for v in last_key)})"
    columns = ", ".join(c.select for c in shape.columns)
    sql = f"SELECT {columns} FROM {resource.relation} WHERE {condition} ORDER BY {order}"
    return Plan(sql=sql, args=tuple(args.values), next_cursor=next_cursor, empty=False)


def record_boundary(buffer: bytes | bytearray) -> int:
    """Length of the complete CSV records at the start of `buffer` (0 if none): a newline ends a
    record when an even number of quote characters precede it (quoted values may hold newlines;
    a quote inside one is doubled)."""
    end = len(buffer)
    while True:
        newline = buffer.rfind(b"\n", 0, end)
        if newline < 0:
            return 0
        if buffer.count(b'"', 0, newline) % 2 == 0:
            return newline + 1
        end = newline


class _ByteQueue:
    """COPY's chunks on their way to the decoder, bounded in bytes (chunks vary from bytes to
    hundreds of KB): `put` waits while `limit` bytes are queued."""

    def __init__(self, limit: int) -> None:
        self._items: collections.deque[bytes | None] = collections.deque()
        self._bytes = 0
        self._limit = limit
        self._changed = asyncio.Condition()

    async def put(self, item: bytes | None) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: item is None or self._bytes < self._limit)
            self._items.append(item)
            self._bytes += len(item or b"")
            self._changed.notify_all()

    async def get(self) -> bytes | None:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            item = self._items.popleft()
            self._bytes -= len(item or b"")
            self._changed.notify_all()
            return item


async def csv_blocks(
    conn: asyncpg.Connection, sql: str, args: tuple[Any, ...], block_bytes: int
) -> AsyncIterator[bytes]:
    """COPY's CSV output in blocks of whole records of about `block_bytes`.

    The COPY runs in a task that hands chunks over a queue of about one block: the COPY goes on
    while the previous block is decoded, and while the response waits on a slow client the queue
    fills, the task waits, and PostgreSQL's output waits in the socket.
    """
    chunks = _ByteQueue(block_bytes)

    async def produce() -> None:
        try:
            await conn.copy_from_query(sql, *args, output=chunks.put, format="csv")
        finally:
            await chunks.put(None)

    task = asyncio.create_task(produce())
    buffer = bytearray()
    try:
        while (chunk := await chunks.get()) is not None:
            buffer += chunk
            if len(buffer) >= block_bytes and (cut := record_boundary(buffer)):
                block = bytes(buffer[:cut])
                del buffer[:cut]
                yield block
        await task  # raises what the COPY raised
        if buffer:
            yield bytes(buffer)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def decode_block(block: bytes, shape: Shape) -> pa.RecordBatch:
    """COPY CSV → one record batch in the shape's types (NULL is an unquoted empty field, an empty
    string a quoted one)."""
    names = [c.name for c in shape.columns]
    table = pa_csv.read_csv(
        io.BytesIO(block),
        read_options=pa_csv.ReadOptions(column_names=names, block_size=max(1 << 20, len(block) + 1)),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={c.name: c.parse_type for c in shape.columns},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    table = table.cast(shape.schema).combine_chunks()
    batches = table.to_batches()
    if not batches:
        return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in shape.schema], schema=shape.schema)
    return batches[0]
