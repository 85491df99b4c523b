"""Run history: the loader's own RunReports, and persisting anyone's (decision 0024).

A run is one process lifetime. The loader counts what it does (batches, rows, failures) in a
RunTracker, writes its RunReport to `service_runs` itself and publishes it on
`cryptoflow.runs.warehouse-loader`; any other service publishes RunReports on
`cryptoflow.runs.<service>` and the loader's RUNS consumer persists them the same way. The
highest `seq` of a run wins, so reordered or repeated reports change nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import orjson
from cryptoflow_contracts import RunReport, RunStatus

RUNNING: RunStatus = "running"
OK: RunStatus = "ok"
FAILED: RunStatus = "failed"


class RunTracker:
    def __init__(self, service: str) -> None:
        self.service = service
        self.started_at = datetime.now(UTC)
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.run_id = f"{service}-{socket.gethostname()}-{os.getpid()}-{int(self.started_at.timestamp() * 1000)}"
        self.counts: Counter[str] = Counter()
        self.errors = 0
        self.last_error: str | None = None
        self._seq = 0
        self._reported_state: tuple[object, ...] | None = None
        self._reported_at = 0.0

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def error(self, error: BaseException | str) -> None:
        self.errors += 1
        self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"[:2000]

    def _state(self) -> tuple[object, ...]:
        return (tuple(sorted(self.counts.items())), self.errors, self.last_error)

    def due(self, interval_s: float) -> bool:
        """Something changed, or nothing was reported for `interval_s`."""
        return self._state() != self._reported_state or time.monotonic() - self._reported_at >= interval_s

    def report(self, status: RunStatus = RUNNING) -> RunReport:
        self._seq += 1
        self._reported_state = self._state()
        self._reported_at = time.monotonic()
        now = datetime.now(UTC)
        return RunReport(
            service=self.service,
            run_id=self.run_id,
            instance=self.instance,
            seq=self._seq,
            status=status,
            started_at=self.started_at,
            reported_at=now,
            ended_at=None if status == RUNNING else now,
            counts=dict(self.counts),
            errors=self.errors,
            last_error=self.last_error,
        )


async def record_report(conn: asyncpg.Connection, report: RunReport) -> bool:
    """Upsert the run's row unless a later report (higher seq) is already there. True if written."""
    status: str = await conn.execute(
        """
        INSERT INTO service_runs (run_id, service, instance, status, seq, started_at, reported_at, ended_at,
                                  counts, errors, last_error)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11)
        ON CONFLICT (run_id) DO UPDATE SET
            status = EXCLUDED.status, seq = EXCLUDED.seq, reported_at = EXCLUDED.reported_at,
            ended_at = EXCLUDED.ended_at, counts = EXCLUDED.counts, errors = EXCLUDED.errors,
            last_error = EXCLUDED.last_error, updated_at = now()
        WHERE service_runs.seq < EXCLUDED.seq
        """,
        report.run_id,
        report.service,
        report.instance,
        report.status,
        report.seq,
        report.started_at,
        report.reported_at,
        report.ended_at,
        orjson.dumps(report.counts).decode(),
        report.errors,
        report.last_error,
    )
    return status.endswith(" 1")
