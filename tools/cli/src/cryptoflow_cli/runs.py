"""`cryptoflow runs`: run history from the warehouse (service_runs), or the latest batches (--batches)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

RUNS_SQL = """
    SELECT run_id, service, instance, status, seq, started_at, reported_at, ended_at, counts::text AS counts,
           errors, last_error
    FROM service_runs
    WHERE $1::text IS NULL OR service = $1
    ORDER BY started_at DESC
    LIMIT $2
"""
BATCHES_SQL = """
    SELECT batch_id, target_table, exchange, rows, rows_inserted, rows_updated, rows_unchanged, load_path,
           duration_ms, quality_score, loaded_at, run_id, silver_key
    FROM batches
    ORDER BY loaded_at DESC
    LIMIT $1
"""
# A running run that has not reported for this long has probably died without saying so.
SILENT_AFTER = timedelta(minutes=5)


async def fetch_runs(url: str, service: str | None, limit: int) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        rows = [dict(r) for r in await conn.fetch(RUNS_SQL, service, limit)]
    finally:
        await conn.close()
    for row in rows:
        row["counts"] = json.loads(row["counts"])
    return rows


async def fetch_batches(url: str, limit: int) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await conn.fetch(BATCHES_SQL, limit)]
    finally:
        await conn.close()


def _duration(start: datetime, end: datetime) -> str:
    seconds = int((end - start).total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def render_runs(runs: list[dict[str, Any]], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    rows = []
    for run in runs:
        status = run["status"]
        if status == "running" and now - run["reported_at"] > SILENT_AFTER:
            status = "silent"
        counts = " ".join(f"{k}={v}" for k, v in sorted(run["counts"].items()) if v)
        rows.append(
            [
                run["service"],
                run["run_id"],
                status,
                run["started_at"].strftime("%Y-%m-%d %H:%M:%S"),
                _duration(run["started_at"], run["ended_at"] or now),
                str(run["errors"]),
                counts,
                (run["last_error"] or "")[:80],
            ]
        )
    header = ["service", "run", "status", "started (UTC)", "duration", "errors", "counts", "last error"]
    return _table(header, rows) if rows else "no runs recorded"


def render_batches(batches: list[dict[str, Any]]) -> str:
    rows = [
        [
            b["loaded_at"].strftime("%Y-%m-%d %H:%M:%S"),
            b["target_table"],
            b["exchange"] or "",
            str(b["rows"]),
            f"{b['rows_inserted']}/{b['rows_updated']}/{b['rows_unchanged']}",
            b["load_path"] or "",
            f"{b['duration_ms']:.0f}" if b["duration_ms"] is not None else "",
            f"{b['quality_score']:.3f}" if b["quality_score"] is not None else "",
            b["batch_id"],
        ]
        for b in batches
    ]
    header = ["loaded (UTC)", "table", "exchange", "rows", "ins/upd/same", "path", "ms", "quality", "batch"]
    return _table(header, rows) if rows else "no batches loaded"


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v), indent=2)
