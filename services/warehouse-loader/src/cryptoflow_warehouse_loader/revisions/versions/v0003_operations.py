"""Operational tables: known_gaps, quarantine, service_runs, alerts.

* known_gaps: KnownGap events (GAPS stream); timeframe '' for datasets without one.
* quarantine: rows the transformer rejected, one row each with its reason and the whole
  rejected row as JSON (columns differ per table), keyed by quarantine object and row number.
* service_runs: the latest RunReport per run of any service (decision 0024).
* alerts: what the threshold rules found; published_at is set once the Alert event is on
  the ALERTS stream (an outbox: unpublished alerts are retried, decision 0023).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE TABLE known_gaps (
        exchange    text        NOT NULL,
        symbol      text        NOT NULL,
        dataset     text        NOT NULL,
        timeframe   text        NOT NULL DEFAULT '',
        gap_start   timestamptz NOT NULL,
        gap_end     timestamptz NOT NULL,
        missing     integer,
        detected_at timestamptz NOT NULL,
        event_id    text        NOT NULL,
        loaded_at   timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT known_gaps_pkey PRIMARY KEY (exchange, symbol, dataset, timeframe, gap_start, gap_end),
        CONSTRAINT known_gaps_ordered CHECK (gap_end >= gap_start)
    );
    CREATE INDEX known_gaps_start_idx ON known_gaps (gap_start);

    CREATE TABLE quarantine (
        quarantine_key       text        NOT NULL,
        row_no               integer     NOT NULL,
        dataset              text,
        table_name           text,
        exchange             text,
        symbol               text,
        ts                   timestamptz,
        reason               text        NOT NULL,
        row_data             jsonb       NOT NULL,
        source_key           text,
        dead_letter_event_id text        NOT NULL,
        loaded_at            timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT quarantine_pkey PRIMARY KEY (quarantine_key, row_no)
    );
    CREATE INDEX quarantine_loaded_at_idx ON quarantine (loaded_at);
    CREATE INDEX quarantine_series_idx ON quarantine (exchange, symbol, ts);

    CREATE TABLE service_runs (
        run_id      text        NOT NULL,
        service     text        NOT NULL,
        instance    text        NOT NULL,
        status      text        NOT NULL,
        seq         integer     NOT NULL,
        started_at  timestamptz NOT NULL,
        reported_at timestamptz NOT NULL,
        ended_at    timestamptz,
        counts      jsonb       NOT NULL DEFAULT '{}',
        errors      integer     NOT NULL DEFAULT 0,
        last_error  text,
        updated_at  timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT service_runs_pkey PRIMARY KEY (run_id),
        CONSTRAINT service_runs_status CHECK (status IN ('running', 'ok', 'failed'))
    );
    CREATE INDEX service_runs_service_started_idx ON service_runs (service, started_at);

    CREATE TABLE alerts (
        id           bigint GENERATED ALWAYS AS IDENTITY,
        rule         text             NOT NULL,
        kind         text             NOT NULL,
        symbol       text             NOT NULL,
        exchanges    text             NOT NULL,
        table_name   text             NOT NULL DEFAULT '',
        timeframe    text             NOT NULL DEFAULT '',
        observed_at  timestamptz      NOT NULL,
        value        double precision NOT NULL,
        threshold    double precision NOT NULL,
        message      text             NOT NULL,
        triggered_at timestamptz      NOT NULL DEFAULT now(),
        event_id     text,
        published_at timestamptz,
        CONSTRAINT alerts_pkey PRIMARY KEY (id),
        CONSTRAINT alerts_once UNIQUE (rule, symbol, exchanges, table_name, timeframe, observed_at)
    );
    CREATE INDEX alerts_triggered_at_idx ON alerts (triggered_at);
    CREATE INDEX alerts_unpublished_idx ON alerts (id) WHERE published_at IS NULL;
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE alerts;
    DROP TABLE service_runs;
    DROP TABLE quarantine;
    DROP TABLE known_gaps;
    """)
