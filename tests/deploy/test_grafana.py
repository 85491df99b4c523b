"""Grafana: provisioning, dashboard structure, and every SQL panel run against the real warehouse schema.

The SQL panels are run as the read-only role that deploy/postgres/initdb/10-reader-role.sql
creates (the one Grafana logs in with), on a fresh database migrated by the warehouse-loader's own
migrations, after Grafana's macros and template variables are expanded.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import yaml

from .support import (
    GRAFANA_DIR,
    POSTGRES_DS_UID,
    PROMETHEUS_DS_UID,
    apply_migrations,
    dashboards,
    declared_metrics,
    drop_roles,
    iter_panels,
    metric_names,
    panel_datasource_uid,
    render_grafana_sql,
    role_url,
    run_compose_init,
    sql_queries,
)

DASHBOARD_TITLES = {"pipeline-health.json": "Pipeline health", "market.json": "Market"}


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml").read_text())
    return {source["uid"]: source for source in document["datasources"]}


def test_datasources_are_prometheus_and_the_warehouse_as_the_reader() -> None:
    sources = provisioned_datasources()
    assert sources[PROMETHEUS_DS_UID]["type"] == "prometheus"
    warehouse = sources[POSTGRES_DS_UID]
    assert warehouse["type"] == "grafana-postgresql-datasource"
    assert warehouse["user"] == "${CRYPTOFLOW_READER_USER}"
    assert warehouse["secureJsonData"]["password"] == "${CRYPTOFLOW_READER_PASSWORD}"
    assert warehouse["jsonData"]["database"]


def test_dashboard_provider_loads_the_dashboards_directory() -> None:
    document = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((GRAFANA_DIR.parents[1] / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts


@pytest.mark.parametrize("file_name", sorted(DASHBOARD_TITLES))
def test_dashboard_structure(file_name: str) -> None:
    board = dashboards()[file_name]
    assert board["title"] == DASHBOARD_TITLES[file_name]
    assert board["uid"].startswith("cryptoflow-") and len(board["uid"]) <= 40
    panels = list(iter_panels(board))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel.get("title") and panel.get("description"), panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert panel_datasource_uid(panel, target) in {PROMETHEUS_DS_UID, POSTGRES_DS_UID}, panel["title"]


def test_pipeline_health_covers_every_stage_signal() -> None:
    text = (GRAFANA_DIR / "dashboards" / "pipeline-health.json").read_text()
    for metric in (
        "cryptoflow_messages_processed_total",
        "cryptoflow_messages_failed_total",
        "cryptoflow_dead_letters_total",
        "cryptoflow_handler_seconds_bucket",
        "cryptoflow_transformer_quality_score",
        "cryptoflow_lake_bytes_written_total",
        "cryptoflow_warehouse_rows_total",
        "cryptoflow_extractor_freshness_lag_seconds",
        "cryptoflow_consumer_pending_messages",
    ):
        assert metric in text, metric


def row_panels(board: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """The panels laid out under the row titled `title` (rows are open: their panels follow them)."""
    top_level = sorted(board["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    (start,) = [i for i, p in enumerate(top_level) if p["type"] == "row" and p["title"] == title]
    after = top_level[start + 1 :]
    end = next((i for i, p in enumerate(after) if p["type"] == "row"), len(after))
    return after[:end]


def test_pipeline_health_streams_row_charts_every_stream_metric() -> None:
    # Every metric the extractor declares for its stream jobs (and LIVE) is on the Streams row,
    # as a per-second rate for counters; a stream metric added later without a panel fails here.
    stream_metrics = {
        name
        for name in declared_metrics()
        if name.startswith(("cryptoflow_extractor_stream_", "cryptoflow_extractor_live_"))
        and not name.endswith("_created")
    }
    assert len(stream_metrics) >= 6, stream_metrics
    panels = row_panels(dashboards()["pipeline-health.json"], "Streams")
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in panels}
    queried = set().union(*(metric_names(e) for es in exprs.values() for e in es))
    assert stream_metrics <= queried, f"not charted: {sorted(stream_metrics - queried)}"
    for title, expressions in exprs.items():
        for expr in expressions:
            counters = {name for name in metric_names(expr) if name.endswith("_total")}
            assert all(f"rate({name}[$__rate_interval])" in expr for name in counters), (title, expr)
    (age,) = [p for p in panels if "cryptoflow_extractor_stream_last_message_timestamp_seconds" in str(p["targets"])]
    assert "time() -" in age["targets"][0]["expr"]
    defaults = age["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    steps = [step["value"] for step in defaults["thresholds"]["steps"]]
    assert steps[0] is None and steps[1:] == sorted(steps[1:]) and steps[1] <= 10, steps


def test_market_dashboard_reads_only_the_warehouse() -> None:
    board = dashboards()["market.json"]
    for panel in iter_panels(board):
        for target in panel.get("targets", []):
            assert panel_datasource_uid(panel, target) == POSTGRES_DS_UID
    assert [v["name"] for v in board["templating"]["list"]] == ["exchange", "symbol", "timeframe"]


# --- the SQL, against the real schema --------------------------------------------------------------


# Filler for NOT NULL columns without a default that the seed does not name (bookkeeping columns
# the migrations may add), by PostgreSQL data type.
FILLER = {"text": "x", "bigint": 1, "integer": 1, "double precision": 1.0, "boolean": True}


async def insert_rows(conn: asyncpg.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    columns = await conn.fetch(
        "SELECT column_name, data_type, is_nullable, column_default, is_identity FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = $1",
        table,
    )
    assert columns, f"the migrations created no table {table}"
    if await conn.fetchval("SELECT count(*) FROM pg_partitioned_table WHERE partrelid = $1::regclass", table):
        # Partitions are the loader's to create; one catch-all partition does for the seed.
        await conn.execute(f'CREATE TABLE IF NOT EXISTS "{table}_seed" PARTITION OF "{table}" DEFAULT')
    fill = {
        c["column_name"]: FILLER.get(c["data_type"], datetime.now(UTC))
        for c in columns
        if c["is_nullable"] == "NO" and c["column_default"] is None and c["is_identity"] == "NO"
    }
    names = [c["column_name"] for c in columns if c["column_name"] in rows[0] or c["column_name"] in fill]
    records = [tuple(row.get(name, fill.get(name)) for name in names) for row in rows]
    await conn.copy_records_to_table(table, records=records, columns=names)


async def seed(conn: asyncpg.Connection) -> None:
    """Two symbols of 1m candles over the last two hours, and their batch ledger row."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    candles = []
    for symbol, base in (("BTC/USDT", 60_000.0), ("ETH/USDT", 3_000.0)):
        for minute in range(120):
            price = base + minute
            candles.append(
                {
                    "exchange": "binance",
                    "symbol": symbol,
                    "timeframe": "1m",
                    "ts": now - timedelta(minutes=120 - minute),
                    "open": price,
                    "high": price + 5,
                    "low": price - 5,
                    "close": price + 1,
                    "volume": 10.0 + minute,
                    "batch_id": "batch-1",
                    "loaded_at": now,
                }
            )
    batch = {
        "batch_id": "batch-1",
        "dataset": "ohlcv",
        "target_table": "ohlcv",
        "silver_key": "silver/x.parquet",
        "source_key": "bronze/x.ndjson.zst",
        "source_event_id": "e1",
        "rows": 240,
        "rows_inserted": 240,
        "rows_updated": 0,
        "rows_unchanged": 0,
        "quality_score": 0.995,
        "loaded_at": now,
    }
    await insert_rows(conn, "batches", [batch])
    # The loader keeps one `series` row per exchange·symbol·timeframe; the marts start from it, and
    # every candle carries its series' id.
    newest = max(c["ts"] for c in candles)
    series = [
        {"table_name": "ohlcv", "exchange": ex, "symbol": sym, "timeframe": "1m", "dataset": "ohlcv", "last_ts": newest}
        for ex, sym in (("binance", "BTC/USDT"), ("binance", "ETH/USDT"), ("gate", "BTC/USDT"))
    ]
    await insert_rows(conn, "series", series)
    ids = {(r["exchange"], r["symbol"]): r["series_id"] for r in await conn.fetch("SELECT * FROM series")}
    batch_no = await conn.fetchval("SELECT batch_no FROM batches WHERE batch_id = 'batch-1'")
    candles = [{**c, "series_id": ids[(c["exchange"], c["symbol"])], "batch_no": batch_no} for c in candles]
    await insert_rows(conn, "ohlcv_data", candles)
    # A second exchange for the spread mart, one known gap and one fired alert.
    gate = [
        {**c, "exchange": "gate", "close": c["close"] + 10, "series_id": ids[("gate", c["symbol"])]}
        for c in candles
        if c["symbol"] == "BTC/USDT"
    ]
    await insert_rows(conn, "ohlcv_data", gate)
    await conn.execute("REFRESH MATERIALIZED VIEW cross_exchange_spread")
    gap = {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "dataset": "ohlcv",
        "timeframe": "1m",
        "gap_start": now - timedelta(minutes=30),
        "gap_end": now - timedelta(minutes=25),
        "missing": 6,
        "detected_at": now,
        "event_id": "KnownGap-1",
    }
    # And a day the bulk archive lacked (read by REST): source coverage, not a gap in the data.
    archive_day = {**gap, "gap_start": now - timedelta(days=1), "gap_end": now, "missing": 0, "kind": "archive_missing"}
    await insert_rows(conn, "known_gaps", [gap, {**archive_day, "event_id": "KnownGap-2"}])
    alert = {
        "rule": "btc-move",
        "kind": "price_move",
        "symbol": "BTC/USDT",
        "exchanges": "binance",
        "observed_at": now,
        "value": 5.0,
        "threshold": 3.0,
        "message": "BTC/USDT moved 5% in 1h",
        "triggered_at": now,
    }
    await insert_rows(conn, "alerts", [alert])
    # An aggregator's bitcoin each minute, 0.2 % above binance's close of the minute before.
    await insert_rows(
        conn,
        "series",
        [{"table_name": "market_snapshots", "exchange": "coingecko", "symbol": "bitcoin", "timeframe": "",
          "dataset": "market_snapshot", "last_ts": newest}],
    )  # fmt: skip
    bitcoin = await conn.fetchval("SELECT series_id FROM series WHERE table_name = 'market_snapshots'")
    snapshots = [
        {"series_id": bitcoin, "ts": c["ts"] + timedelta(minutes=1), "asset_symbol": "BTC", "name": "Bitcoin",
         "price_usd": c["close"] * 1.002, "rank": 1, "source_event_id": "e2", "batch_no": batch_no}
        for c in candles
        if c["exchange"] == "binance" and c["symbol"] == "BTC/USDT"
    ]  # fmt: skip
    await insert_rows(conn, "market_snapshots_data", snapshots)


async def test_every_sql_panel_and_variable_runs_as_the_read_only_role(fresh_database_url: str) -> None:
    admin = await asyncpg.connect(fresh_database_url)
    role = f"cf_reader_{uuid.uuid4().hex[:12]}"
    owner = f"cf_owner_{uuid.uuid4().hex[:12]}"
    try:
        # Compose order: the init scripts run on the empty database, the loader (as the owner
        # role) migrates later.
        run_compose_init(fresh_database_url, owner=(owner, "owner-secret"), reader=(role, "reader-secret"))
        owner_url = role_url(fresh_database_url, owner)
        as_owner = await asyncpg.connect(owner_url, password="owner-secret")
        try:
            await apply_migrations(owner_url, as_owner)
            await seed(as_owner)
        finally:
            await as_owner.close()
        reader_url = role_url(fresh_database_url, role)
        reader = await asyncpg.connect(reader_url, password="reader-secret")
        try:
            variables = await resolve_variables(reader)
            assert variables == {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}
            failures = []
            for board, title, sql in sql_queries():
                rendered = render_grafana_sql(sql, variables)
                try:
                    rows = await reader.fetch(rendered)
                except asyncpg.PostgresError as exc:
                    failures.append(f"{board} / {title}: {type(exc).__name__}: {exc}\n{rendered}")
                    continue
                if not rows:
                    failures.append(f"{board} / {title}: no rows for seeded data\n{rendered}")
            assert not failures, "\n\n".join(failures)
            assert len(sql_queries()) >= 8
            # Read-only: no writes, even to the tables it reads.
            with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError)):
                await reader.execute("DELETE FROM ohlcv_data")
        finally:
            await reader.close()
    finally:
        await drop_roles(admin, role, owner)
        await admin.close()


async def resolve_variables(conn: asyncpg.Connection) -> dict[str, str]:
    """Each template variable's query, in order, taking its first value (as Grafana does by default)."""
    values: dict[str, str] = {}
    for variable in dashboards()["market.json"]["templating"]["list"]:
        rows = await conn.fetch(render_grafana_sql(variable["query"], values))
        assert rows, f"variable {variable['name']} has no values"
        values[variable["name"]] = str(rows[0][0])
    return values


def test_pipeline_health_api_row_charts_the_api() -> None:
    # Requests (with their refusals by status), time to headers, rows served, live clients and drops;
    # each a metric the API declares, counters as per-second rates.
    charted = {
        "cryptoflow_api_requests_total",
        "cryptoflow_api_request_seconds_bucket",
        "cryptoflow_api_rows_total",
        "cryptoflow_api_live_clients",
        "cryptoflow_api_live_dropped_total",
    }
    assert charted <= set(declared_metrics())
    panels = row_panels(dashboards()["pipeline-health.json"], "API")
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    queried = set().union(*(metric_names(e) for e in exprs))
    assert charted <= queried, f"not charted: {sorted(charted - queried)}"
    for expr in exprs:
        counters = {name for name in metric_names(expr) if name.endswith("_total")}
        assert all(f"rate({name}[$__rate_interval])" in expr for name in counters), expr
