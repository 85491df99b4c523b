"""api_keys: the read API's keys, stored as SHA-256 digests (issue 14, decision 0047).

A key is 32 random bytes (`cfk_` + URL-safe base64) made by `cryptoflow api-key create`; only its
digest is stored, with a short prefix to tell keys apart in listings, its own rate limit, and
`revoked_at` (keys are revoked, never deleted, so a listing shows what was given out). The API
reads the table as cryptoflow_reader (SELECT, from the default privileges of revision 0005); only
the schema owner (the CLI's admin URL) writes it.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql(
        """
        CREATE TABLE api_keys (
            key_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name text NOT NULL,
            key_prefix text NOT NULL,
            key_sha256 text NOT NULL UNIQUE CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
            rate_per_s double precision NOT NULL DEFAULT 20 CHECK (rate_per_s > 0),
            burst integer NOT NULL DEFAULT 100 CHECK (burst >= 1),
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        );
        CREATE INDEX api_keys_name_idx ON api_keys (name);
        GRANT SELECT ON api_keys TO cryptoflow_reader;
        """
    )


def downgrade() -> None:
    run_sql("DROP TABLE api_keys;")
