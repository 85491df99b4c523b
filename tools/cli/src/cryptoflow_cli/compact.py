"""`cryptoflow compact`: silver compaction as a one-off or scheduled job (decision 0050).

Sweeps what earlier compactions superseded (past the grace period), then rewrites every closed
silver partition into one file. Safe to run while the pipeline and readers run, and by several
jobs at once (a generation is committed once); bronze is never touched.
"""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import timedelta

from botocore.exceptions import BotoCoreError, ClientError
from cryptoflow_runtime import ConfigError, LakeSettings, load_settings
from cryptoflow_runtime.lake import MaintainedLake, open_lake
from cryptoflow_runtime.silver_lake import CompactionReport, Compactor

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `12h`, `1d`, or several (`1d12h`)."""
    parts = re.findall(r"(\d+)([smhd])", text.strip())
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.strip():
        raise ValueError(f"{text!r} is not a duration like 1d, 12h, 30m or 90s")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


async def compact_lake(older_than: timedelta, grace: timedelta) -> CompactionReport:
    settings = load_settings(LakeSettings)
    lake = await open_lake(settings.lake_url, settings.s3_endpoint_url, settings.s3_max_attempts)
    try:
        if not isinstance(lake, MaintainedLake):
            raise ConfigError(f"{settings.lake_url}: this lake cannot list write times or delete")
        return await Compactor(lake, older_than=older_than, grace=grace).run()
    finally:
        await lake.close()


def run_compact(older_than: timedelta, grace: timedelta) -> int:
    """Exit status: 0 done, 3 some partition refused (the rest compacted), 1 the lake failed."""
    try:
        report = asyncio.run(compact_lake(older_than, grace))
    except (ConfigError, OSError, BotoCoreError, ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 3 if report.refused else 0
