"""Upgrades of an existing workspace, one function per schema version step.

Each function runs inside the migration's transaction (under the migration lock on
PostgreSQL) and must leave the tables exactly as schema.py defines them for the next
version, so that a new and an upgraded workspace are the same.
"""

from __future__ import annotations

from typing import Callable

import sqlalchemy as sa


def _add_columns(conn: sa.Connection, table: str, columns: list[tuple[str, str]]) -> None:
    """Add the columns the table lacks. A step may meet a column it adds already: the
    tests make an old workspace by dropping only that version's own changes from a new
    one, so later versions' columns are there before their step runs."""
    quote = conn.dialect.identifier_preparer.quote
    present = set(conn.execute(sa.text(f"SELECT * FROM {quote(table)} LIMIT 0")).keys())
    for name, sql_type in columns:
        if name in present:
            continue
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


def add_audit_heads_and_lock_rows(conn: sa.Connection) -> None:
    """The audit chains' recorded heads, from the entries there are (issue 11), and the
    organizations' lock rows (concurrency.py)."""
    from esg_workbench.workspace import schema

    schema.esg_audit_heads.create(conn, checkfirst=True)
    schema.workspace_locks.create(conn, checkfirst=True)
    audit, heads = schema.esg_ingestion_audit, schema.esg_audit_heads
    quote = conn.dialect.identifier_preparer.quote
    forced = conn.dialect.name == "postgresql" and conn.execute(sa.text(
        "SELECT relforcerowsecurity FROM pg_class WHERE oid = to_regclass('esg_ingestion_audit')")).scalar()
    if forced:  # the owner (running this upgrade) reads every organization's chain, in this transaction only
        conn.execute(sa.text(f"ALTER TABLE {quote(audit.name)} NO FORCE ROW LEVEL SECURITY"))
    last = sa.select(audit.c.organization_id, sa.func.count().label("entries"), sa.func.max(audit.c.id).label("id")) \
        .group_by(audit.c.organization_id).subquery()
    recorded = set(conn.execute(sa.select(heads.c.organization_id)).scalars())
    for org, entries, last_hash in conn.execute(
            sa.select(last.c.organization_id, last.c.entries, audit.c.entry_hash).join(audit, audit.c.id == last.c.id)):
        if org in recorded:
            continue
        conn.execute(sa.insert(heads).values(organization_id=org, entries=entries, last_hash=last_hash,
                                             updated_at=sa.func.now()))
    if forced:
        conn.execute(sa.text(f"ALTER TABLE {quote(audit.name)} FORCE ROW LEVEL SECURITY"))


def add_factor_regions_and_site_locations(conn: sa.Connection) -> None:
    """Methodology (issue 13): factors state their basis, GWP set and licence; sites get a
    location (the region their factors are chosen by); organizations keep methodology
    choices (how gaps are estimated)."""
    from esg_workbench.workspace import schema

    _add_columns(conn, "emission_factors", [("basis", "VARCHAR(100)"), ("gwp", "VARCHAR(32)"), ("licence", "VARCHAR(200)")])
    schema.metadata.tables["site_locations"].create(conn, checkfirst=True)
    schema.metadata.tables["methodology_settings"].create(conn, checkfirst=True)


def add_scheduling_review_rotation(conn: sa.Connection) -> None:
    """Schedules get dependencies, a retry policy and a priority; runs name the run they
    retry; failed chunks get a review; sync slots, organization settings and the dates
    connector secrets were set get tables of their own. Idempotent."""
    from esg_workbench.workspace import schema

    _add_columns(conn, "scheduled_jobs", [
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
    _add_columns(conn, "connector_sync_logs", [("retry_of", "BIGINT"), ("attempt", "INTEGER")])
    _add_columns(conn, "connector_sync_chunks", [
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
    add_sync_request_and_deletes,
    add_audit_heads_and_lock_rows,
    add_factor_regions_and_site_locations,
    add_scheduling_review_rotation,
]


def upgrade_2_to_3(conn: sa.Connection) -> None:
    """Version 3: the steps of STEPS_2_TO_3, in order."""
    for step in STEPS_2_TO_3:
        step(conn)


def add_entered_instruments(conn: sa.Connection) -> None:
    """Methodology (issue 13): contractual instruments entered by hand (guarantees of
    origin, RECs, PPAs), beside the mapped ones. Idempotent."""
    from esg_workbench.workspace import schema

    schema.entered_instruments.create(conn, checkfirst=True)


def drop_duckdb_staging_primary_key(conn: sa.Connection) -> None:
    """DuckDB only: staging_rows loses its primary key (an ART index every apply's insert,
    delete and commit maintained row by row: schema.py), as in a new workspace. DuckDB
    cannot drop a primary key, so the table is rebuilt: renamed, made again from schema.py
    and its rows copied. PostgreSQL keeps its key. Idempotent."""
    if conn.dialect.name == "postgresql":
        return
    from esg_workbench.workspace import schema

    keyed = conn.execute(sa.text(
        "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'staging_rows' "
        "AND schema_name = current_schema() AND constraint_type = 'PRIMARY KEY'")).scalar()
    if not keyed:
        return
    columns = ", ".join(c.name for c in schema.staging_rows.columns)
    conn.execute(sa.text("ALTER TABLE staging_rows RENAME TO _esg_staging_rows_keyed"))
    # (schema.staging_rows describes that table's columns: since version 5, a view's)
    schema.staging_rows.create(conn, checkfirst=True)  # (its sequence is there already)
    conn.execute(sa.text(f"INSERT INTO staging_rows ({columns}) SELECT {columns} FROM _esg_staging_rows_keyed"))
    conn.execute(sa.text("DROP TABLE _esg_staging_rows_keyed"))


#: The steps from version 3 to 4, one function per feature, in the order they run. Each
#: feature of this round appends its own step here (a function above this list).
STEPS_3_TO_4: list[Callable[[sa.Connection], None]] = [
    add_entered_instruments,
    drop_duckdb_staging_primary_key,
]


def upgrade_3_to_4(conn: sa.Connection) -> None:
    """Version 4: the steps of STEPS_3_TO_4, in order."""
    for step in STEPS_3_TO_4:
        step(conn)


def _relation_kind(conn: sa.Connection, name: str) -> str | None:
    """'table', 'view' or None (absent) for a relation of the workspace's schema."""
    if conn.dialect.name == "postgresql":
        kind = conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:n)"),
                            {"n": conn.dialect.identifier_preparer.quote(name)}).scalar()
        return {"r": "table", "v": "view"}.get(kind) if kind else None
    kind = conn.execute(sa.text("SELECT table_type FROM information_schema.tables WHERE table_name = :n "
                                "AND table_schema = current_schema()"), {"n": name}).scalar()
    return None if kind is None else ("view" if kind == "VIEW" else "table")


def _sequence_exists(conn: sa.Connection, name: str) -> bool:
    if conn.dialect.name == "postgresql":
        return bool(conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"),
                                 {"n": conn.dialect.identifier_preparer.quote(name)}).scalar())
    return bool(conn.execute(sa.text("SELECT count(*) FROM duckdb_sequences() WHERE sequence_name = :n "
                                     "AND schema_name = current_schema()"), {"n": name}).scalar())


def _create_table(conn: sa.Connection, table: sa.Table) -> None:
    """`table` and its indexes as schema.py makes them, and its id sequence unless the
    workspace has it: also under the name a shared workspace gives it once each
    organization draws from its own (postgres_security.py: shared_sequence), which
    Table.create() would not see, making a second one."""
    from esg_workbench.workspace import schema
    from esg_workbench.workspace.postgres_security import SHARED_SEQUENCE_SUFFIX

    for column in table.columns:
        sequence = column.default
        if isinstance(sequence, sa.Sequence) and not _sequence_exists(conn, sequence.name) \
                and not _sequence_exists(conn, sequence.name + SHARED_SEQUENCE_SUFFIX):
            conn.execute(sa.schema.CreateSequence(sequence))
    conn.execute(sa.schema.CreateTable(table))
    for index in table.indexes:
        if conn.dialect.name == "postgresql" or index.name not in schema.POSTGRES_ONLY_INDEXES:
            conn.execute(sa.schema.CreateIndex(index))


#: the columns of a staging record and of a staging kind, as the version-4 table had them
_RECORD_COLUMNS = ("organization_id", "connector_id", "source_table", "source_key", "sync_id", "mapping_id",
                   "mapping_name", "mapping_version", "entity", "period", "activity_date", "site", "category",
                   "subcategory", "attributes", "value", "unit", "arrived_at")
_KIND_COLUMNS = ("organization_id", "mapping_name", "source_table", "entity", "field", "scope", "method",
                 "normalized_unit", "factor_set", "factor_id", "factor_value", "factor_unit")


def split_staging_rows(conn: sa.Connection) -> None:
    """Issue 14: the staging_rows table becomes three narrow tables (records, kinds, values:
    schema.py) and a view of them with the same columns. Each existing staging row keeps its
    id; rows with the same record columns share a record, rows with the same kind columns
    a kind. The spec's indexes move to staging_records under their names. Idempotent."""
    from esg_workbench.workspace import schema

    if _relation_kind(conn, "staging_rows") != "table":
        return
    for name in ("ix_staging_rows_connector_arrived", "ix_staging_rows_period", "ix_staging_rows_mapping"):
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))  # (names the new table's indexes take)
    conn.execute(sa.text("ALTER TABLE staging_rows RENAME TO _esg_staging_rows_v4"))
    if conn.dialect.name == "postgresql":  # the owner upgrading a shared workspace copies every organization's rows
        conn.execute(sa.text("ALTER TABLE _esg_staging_rows_v4 NO FORCE ROW LEVEL SECURITY"))
    for table in (schema.staging_records, schema.staging_kinds, schema.staging_values):
        _create_table(conn, table)
    records, kinds = ", ".join(_RECORD_COLUMNS), ", ".join(_KIND_COLUMNS)
    # one pass numbers the distinct records and kinds (NULLs rank alike, as GROUP BY groups them)
    conn.execute(sa.text(
        f"CREATE TEMP TABLE _esg_staging_v4 AS SELECT id, normalized_value, quality, {records}, "
        f"{', '.join(c for c in _KIND_COLUMNS if c not in _RECORD_COLUMNS)}, "
        f"dense_rank() OVER (ORDER BY {records}) AS record_id, dense_rank() OVER (ORDER BY {kinds}) AS kind_id "
        f"FROM _esg_staging_rows_v4"))
    conn.execute(sa.text(f"INSERT INTO staging_records (id, {records}) "
                         f"SELECT DISTINCT record_id, {records} FROM _esg_staging_v4"))
    conn.execute(sa.text(f"INSERT INTO staging_kinds (id, {kinds}) SELECT DISTINCT kind_id, {kinds} FROM _esg_staging_v4"))
    conn.execute(sa.text("INSERT INTO staging_values (id, organization_id, record_id, kind_id, normalized_value, quality) "
                         "SELECT id, organization_id, record_id, kind_id, normalized_value, quality FROM _esg_staging_v4"))
    for table, sequence in (("staging_records", "staging_records_id_seq"), ("staging_kinds", "staging_kinds_id_seq")):
        last = conn.execute(sa.text(f"SELECT max(id) FROM {table}")).scalar()
        if last and _sequence_exists(conn, sequence):  # (new ids follow; an organization's own sequences start past it)
            conn.execute(sa.text(f"SELECT setval('{sequence}', {int(last)})"))
    conn.execute(sa.text("DROP TABLE _esg_staging_v4"))
    conn.execute(sa.text("DROP TABLE _esg_staging_rows_v4"))
    schema.create_staging_rows_view(conn)


#: The steps from version 4 to 5, one function per feature, in the order they run. Each
#: feature of this round appends its own step here (a function above this list).
STEPS_4_TO_5: list[Callable[[sa.Connection], None]] = [
    split_staging_rows,
]


def upgrade_4_to_5(conn: sa.Connection) -> None:
    """Version 5: the steps of STEPS_4_TO_5, in order."""
    for step in STEPS_4_TO_5:
        step(conn)


#: version -> function upgrading a workspace from that version to the next one
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    1: upgrade_1_to_2,
    2: upgrade_2_to_3,
    3: upgrade_3_to_4,
    4: upgrade_4_to_5,
}
