"""Threshold rules over the marts → `alerts` rows → Alert events on `cryptoflow.alerts.<rule>`.

Evaluation is one INSERT … SELECT per rule, idempotent through the table's unique key: the same
condition on the same data is one alert, however often it is evaluated (price moves and spreads
are keyed on the data time they were seen at; staleness on the threshold-long period it was seen
in, so a series that stays stale is re-alerted once per period, not on every evaluation).
`alerts` is also the outbox: rows are published, then marked, so a failed publish is retried
and a repeated one carries the same Nats-Msg-Id (decision 0023).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from cryptoflow_contracts import Alert
from cryptoflow_runtime import publish
from faststream.nats import NatsBroker

from .config import AlertRule
from .sql import ident

log = logging.getLogger(__name__)

# performance columns per price_move window: identifiers from our constants, never from config text.
RETURN_COLUMNS = {"1h": "return_1h_pct", "24h": "return_24h_pct", "7d": "return_7d_pct", "30d": "return_30d_pct"}

_INSERT = """
    INSERT INTO alerts (rule, kind, symbol, exchanges, table_name, timeframe, observed_at, value, threshold, message)
"""
_ON_CONFLICT = " ON CONFLICT ON CONSTRAINT alerts_once DO NOTHING"


def _price_move_sql(window: str) -> str:
    column = f"p.{ident(RETURN_COLUMNS[window])}"
    return (
        _INSERT
        + f"""
    SELECT $1::text, 'price_move', p.symbol, p.exchange, 'ohlcv', p.timeframe, p.as_of, {column}, $2::float8,
           format('%s %s moved %s%% over %s (threshold %s%%)', p.exchange, p.symbol, round({column}::numeric, 2), $3::text, $2::float8)
    FROM performance p
    WHERE abs({column}) >= $2::float8
    """
        + _ON_CONFLICT
    )


_SPREAD_SQL = (
    _INSERT
    + """
    SELECT $1::text, 'spread', s.symbol, s.exchange_a || ',' || s.exchange_b, 'ohlcv', '', s.as_of, s.spread_pct, $2::float8,
           format('%s spread %s%% between %s and %s (threshold %s%%)',
                  s.symbol, round(s.spread_pct::numeric, 3), s.exchange_a, s.exchange_b, $2::float8)
    FROM cross_exchange_spread s
    WHERE s.spread_pct >= $2::float8
    """
    + _ON_CONFLICT
)

_STALENESS_SQL = (
    _INSERT
    + """
    SELECT $1::text, 'staleness', f.symbol, f.exchange, f.table_name, f.timeframe,
           to_timestamp(floor(extract(epoch FROM now()) / $2::float8) * $2::float8),
           extract(epoch FROM f.lag), $2::float8,
           format('%s %s %s %s: no new data for %s s (threshold %s s)',
                  f.table_name, f.exchange, f.symbol, f.timeframe, round(extract(epoch FROM f.lag)), $2::float8)
    FROM data_freshness f
    WHERE f.lag > make_interval(secs => $2::float8) AND f.table_name = ANY($3::text[])
    """
    + _ON_CONFLICT
)


# An aggregator's price against an exchange's close of the same minute (price_divergence, revision
# 0012), over the snapshots of the rule's window; one alert per snapshot, market and rule.
_DIVERGENCE_SQL = (
    _INSERT
    + """
    SELECT $1::text, 'price_divergence', d.symbol, d.exchange || ',' || d.source, 'market_snapshots', '1m', d.ts,
           d.divergence_pct, $2::float8,
           format('%s (%s) on %s: %s says %s, %s closed %s at %s: %s%% apart (threshold %s%%)',
                  d.base, d.asset_id, d.source, d.source, d.aggregator_price, d.exchange, d.symbol,
                  to_char(d.candle_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
                  round(d.divergence_pct::numeric, 3), $2::float8)
    FROM price_divergence d
    WHERE d.ts >= now() - $3::interval AND abs(d.divergence_pct) >= $2::float8
    """
    + _ON_CONFLICT
)
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


async def evaluate(conn: asyncpg.Connection, rules: list[AlertRule], *, kinds: set[str] | None = None) -> int:
    """Insert what the rules find now; returns the number of new alerts."""
    new = 0
    for rule in rules:
        if kinds is not None and rule.kind not in kinds:
            continue
        if rule.kind == "price_move":
            status = await conn.execute(_price_move_sql(rule.window), rule.name, rule.threshold, rule.window)
        elif rule.kind == "spread":
            status = await conn.execute(_SPREAD_SQL, rule.name, rule.threshold)
        elif rule.kind == "price_divergence":
            status = await conn.execute(_DIVERGENCE_SQL, rule.name, rule.threshold, WINDOWS[rule.window])
        else:
            status = await conn.execute(_STALENESS_SQL, rule.name, rule.threshold, rule.tables)
        new += int(status.rsplit(" ", 1)[-1])
    return new


@dataclass(frozen=True)
class Pending:
    id: int
    alert: Alert


async def pending(conn: asyncpg.Connection, limit: int = 500) -> list[Pending]:
    records = await conn.fetch(
        """
        SELECT id, rule, kind, symbol, exchanges, table_name, timeframe, observed_at, value, threshold,
               message, triggered_at
        FROM alerts WHERE published_at IS NULL ORDER BY id LIMIT $1
        """,
        limit,
    )
    return [
        Pending(
            r["id"],
            Alert(
                rule=r["rule"],
                kind=r["kind"],
                symbol=r["symbol"],
                exchanges=r["exchanges"].split(","),
                table=r["table_name"] or None,
                timeframe=r["timeframe"] or None,
                observed_at=r["observed_at"],
                value=r["value"],
                threshold=r["threshold"],
                message=r["message"],
                triggered_at=r["triggered_at"],
            ),
        )
        for r in records
    ]


async def publish_pending(conn: asyncpg.Connection, broker: NatsBroker) -> int:
    """Publish unpublished alerts (few: a loop over alerts, not rows), then mark them published."""
    todo = await pending(conn)
    for item in todo:
        await publish(broker, item.alert)
    if todo:
        await conn.execute(
            """
            UPDATE alerts SET published_at = now(), event_id = u.event_id
            FROM unnest($1::bigint[], $2::text[]) AS u(id, event_id)
            WHERE alerts.id = u.id
            """,
            [item.id for item in todo],
            [item.alert.event_id for item in todo],
        )
        log.info("alerts published", extra={"alerts": len(todo)})
    return len(todo)
