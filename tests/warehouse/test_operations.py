"""Gaps, run reports and quarantine through the real loader process; the loader's own run; `cryptoflow runs`."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import polars as pl
from cryptoflow_contracts import (
    Dataset,
    DeadLetter,
    KnownGap,
    RunReport,
    Stage,
    Stream,
    dlq_subject,
    gaps_subject,
    runs_subject,
)

from .support import T0, LoaderStack, put_batch, sample


async def wait_until(what: str, probe, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_known_gap_is_kept_once(loader_stack: LoaderStack) -> None:
    stack = loader_stack
    gap = KnownGap(
        exchange="binance",
        symbol="GAP/USDT",
        dataset=Dataset.OHLCV,
        timeframe="1m",
        start_ts=1_709_251_260_000,
        end_ts=1_709_251_380_000,
        missing=3,
        detected_at=datetime(2024, 3, 1, 12, tzinfo=UTC),
    )
    subject = gaps_subject(gap.exchange, gap.symbol)
    await stack.publish(subject, gap.to_json(), gap.event_id, Stream.GAPS.value)
    await stack.publish(subject, gap.to_json(), f"again-{gap.event_id}", Stream.GAPS.value)
    await stack.settled(Stream.GAPS.value, "warehouse-loader-gaps")
    rows = await stack.fetch("SELECT * FROM known_gaps WHERE symbol = 'GAP/USDT'")
    assert len(rows) == 1
    row = rows[0]
    assert (row["dataset"], row["timeframe"], row["missing"], row["event_id"]) == ("ohlcv", "1m", 3, gap.event_id)
    assert row["gap_start"] == datetime(2024, 3, 1, 0, 1, tzinfo=UTC)
    assert row["gap_end"] == datetime(2024, 3, 1, 0, 3, tzinfo=UTC)


async def test_run_reports_keep_the_latest_per_run(loader_stack: LoaderStack) -> None:
    stack = loader_stack
    started = datetime(2024, 3, 1, tzinfo=UTC)

    def report(seq: int, status: str, **counts: int) -> RunReport:
        return RunReport(
            service="extractor",
            run_id="extractor-test-1",
            instance="host:1",
            seq=seq,
            status=status,
            started_at=started,
            reported_at=started + timedelta(seconds=seq),
            ended_at=started + timedelta(seconds=seq) if status != "running" else None,
            counts=counts,
            errors=seq - 1,
            last_error="HTTP 429" if seq > 1 else None,
        )

    # Out of order: the final report arrives before an older one; the older one changes nothing.
    for event in (report(1, "running", pages=1), report(3, "ok", pages=9), report(2, "running", pages=4)):
        await stack.publish(runs_subject(event.service), event.to_json(), event.event_id, Stream.RUNS.value)
    await stack.settled(Stream.RUNS.value, "warehouse-loader-runs")
    rows = await stack.fetch("SELECT * FROM service_runs WHERE run_id = 'extractor-test-1'")
    assert len(rows) == 1
    assert (rows[0]["status"], rows[0]["seq"], rows[0]["errors"], rows[0]["last_error"]) == ("ok", 3, 2, "HTTP 429")
    assert rows[0]["ended_at"] == started + timedelta(seconds=3)


async def test_quarantined_rows_are_kept_with_their_reason(loader_stack: LoaderStack) -> None:
    stack = loader_stack
    rejected = sample("ohlcv", 3, symbol="QUAR/USDT").with_columns(
        pl.Series("reason", ["high_below_open_close", "null_field", "high_below_open_close"]),
        pl.Series("close", [1.0, None, float("nan")]),
    )
    key = "quarantine/ohlcv/exchange=binance/symbol=QUAR-USDT/date=2024-03-01/1-abc.parquet"
    buffer = io.BytesIO()
    rejected.write_parquet(buffer, metadata={"cryptoflow.table": "ohlcv"})
    await stack.lake.put(key, buffer.getvalue())
    letter = DeadLetter(
        stage=Stage.TRANSFORMER,
        dataset=Dataset.OHLCV,
        reason="3 row(s) quarantined",
        error_type="RowsQuarantined",
        source_event_id="ObjectWritten-q",
        details={"quarantine_key": key, "source_key": "bronze/x.ndjson.zst"},
    )
    subject = dlq_subject(Stage.TRANSFORMER, Dataset.OHLCV)
    await stack.publish(subject, letter.to_json(), letter.event_id, Stream.DLQ.value)
    await stack.publish(subject, letter.to_json(), f"again-{letter.event_id}", Stream.DLQ.value)
    await stack.settled(Stream.DLQ.value, "warehouse-loader-quarantine")
    rows = await stack.fetch(
        "SELECT row_no, table_name, exchange, symbol, ts, reason, row_data->>'close' AS close, source_key,"
        " dead_letter_event_id FROM quarantine WHERE quarantine_key = $1 ORDER BY row_no",
        key,
    )
    assert [(r["row_no"], r["reason"], r["close"]) for r in rows] == [
        (0, "high_below_open_close", "1.0"),
        (1, "null_field", None),
        (2, "high_below_open_close", None),
    ]
    assert {(r["table_name"], r["exchange"], r["symbol"], r["source_key"]) for r in rows} == {
        ("ohlcv", "binance", "QUAR/USDT", "bronze/x.ndjson.zst")
    }
    assert rows[0]["ts"] == T0
    assert {r["dead_letter_event_id"] for r in rows} == {letter.event_id}


async def test_loader_reports_its_own_run_and_cli_lists_it(loader_stack: LoaderStack) -> None:
    stack = loader_stack
    batch = await put_batch(stack.lake, "ohlcv", sample("ohlcv", 5, symbol="RUNS/USDT"), "runs-a")
    await stack.publish_batch(batch)
    await stack.settled()

    async def counted() -> bool:
        rows = await stack.fetch(
            "SELECT counts FROM service_runs WHERE service = 'warehouse-loader' AND status = 'running'"
        )
        return bool(rows) and '"batches_loaded"' in rows[0]["counts"]

    await wait_until("the loader's run report", counted)
    cli = subprocess.run(
        [sys.executable, "-m", "cryptoflow_cli.main", "runs", "--database-url", stack.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "warehouse-loader" in cli.stdout and "running" in cli.stdout and "batches_loaded=" in cli.stdout
    batches = subprocess.run(
        [sys.executable, "-m", "cryptoflow_cli.main", "runs", "--batches", "--database-url", stack.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert batch.event_id in batches.stdout


async def test_marts_are_refreshed_after_loads(loader_stack: LoaderStack) -> None:
    stack = loader_stack
    rows = sample("ohlcv", 30, symbol="MART/USDT")
    await stack.publish_batch(await put_batch(stack.lake, "ohlcv", rows, "mart-a"))
    await stack.settled()

    async def in_overview() -> bool:
        found = await stack.fetch("SELECT last_price FROM market_overview WHERE symbol = 'MART/USDT'")
        return bool(found) and found[0]["last_price"] == rows["close"][-1]

    await wait_until("market_overview to show the new series", in_overview)
