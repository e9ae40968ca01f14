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


def add_factor_regions_and_site_locations(conn: sa.Connection) -> None:
    """Methodology (issue 13): factors state their basis, GWP set and licence; sites get a
    location (the region their factors are chosen by); organizations keep methodology
    choices (how gaps are estimated)."""
    from esg_workbench.workspace import schema

    # only the columns it lacks: a workspace may have been made by a build that had them
    present = set(conn.exec_driver_sql("SELECT * FROM emission_factors LIMIT 0").keys())  # (DuckDB: no inspector)
    _add_columns(conn, "emission_factors", [(name, sql_type) for name, sql_type in (
        ("basis", "VARCHAR(100)"),
        ("gwp", "VARCHAR(32)"),
        ("licence", "VARCHAR(200)"),
    ) if name not in present])
    schema.metadata.tables["site_locations"].create(conn, checkfirst=True)
    schema.metadata.tables["methodology_settings"].create(conn, checkfirst=True)


#: The steps from version 2 to 3, one function per feature, in the order they run. Each
#: feature of this round appends its own step here (a function above this list).
STEPS_2_TO_3: list[Callable[[sa.Connection], None]] = [
    add_factor_regions_and_site_locations,
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
