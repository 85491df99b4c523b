"""Every table through the real loader process (NATS, file lake, PostgreSQL): load, reload,
conflicting update, constraint violation → DLQ while the loader keeps going."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from cryptoflow_cli.servers import start_nats
from cryptoflow_contracts import Stream
from cryptoflow_runtime.lake import FileLake
from cryptoflow_warehouse_loader.tables import TABLES

from .support import (
    CONSTRAINT,
    UPDATE_COLUMN,
    VIOLATION,
    LoaderStack,
    create_streams,
    key_columns,
    loader_pipeline,
    put_batch,
    sample,
)

N = 40


async def table_rows(stack: LoaderStack, table: str, symbol: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    keys = key_columns(table)
    records = await stack.fetch(f'SELECT * FROM "{table}" WHERE symbol = $1', symbol)
    return {tuple(r[k] for k in keys): dict(r) for r in records}


async def ledger(stack: LoaderStack, batch_id: str) -> dict[str, Any] | None:
    rows = await stack.fetch("SELECT * FROM batches WHERE batch_id = $1", batch_id)
    return dict(rows[0]) if rows else None


@pytest.mark.parametrize("table", list(TABLES))
async def test_load_reload_update_and_reject(loader_stack: LoaderStack, table: str) -> None:
    stack = loader_stack
    symbol = f"{table.upper().replace('_', '')}/USDT"
    rows = sample(table, N, symbol=symbol)

    # Load: every row, exactly, with lineage to its batch and raw event.
    first = await put_batch(stack.lake, table, rows, f"{table}-a")
    await stack.publish_batch(first)
    await stack.settled()
    stored = await table_rows(stack, table, symbol)
    assert len(stored) == N
    expected = {tuple(r[k] for k in key_columns(table)): r for r in rows.to_dicts()}
    for key, row in expected.items():
        got = stored[key]
        assert {c: got[c] for c in row} == row
        assert (got["batch_id"], got["version"]) == (first.event_id, 1)
    # Every row carries its series' id, the head of the primary key.
    series_ids = await stack.fetch("SELECT series_id FROM series WHERE table_name = $1 AND symbol = $2", table, symbol)
    assert len(series_ids) == 1
    assert {got["series_id"] for got in stored.values()} == {series_ids[0]["series_id"]}
    entry = await ledger(stack, first.event_id)
    assert entry is not None
    assert (entry["rows_inserted"], entry["rows_updated"], entry["rows_unchanged"]) == (N, 0, 0)
    assert (entry["silver_key"], entry["source_key"], entry["source_event_id"]) == (
        first.key,
        first.source_key,
        first.source_event_id,
    )

    # Reload: the same BatchReady delivered again (past the duplicate window) changes nothing.
    await stack.publish_batch(first, msg_id=f"again-{first.event_id}")
    # The same rows in another batch: unchanged, not rewritten.
    same = await put_batch(stack.lake, table, rows, f"{table}-b")
    await stack.publish_batch(same)
    await stack.settled()
    assert await table_rows(stack, table, symbol) == stored
    assert await ledger(stack, first.event_id) == entry
    same_entry = await ledger(stack, same.event_id)
    assert same_entry is not None
    assert (same_entry["rows_inserted"], same_entry["rows_updated"], same_entry["rows_unchanged"]) == (0, 0, N)

    # Conflicting update: a newer batch changes 5 rows; those take its values and lineage.
    column = UPDATE_COLUMN[table]
    changed = rows.with_columns(
        pl.when(pl.int_range(pl.len()) < 5).then(pl.col(column) * 1.5).otherwise(pl.col(column)).alias(column),
        pl.when(pl.int_range(pl.len()) < 5)
        .then(pl.lit("RawSnapshot-newer"))
        .otherwise(pl.col("source_event_id"))
        .alias("source_event_id"),
    )
    update = await put_batch(stack.lake, table, changed, f"{table}-c")
    await stack.publish_batch(update)
    await stack.settled()
    after = await table_rows(stack, table, symbol)
    update_entry = await ledger(stack, update.event_id)
    assert update_entry is not None
    assert (update_entry["rows_inserted"], update_entry["rows_updated"], update_entry["rows_unchanged"]) == (
        0,
        5,
        N - 5,
    )
    for n, row in enumerate(rows.to_dicts()):
        key = tuple(row[k] for k in key_columns(table))
        if n < 5:
            assert after[key][column] == row[column] * 1.5
            assert (after[key]["batch_id"], after[key]["source_event_id"], after[key]["version"]) == (
                update.event_id,
                "RawSnapshot-newer",
                2,
            )
        else:
            assert after[key] == stored[key]

    # Constraint violation: the batch is dead-lettered with the database's reason, nothing of it
    # stays, and the next batch loads.
    column, bad_value = VIOLATION[table]
    bad_rows = sample(table, 3, symbol=symbol, start=1000).with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit(bad_value)).otherwise(pl.col(column)).alias(column)
    )
    bad = await put_batch(stack.lake, table, bad_rows, f"{table}-d")
    good = await put_batch(stack.lake, table, sample(table, 4, symbol=symbol, start=2000), f"{table}-e")
    await stack.publish_batch(bad)
    await stack.publish_batch(good)
    await stack.settled()
    letters = [d for d in await stack.dead_letters() if d["source_event_id"] == bad.event_id]
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["stage"], letter["error_type"], letter["deliveries"]) == (
        "warehouse-loader",
        "PoisonMessageError",
        1,
    )
    assert "database rejected batch" in letter["reason"]
    assert CONSTRAINT[table] in letter["reason"]
    assert await ledger(stack, bad.event_id) is None
    final = await table_rows(stack, table, symbol)
    assert len(final) == N + 4
    assert {k: v for k, v in final.items() if k in after} == after


async def test_a_rejected_batch_pulled_with_good_ones_fails_alone(
    tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> None:
    """Batches waiting in SILVER are pulled and loaded together (one transaction per table); the
    database rejecting one of them fails the group, whose batches are then loaded one by one:
    only the bad one is dead-lettered, the others load, each is announced."""
    root: Path = tmp_path_factory.mktemp("together")
    with start_nats(root / "nats") as nats_server:
        await create_streams(nats_server.url)
        pipe = await loader_pipeline(root, nats_server.url, database_url)
        stack = LoaderStack(pipe=pipe, lake=FileLake(pipe.lake_url))
        column, bad_value = VIOLATION["ohlcv"]
        good = [
            await put_batch(stack.lake, "ohlcv", sample("ohlcv", 6, symbol=s, start=0), f"together-{n}")
            for n, s in enumerate(["ONE/USDT", "TWO/USDT", "THREE/USDT", "FOUR/USDT"])
        ]
        bad_rows = sample("ohlcv", 3, symbol="TWO/USDT", start=100).with_columns(
            pl.when(pl.int_range(pl.len()) == 1).then(pl.lit(bad_value)).otherwise(pl.col(column)).alias(column)
        )
        bad = await put_batch(stack.lake, "ohlcv", bad_rows, "together-bad")
        for batch in [good[0], good[1], bad, good[2], good[3]]:
            await stack.publish_batch(batch)
        pipe.start("warehouse-loader")  # after the batches: its first pull takes all five
        try:
            await stack.settled()
            letters = await stack.dead_letters()
            assert [d["source_event_id"] for d in letters] == [bad.event_id]
            assert CONSTRAINT["ohlcv"] in letters[0]["reason"]
            for batch in good:
                entry = await ledger(stack, batch.event_id)
                assert entry is not None and entry["rows_inserted"] == 6
            assert await ledger(stack, bad.event_id) is None
            loaded = [orjson.loads(m.data) for m in await pipe.stream_messages(Stream.WAREHOUSE.value)]
            assert sorted(e["batch_event_id"] for e in loaded) == sorted(b.event_id for b in good)
            assert "loading its batches one by one" in next(p for p in pipe.procs).log()
        finally:
            pipe.stop_all()
