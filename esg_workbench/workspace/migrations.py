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


def add_sync_request_and_deletes(conn: sa.Connection) -> None:
    """A run records what it was asked for (so Resume continues all of it) and how many
    rows it found deleted in the source; a stream counts its syncs since the last check
    for deleted rows. (IF NOT EXISTS: a workspace made at version 3 and set back to an
    older version number, as the upgrade tests do, has them already.)"""
    quote = conn.dialect.identifier_preparer.quote
    for table, name, sql_type in (("connector_sync_logs", "request", "TEXT"),
                                  ("connector_sync_logs", "items_deleted", "BIGINT"),
                                  ("connector_sync_state", "syncs_since_deletes_check", "INTEGER")):
        conn.execute(sa.text(f"ALTER TABLE {quote(table)} ADD COLUMN IF NOT EXISTS {quote(name)} {sql_type}"))


#: The steps from version 2 to 3, one function per feature, in the order they run. Each
#: feature of this round appends its own step here (a function above this list).
STEPS_2_TO_3: list[Callable[[sa.Connection], None]] = [
    add_sync_request_and_deletes,
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
