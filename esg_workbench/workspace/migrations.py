"""Upgrades of an existing workspace, one function per schema version step.

Each function runs inside the migration's transaction (under the migration lock on
PostgreSQL) and must leave the tables exactly as schema.py defines them for the next
version, so that a new and an upgraded workspace are the same.
"""

from __future__ import annotations

from typing import Callable

import sqlalchemy as sa


def _add_columns(conn: sa.Connection, table: str, columns: list[tuple[str, str]]) -> None:
    quote = conn.dialect.identifier_preparer.quote
    for name, sql_type in columns:
        conn.execute(sa.text(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} {sql_type}"))


def upgrade_1_to_2(conn: sa.Connection) -> None:
    """Scheduled jobs get a time zone and the outcome of their last run. Organizations
    get a table, workspace_meta an organization ('*': the workspace's own rows), and every
    organization_id a server-side default instead of the app's."""
    from esg_workbench.workspace import schema

    _add_columns(conn, "scheduled_jobs", [
        ("timezone", "VARCHAR(64)"),
        ("last_status", "VARCHAR(32)"),
        ("last_message", "TEXT"),
        ("last_run_id", "BIGINT"),
    ])
    _add_columns(conn, "workspace_meta", [
        ("organization_id", f"VARCHAR(64) NOT NULL DEFAULT '{schema.SHARED_ORGANIZATION}'"),
    ])
    schema.organizations.create(conn)
    quote = conn.dialect.identifier_preparer.quote
    for table in schema.metadata.sorted_tables:
        if table.name in ("workspace_meta", "organizations"):
            continue
        conn.execute(sa.text(f"ALTER TABLE {quote(table.name)} ALTER COLUMN organization_id SET DEFAULT 'default'"))


def _add_missing_columns(conn: sa.Connection, table: str, columns: list[tuple[str, str]]) -> None:
    """_add_columns for the columns the table lacks (a step that may meet its own columns:
    a workspace downgraded by hand for a test keeps the later steps' columns)."""
    quote = conn.dialect.identifier_preparer.quote
    have = set(conn.execute(sa.text(f"SELECT * FROM {quote(table)} LIMIT 0")).keys())
    _add_columns(conn, table, [(name, sql_type) for name, sql_type in columns if name not in have])


def add_scheduling_review_rotation(conn: sa.Connection) -> None:
    """Schedules get dependencies, a retry policy and a priority; runs name the run they
    retry; failed chunks get a review; sync slots, organization settings and the dates
    connector secrets were set get tables of their own. Idempotent."""
    from esg_workbench.workspace import schema

    _add_missing_columns(conn, "scheduled_jobs", [
        ("priority", "INTEGER"),
        ("depends_on", "TEXT"),
        ("dependency_window_minutes", "INTEGER"),
        ("dependency_accepts_partial", "BOOLEAN"),
        ("retry_attempts", "INTEGER"),
        ("retry_backoff_seconds", "INTEGER"),
        ("retry_attempt", "INTEGER"),
        ("retry_due_at", "TIMESTAMP"),
        ("retry_first_run_id", "BIGINT"),
    ])
    _add_missing_columns(conn, "connector_sync_logs", [("retry_of", "BIGINT"), ("attempt", "INTEGER")])
    _add_missing_columns(conn, "connector_sync_chunks", [
        ("first_failed_at", "TIMESTAMP"),
        ("review_status", "VARCHAR(16)"),
        ("review_reason", "TEXT"),
        ("reviewed_by", "VARCHAR(200)"),
        ("reviewed_at", "TIMESTAMP"),
    ])
    for table in (schema.sync_slots, schema.organization_settings, schema.connector_secrets):
        table.create(conn, checkfirst=True)


#: The steps from version 2 to 3, one function per feature, in the order they run. Each
#: feature of this round appends its own step here (a function above this list).
STEPS_2_TO_3: list[Callable[[sa.Connection], None]] = [
    add_scheduling_review_rotation,
]


def upgrade_2_to_3(conn: sa.Connection) -> None:
    """Version 3: the steps of STEPS_2_TO_3, in order."""
    for step in STEPS_2_TO_3:
        step(conn)


#: version -> function upgrading a workspace from that version to the next one
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    1: upgrade_1_to_2,
    2: upgrade_2_to_3,
}
