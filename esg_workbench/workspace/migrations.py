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
    """Scheduled jobs get a time zone and the outcome of their last run."""
    _add_columns(conn, "scheduled_jobs", [
        ("timezone", "VARCHAR(64)"),
        ("last_status", "VARCHAR(32)"),
        ("last_message", "TEXT"),
        ("last_run_id", "BIGINT"),
    ])


#: version -> function upgrading a workspace from that version to the next one
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    1: upgrade_1_to_2,
}
