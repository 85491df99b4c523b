"""What the loader does between batches: refresh marts, evaluate alert rules, publish alerts,
apply retention, compact closed silver partitions (decision 0050), report its run. One background task per replica, every
WAREHOUSE_LOADER_MAINTENANCE_INTERVAL_S.

A failed step is logged and counted in the run's errors, and the next tick tries again: the
database may be restarting, and none of these steps may stop the loader from loading.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from cryptoflow_contracts import RunReport, RunStatus
from cryptoflow_runtime import publish
from cryptoflow_runtime.lake import MaintainedLake
from cryptoflow_runtime.service import LakeHandle
from cryptoflow_runtime.silver_lake import Compactor
from faststream.nats import NatsBroker

from . import alerts, marts, partitions
from .config import WarehouseLoaderSettings
from .runs import RUNNING, RunTracker, record_report
from .tables import warehouse_table
from .warehouse import Warehouse

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 3600.0


class Maintenance:
    def __init__(
        self,
        settings: WarehouseLoaderSettings,
        warehouse: Warehouse,
        broker: NatsBroker,
        tracker: RunTracker,
        lake: LakeHandle | None = None,
    ) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.broker = broker
        self.tracker = tracker
        self.lake = lake
        self.rows_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_retention = float("-inf")
        # One interval after start, not at once: a loader restarting in a loop does not compact
        # each time, and a short-lived one (tests, a one-off) never does.
        self._last_compaction = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="warehouse-maintenance")

    async def stop(self, status: RunStatus) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            await self.report(status)
        except Exception as exc:
            # Shutdown goes on (the broker must still drain); the run stays "running" in
            # service_runs and `cryptoflow runs` shows it as silent.
            log.warning("final run report not recorded", extra={"error": repr(exc)})

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.maintenance_interval_s)
            await self.tick()

    async def tick(self) -> None:
        for step in (self.refresh_and_alert, self.publish_alerts, self.retention, self.compaction):
            try:
                await step()
            except Exception as exc:
                log.warning(
                    "maintenance step failed; next tick retries", extra={"step": step.__name__, "error": repr(exc)}
                )
                self.tracker.error(exc)
        if self.tracker.due(self.settings.run_report_interval_s):
            try:
                await self.report(RUNNING)
            except Exception as exc:
                log.warning("run report failed; next tick retries", extra={"error": repr(exc)})

    async def refresh_and_alert(self) -> None:
        """Refresh marts and evaluate every rule if rows changed; staleness rules on every tick
        (staleness is what happens when nothing is loaded)."""
        changed = self.rows_changed.is_set()
        self.rows_changed.clear()
        async with self.warehouse.pool.acquire() as conn:
            if changed:
                try:
                    await marts.refresh(conn)
                except BaseException:
                    self.rows_changed.set()  # not refreshed: try again next tick
                    raise
                self.tracker.count("mart_refreshes")
            new = await alerts.evaluate(conn, self.settings.alert_rules, kinds=None if changed else {"staleness"})
        if new:
            self.tracker.count("alerts_raised", new)

    async def publish_alerts(self) -> None:
        async with self.warehouse.pool.acquire() as conn:
            published = await alerts.publish_pending(conn, self.broker)
        if published:
            self.tracker.count("alerts_published", published)

    async def retention(self) -> None:
        days = self.settings.retention_days
        if days is None or time.monotonic() - self._last_retention < RETENTION_EVERY_S:
            return
        cutoff = datetime.now(UTC) - timedelta(days=days)
        async with self.warehouse.pool.acquire() as conn:
            for table in self.settings.retention_table_list:
                dropped = await partitions.drop_before(conn, warehouse_table(table).storage, cutoff)
                if dropped:
                    self.tracker.count("partitions_dropped", len(dropped))
        self._last_retention = time.monotonic()

    async def compaction(self, now: float | None = None) -> None:
        """Compact closed silver partitions and sweep what earlier runs superseded. Every replica
        may: a partition's generation is committed once, deletes are idempotent."""
        settings = self.settings
        moment = time.monotonic() if now is None else now
        if not settings.compaction or self.lake is None or not self.lake.is_open:
            return
        if moment - self._last_compaction < settings.compaction_interval_s:
            return
        self._last_compaction = moment
        lake = self.lake.lake
        if not isinstance(lake, MaintainedLake):
            return
        compactor = Compactor(
            lake,
            older_than=timedelta(seconds=settings.compaction_older_than_s),
            grace=timedelta(seconds=settings.compaction_grace_s),
        )
        report = await compactor.run()
        if report.partitions_compacted:
            self.tracker.count("silver_partitions_compacted", report.partitions_compacted)
        if report.files_deleted:
            self.tracker.count("silver_files_deleted", report.files_deleted)
        log.info("silver compaction", extra={"summary": report.summary()})

    async def report(self, status: RunStatus) -> RunReport:
        report = self.tracker.report(status)
        async with self.warehouse.pool.acquire() as conn:
            await record_report(conn, report)
        await publish_report(self.broker, report)
        return report


async def publish_report(broker: NatsBroker, report: RunReport) -> None:
    await publish(broker, report)
