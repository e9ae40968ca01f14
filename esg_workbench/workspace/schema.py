"""The workspace tables (DESIGN.md section 3), as SQLAlchemy Core.

Every table carries organization_id. Timestamps are naive UTC. JSON is stored as text
(DuckDB's JSON type is an extension, and extensions cannot be relied on).
Raw landed tables are not here: they are made per stream from the source's Arrow
schema (see raw_tables.py).
"""

from __future__ import annotations

import sqlalchemy as sa

#: bump with a migration in migrations.py whenever the tables below change
SCHEMA_VERSION = 5

metadata = sa.MetaData()


def _id(table: str) -> sa.Column:
    return sa.Column("id", sa.BigInteger, sa.Sequence(f"{table}_id_seq"), primary_key=True)


def _org() -> sa.Column:
    # A server-side default: on a shared PostgreSQL workspace init-postgres turns it into
    # the session's organization (postgres_security.py), so no row lands as 'default' there.
    return sa.Column("organization_id", sa.String(64), nullable=False, server_default="default")


#: workspace_meta rows of organization '*' are the workspace's own (schema version, roles):
#: everyone reads them, only the workspace's owner writes them
SHARED_ORGANIZATION = "*"

workspace_meta = sa.Table(
    "workspace_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("organization_id", sa.String(64), nullable=False, server_default=SHARED_ORGANIZATION),  # since v2
)

# The organizations of a shared workspace (a DuckDB workspace has only 'default' and may
# leave this empty). On PostgreSQL each one is a database role (postgres_security.py).
organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("organization_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

connectors = sa.Table(
    "connectors",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    _org(),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # JSON, never a secret
    sa.Column("load_type", sa.String(16), nullable=False, default="full"),
    sa.Column("status", sa.String(32), nullable=False, default="new"),
    sa.Column("status_message", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("organization_id", "name", name="uq_connectors_org_name"),
)

source_schema_cache = sa.Table(
    "source_schema_cache",
    metadata,
    _id("source_schema_cache"),
    _org(),
    sa.Column("connector_id", sa.String(32), nullable=False),
    sa.Column("schema_name", sa.String(255)),
    sa.Column("table_name", sa.String(255), nullable=False),
    sa.Column("columns", sa.Text, nullable=False),  # JSON list of ColumnInfo
    sa.Column("primary_key", sa.Text, nullable=False),  # JSON list
    sa.Column("foreign_keys", sa.Text, nullable=False),  # JSON list
    sa.Column("row_estimate", sa.BigInteger),
    sa.Column("sample_rows", sa.Text),  # JSON list of rows; NULL until asked for
    sa.Column("drift", sa.Text),  # JSON: what changed at the last discovery
    sa.Column("discovered_at", sa.DateTime, nullable=False),
    sa.Column("sampled_at", sa.DateTime),
)
sa.Index("ix_source_schema_cache_connector_table", source_schema_cache.c.connector_id, source_schema_cache.c.table_name)

connector_sync_state = sa.Table(
    "connector_sync_state",
    metadata,
    _org(),
    sa.Column("connector_id", sa.String(32), primary_key=True),
    sa.Column("stream", sa.String(512), primary_key=True),
    sa.Column("raw_table", sa.String(128), nullable=False),
    sa.Column("last_cursor", sa.Text),  # JSON-encoded value (core/keys.py)
    sa.Column("last_row_id", sa.Text),  # JSON-encoded primary key tuple
    sa.Column("last_window_start", sa.Text),
    sa.Column("last_window_end", sa.Text),
    sa.Column("planned_upper", sa.Text),  # the cursor bound fixed by the sync under way
    sa.Column("active_sync_id", sa.BigInteger),  # the run whose chunks are still open
    sa.Column("plan", sa.Text),  # JSON: the read scope that run fixed (columns, key, bounds)
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # since v3: delta syncs since the last keys-only pass that looked for deleted rows
    sa.Column("syncs_since_deletes_check", sa.Integer),
)

connector_sync_logs = sa.Table(
    "connector_sync_logs",
    metadata,
    _id("connector_sync_logs"),
    _org(),
    sa.Column("connector_id", sa.String(32), nullable=False),
    sa.Column("load_type", sa.String(16), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False, default="sync"),  # sync | resume | retry_failed
    sa.Column("plan_sync_id", sa.BigInteger),  # the run whose chunk plan this run continues
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("items_read", sa.BigInteger, nullable=False, default=0),
    sa.Column("items_written", sa.BigInteger, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("details", sa.Text),  # JSON: streams, drift, warnings
    # since v3: JSON, what the run was asked for (tables, settings; a resume: the run it continues)
    sa.Column("request", sa.Text),
    sa.Column("items_deleted", sa.BigInteger),  # since v3: rows found deleted in the source
    # since schema version 3: a scheduled retry names the run it retries (sync/scheduler.py)
    sa.Column("retry_of", sa.BigInteger),  # the first attempt's run id
    sa.Column("attempt", sa.Integer),  # 2, 3, ... for retries; NULL: a first attempt
)
sa.Index("ix_connector_sync_logs_connector", connector_sync_logs.c.connector_id, connector_sync_logs.c.started_at)

connector_sync_chunks = sa.Table(
    "connector_sync_chunks",
    metadata,
    _id("connector_sync_chunks"),
    _org(),
    sa.Column("sync_id", sa.BigInteger, nullable=False),  # the run that planned it
    sa.Column("last_run_id", sa.BigInteger),  # the run that last worked on it
    sa.Column("connector_id", sa.String(32), nullable=False),
    sa.Column("stream", sa.String(512), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("lower_bound", sa.Text),  # JSON key prefix, inclusive
    sa.Column("upper_bound", sa.Text),  # JSON key prefix, exclusive
    sa.Column("null_cursor", sa.Boolean, nullable=False, default=False),
    sa.Column("target_table", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("rows_read", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_written", sa.BigInteger, nullable=False, default=0),
    sa.Column("max_key", sa.Text),  # JSON: the last key landed by this chunk
    sa.Column("error", sa.Text),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # since schema version 3: failed chunks as a review queue (sync/review.py)
    sa.Column("first_failed_at", sa.DateTime),
    sa.Column("review_status", sa.String(16)),  # NULL: unreviewed | ignored
    sa.Column("review_reason", sa.Text),
    sa.Column("reviewed_by", sa.String(200)),
    sa.Column("reviewed_at", sa.DateTime),
)
sa.Index("ix_connector_sync_chunks_sync", connector_sync_chunks.c.sync_id, connector_sync_chunks.c.stream, connector_sync_chunks.c.seq)

mappings = sa.Table(
    "mappings",
    metadata,
    _id("mappings"),
    _org(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),  # every save is a new version
    sa.Column("connector_id", sa.String(32)),
    sa.Column("source_stream", sa.String(512)),  # the stream when the mapping has one table
    sa.Column("entity", sa.String(100)),  # the entity when the mapping has one table
    sa.Column("definition", sa.Text, nullable=False),  # JSON: tables, edges, transforms (mapping/model.py)
    sa.Column("definition_hash", sa.String(64)),
    sa.Column("catalog_version", sa.String(32)),
    sa.Column("description", sa.Text),
    sa.Column("comment", sa.Text),  # what this save changed, as the analyst wrote it
    sa.Column("author", sa.String(200)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("organization_id", "name", "version", name="uq_mappings_version"),
)

# Staging: the mapped ESG records with their lineage, in three tables (since schema version
# 5) so that an apply writes narrow, typed rows: a million landed rows give seven million
# staging rows, and seven INSERTs of 29 mostly-text columns each were most of an apply's time.
#   staging_records  one row per landed row and mapped measure: its lineage (connector,
#                    source table and key, sync, mapping version), period, date, site,
#                    category, attributes, and the source value in its source unit
#   staging_kinds    what a staging value is: field, scope, method, normalized unit and the
#                    factor applied (one row per distinct combination an apply found)
#   staging_values   one row per staging row: its id, record, kind, normalized value and
#                    flags (and the row's own factor when it is the supplier's rate)
# `staging_rows` is a view joining them, with the columns and ids of the table it replaced:
# every reader (aggregation, drill-down, sites, exports) reads it unchanged, and every
# value still names its source keys. Only mapping/apply.py writes the three tables.
staging_records = sa.Table(
    "staging_records",
    metadata,
    _id("staging_records"),
    _org(),
    sa.Column("connector_id", sa.String(32), nullable=False),
    sa.Column("source_table", sa.String(512), nullable=False),  # the stream
    sa.Column("source_key", sa.Text, nullable=False),  # primary key value(s) of the raw row
    sa.Column("sync_id", sa.BigInteger),  # the sync run that landed the raw row
    sa.Column("mapping_id", sa.BigInteger),  # mappings.id: name and version
    sa.Column("mapping_name", sa.String(200)),
    sa.Column("mapping_version", sa.Integer),
    sa.Column("entity", sa.String(100)),
    sa.Column("period", sa.String(16)),  # 'YYYY-MM'
    sa.Column("activity_date", sa.Date),
    sa.Column("site", sa.String(200)),
    sa.Column("category", sa.String(100)),  # fuel type, waste material, energy carrier, travel mode
    sa.Column("subcategory", sa.String(100)),  # treatment route, instrument, water source
    sa.Column("attributes", sa.Text),  # JSON: supplier, meter, contractor, ...
    sa.Column("value", sa.Text),  # the measure's source value, as text
    sa.Column("unit", sa.String(50)),  # its source unit
    sa.Column("arrived_at", sa.DateTime, nullable=False),
)

staging_kinds = sa.Table(
    "staging_kinds",
    metadata,
    _id("staging_kinds"),
    _org(),
    # whose: a re-apply deletes its kinds with its values
    sa.Column("mapping_name", sa.String(200)),
    sa.Column("source_table", sa.String(512)),
    sa.Column("entity", sa.String(100)),
    sa.Column("field", sa.String(100), nullable=False),
    sa.Column("scope", sa.String(16)),  # emission rows: scope1 | scope2 | scope3
    sa.Column("method", sa.String(16)),  # location | market (scope 2), cat5 | cat6 (scope 3)
    sa.Column("normalized_unit", sa.String(50)),
    sa.Column("factor_set", sa.String(100)),  # emission and energy rows: set@version
    sa.Column("factor_id", sa.String(100)),
    sa.Column("factor_value", sa.Double),
    sa.Column("factor_unit", sa.String(100)),
)

staging_values = sa.Table(
    "staging_values",
    metadata,
    # the staging row's id: staging_rows.id, from the sequence it always came from
    sa.Column("id", sa.BigInteger, sa.Sequence("staging_rows_id_seq"), primary_key=True),
    _org(),
    sa.Column("record_id", sa.BigInteger, nullable=False),  # staging_records.id
    sa.Column("kind_id", sa.BigInteger, nullable=False),  # staging_kinds.id
    sa.Column("normalized_value", sa.Double),
    sa.Column("factor_value", sa.Double),  # the row's own factor (a supplier's rate); NULL: the kind's
    sa.Column("quality", sa.String(200)),  # comma-separated row flags: unit_unknown, negative, no_factor, ...
)

# The specification's indexes on staging_rows are on the table holding their columns
# (staging_records), under their names, and, like the one on kpi_lineage below, B-trees on a
# PostgreSQL workspace only. In DuckDB an index is an ART that every bulk insert, delete
# and commit maintains entry by entry: for a 1,000,000-row mapping (7,000,000 staging rows,
# 5,000,000 lineage links) they cost a fifth of apply's CPU, single-threaded at commit, made
# a re-apply (deleting the old rows) 1.7 times as long and a re-aggregation 2-3 times.
# And DuckDB's planner uses an ART only for lookups that pick a handful of rows, which
# filters on a period or on a connector's arrivals never are. DuckDB prunes with the min/max
# zonemap it keeps for every column of every row group instead: each apply writes its rows
# together (one connector, mapping and arrived_at), and a full scan of one column of
# 7,000,000 rows takes about 10 ms. Existing DuckDB workspaces lose these ART indexes at
# their next apply or aggregation (mapping/apply.py: drop_legacy_duckdb_indexes).
POSTGRES_ONLY_INDEXES = ("ix_staging_rows_connector_arrived", "ix_staging_rows_period", "ix_staging_rows_mapping",
                         "ix_staging_values_record", "ix_kpi_lineage_value")
# The primary keys of staging_records and staging_values too are PostgreSQL's only: in
# DuckDB they are ART indexes as well, which cost 2 s of a 1,000,000-row apply's commit and
# made deleting 4,000,000 staging rows take 6-7 s instead of 0.1 s (measured). The ids stay
# unique without them: an apply takes them from the tables' sequences (mapping/apply.py:
# _Ids), and DuckDB workspaces have one writer.
staging_records.primary_key.ddl_if(dialect="postgresql")
staging_values.primary_key.ddl_if(dialect="postgresql")
sa.Index("ix_staging_rows_connector_arrived", staging_records.c.connector_id, staging_records.c.arrived_at).ddl_if(
    dialect="postgresql")
sa.Index("ix_staging_rows_period", staging_records.c.period).ddl_if(dialect="postgresql")
sa.Index("ix_staging_rows_mapping", staging_records.c.mapping_name, staging_records.c.source_table).ddl_if(
    dialect="postgresql")
sa.Index("ix_staging_values_record", staging_values.c.record_id).ddl_if(dialect="postgresql")

#: Views of the workspace, described for SELECTs. They live in their own MetaData, so
#: metadata.create_all never makes them tables (and the security set-up grants them apart).
views = sa.MetaData()

# The view over the three staging tables (STAGING_ROWS_COLUMNS, in this order). Until schema
# version 5 it was a table of these columns: upgrades of older workspaces rebuild that table
# from this description before converting it (migrations.py).
staging_rows = sa.Table(
    "staging_rows",
    views,
    _id("staging_rows"),
    _org(),
    sa.Column("connector_id", sa.String(32), nullable=False),
    sa.Column("source_table", sa.String(512), nullable=False),
    sa.Column("source_key", sa.Text, nullable=False),
    sa.Column("sync_id", sa.BigInteger),
    sa.Column("mapping_id", sa.BigInteger),
    sa.Column("mapping_name", sa.String(200)),
    sa.Column("mapping_version", sa.Integer),
    sa.Column("entity", sa.String(100)),
    sa.Column("period", sa.String(16)),
    sa.Column("activity_date", sa.Date),
    sa.Column("site", sa.String(200)),
    sa.Column("category", sa.String(100)),
    sa.Column("subcategory", sa.String(100)),
    sa.Column("scope", sa.String(16)),
    sa.Column("method", sa.String(16)),
    sa.Column("field", sa.String(100), nullable=False),
    sa.Column("value", sa.Text),
    sa.Column("unit", sa.String(50)),
    sa.Column("normalized_value", sa.Double),
    sa.Column("normalized_unit", sa.String(50)),
    sa.Column("factor_set", sa.String(100)),
    sa.Column("factor_id", sa.String(100)),
    sa.Column("factor_value", sa.Double),
    sa.Column("factor_unit", sa.String(100)),
    sa.Column("attributes", sa.Text),
    sa.Column("quality", sa.String(200)),
    sa.Column("arrived_at", sa.DateTime, nullable=False),
)
staging_rows.primary_key.ddl_if(dialect="postgresql")  # (the version-3 table of DuckDB had none either)

#: each column of staging_rows: the table of the view it comes from
_STAGING_SOURCES = {"id": "v", "scope": "k", "method": "k", "field": "k", "normalized_value": "v",
                    "normalized_unit": "k", "factor_set": "k", "factor_id": "k", "factor_unit": "k", "quality": "v"}


def staging_rows_select(records: str = "staging_records", values: str = "staging_values",
                        kinds: str = "staging_kinds") -> str:
    """The SELECT of the staging_rows view (also over an apply preview's temporary tables)."""
    columns = []
    for column in staging_rows.columns:
        if column.name == "factor_value":  # a supplier's rate is the row's own
            columns.append("COALESCE(v.factor_value, k.factor_value) AS factor_value")
        else:
            columns.append(f"{_STAGING_SOURCES.get(column.name, 'r')}.{column.name}")
    return (f"SELECT {', '.join(columns)} FROM {values} v JOIN {records} r ON r.id = v.record_id "
            f"JOIN {kinds} k ON k.id = v.kind_id")


def create_staging_rows_view(conn: sa.Connection) -> None:
    """The staging_rows view. On PostgreSQL it reads the tables as the caller
    (security_invoker), so their row-level security applies to whoever reads it."""
    options = " WITH (security_invoker = true)" if conn.dialect.name == "postgresql" else ""
    conn.execute(sa.text(f"CREATE VIEW staging_rows{options} AS {staging_rows_select()}"))


sa.event.listen(metadata, "after_create", lambda target, connection, **kw: create_staging_rows_view(connection))

kpi_values = sa.Table(
    "kpi_values",
    metadata,
    _id("kpi_values"),
    _org(),
    sa.Column("site", sa.String(200)),  # NULL: the whole organization
    sa.Column("period", sa.String(16), nullable=False),  # 2024-03 | 2024-Q1 | 2024 | FY2024 ...
    sa.Column("period_type", sa.String(8), nullable=False),  # month | quarter | year
    sa.Column("kpi", sa.String(100), nullable=False),
    sa.Column("value", sa.Double),  # NULL: no data (see quality)
    sa.Column("unit", sa.String(50)),
    sa.Column("rule", sa.String(16)),  # sum | stock | ratio | linear
    sa.Column("input_rows", sa.BigInteger),  # staging rows behind the value (kpi_lineage)
    sa.Column("parts", sa.Text),  # JSON list of kpi_values ids it was computed from (roll-ups, ratios)
    sa.Column("quality", sa.Text),  # JSON list of data-quality flags
    sa.Column("result_hash", sa.String(64)),  # the same when the same inputs are recomputed
    sa.Column("catalog_version", sa.String(32)),
    sa.Column("run_id", sa.String(32)),  # the aggregation run
    sa.Column("computed_at", sa.DateTime, nullable=False),
)
sa.Index("ix_kpi_values_kpi_period", kpi_values.c.kpi, kpi_values.c.period)

# The staging rows behind each month-and-site KPI value (the lineage); values of longer
# periods, organization totals, ratios and sums of KPIs name their parts in kpi_values.parts.
kpi_lineage = sa.Table(
    "kpi_lineage",
    metadata,
    _org(),
    sa.Column("kpi_value_id", sa.BigInteger, nullable=False),
    sa.Column("staging_row_id", sa.BigInteger, nullable=False),
)
# PostgreSQL only, like the staging_rows indexes above.
sa.Index("ix_kpi_lineage_value", kpi_lineage.c.kpi_value_id).ddl_if(dialect="postgresql")

# Imported emission factor sets (the shipped DESNZ set is read from resources/).
emission_factors = sa.Table(
    "emission_factors",
    metadata,
    _id("emission_factors"),
    _org(),
    sa.Column("factor_set", sa.String(100), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("factor_id", sa.String(100)),
    sa.Column("scope", sa.String(32)),
    sa.Column("level1", sa.String(200)),
    sa.Column("level2", sa.String(200)),
    sa.Column("level3", sa.String(300)),
    sa.Column("level4", sa.String(200)),
    sa.Column("column_text", sa.String(200)),
    sa.Column("uom", sa.String(100)),
    sa.Column("gas", sa.String(16)),
    sa.Column("value", sa.Double, nullable=False),  # kg CO2e per uom
    sa.Column("region", sa.String(100)),
    sa.Column("valid_from", sa.String(32)),
    sa.Column("valid_to", sa.String(32)),
    sa.Column("source", sa.String(500)),
    sa.Column("source_sha256", sa.String(64)),
    sa.Column("imported_at", sa.DateTime, nullable=False),
    sa.Column("basis", sa.String(100)),  # since v3: combustion | lifecycle | Gross CV | Net CV ...
    sa.Column("gwp", sa.String(32)),  # since v3: AR5 | AR6 | not stated
    sa.Column("licence", sa.String(200)),  # since v3
)
sa.Index("ix_emission_factors_set", emission_factors.c.factor_set, emission_factors.c.version)

# Where each site is (since v3): the region its emission factors are chosen by. Filled by
# applying a mapping of the `site` entity (origin 'mapping:<name>') or set by an analyst
# (origin 'manual', which a mapping never overwrites).
site_locations = sa.Table(
    "site_locations",
    metadata,
    _id("site_locations"),
    _org(),
    sa.Column("site", sa.String(200), nullable=False),
    sa.Column("country", sa.String(8)),  # ISO 3166-1 alpha-2
    sa.Column("subdivision", sa.String(16)),  # ISO 3166-2 subdivision or grid region, optional
    sa.Column("region", sa.String(32)),  # country[-subdivision]: what factors are matched on
    sa.Column("name", sa.String(300)),
    sa.Column("origin", sa.String(250), nullable=False),  # manual | mapping:<name>
    sa.Column("set_by", sa.String(200)),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("organization_id", "site", name="uq_site_locations_site"),
)

# An organization's methodology choices (since v3), e.g. gap_estimate: how KPI gaps are
# estimated (mapping/gaps.py).
methodology_settings = sa.Table(
    "methodology_settings",
    metadata,
    _id("methodology_settings"),
    _org(),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("value", sa.String(200)),
    sa.Column("set_by", sa.String(200)),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("organization_id", "key", name="uq_methodology_settings_key"),
)

# Contractual instruments entered by hand (since v4): guarantees of origin, RECs, PPAs an
# analyst types in from a cancellation statement or contract, allocated to consumption
# exactly like mapped ones (mapping/scope2.py). A tracking id is entered once per
# organization: the same certificates counted twice would double the covered MWh.
entered_instruments = sa.Table(
    "entered_instruments",
    metadata,
    _id("entered_instruments"),
    _org(),
    sa.Column("site", sa.String(200), nullable=False),
    sa.Column("instrument_type", sa.String(64), nullable=False),  # vocabulary 'instrument' of the catalog
    sa.Column("mwh", sa.Double, nullable=False),  # MWh covered
    sa.Column("period_from", sa.String(10), nullable=False),  # YYYY-MM-DD, inclusive
    sa.Column("period_to", sa.String(10), nullable=False),  # YYYY-MM-DD, inclusive
    sa.Column("tracking_id", sa.String(300), nullable=False),
    sa.Column("evidence", sa.String(500), nullable=False),
    sa.Column("kg_co2e_per_kwh", sa.Double, nullable=False),  # 0 for renewables
    sa.Column("entered_by", sa.String(200)),
    sa.Column("entered_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("organization_id", "tracking_id", name="uq_entered_instruments_tracking"),
)

scheduled_jobs = sa.Table(
    "scheduled_jobs",
    metadata,
    _id("scheduled_jobs"),
    _org(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("cron", sa.String(100), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("config", sa.Text, nullable=False),  # JSON: connector, action
    sa.Column("last_run_at", sa.DateTime),
    sa.Column("next_run_at", sa.DateTime),
    # since schema version 2
    sa.Column("timezone", sa.String(64)),  # IANA name the cron expression is read in
    sa.Column("last_status", sa.String(32)),
    sa.Column("last_message", sa.Text),
    sa.Column("last_run_id", sa.BigInteger),
    # since schema version 3: dependencies, retry policy, priority (sync/scheduler.py)
    sa.Column("priority", sa.Integer),  # higher runs first; NULL: 0
    sa.Column("depends_on", sa.Text),  # JSON list of scheduled_jobs ids it runs after
    sa.Column("dependency_window_minutes", sa.Integer),  # how long predecessors' runs count
    sa.Column("dependency_accepts_partial", sa.Boolean),  # partial_success satisfies too
    sa.Column("retry_attempts", sa.Integer),  # extra runs after a failed or partial run
    sa.Column("retry_backoff_seconds", sa.Integer),  # wait before the first retry, doubled after
    sa.Column("retry_attempt", sa.Integer),  # the attempt the pending retry will be (2, 3, ...)
    sa.Column("retry_due_at", sa.DateTime),  # when the pending retry may run; NULL: none
    sa.Column("retry_first_run_id", sa.BigInteger),  # the sync run the retries follow up
)

# Since schema version 3. The sync slots of an organization: a running sync holds one row
# of its scope ('workspace', 'host:NAME') locked (SELECT ... FOR UPDATE SKIP LOCKED) in a
# transaction of its own; rows fall under row-level security, so no other organization
# can see, lock or add them (workspace/schedule_slots.py).
sync_slots = sa.Table(
    "sync_slots",
    metadata,
    sa.Column("organization_id", sa.String(64), primary_key=True, server_default="default"),
    sa.Column("scope", sa.String(300), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
)

# Since schema version 3. Settings of one organization (the concurrency limits of
# scheduled syncs, ...): key -> JSON value.
organization_settings = sa.Table(
    "organization_settings",
    metadata,
    sa.Column("organization_id", sa.String(64), primary_key=True, server_default="default"),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

# Since schema version 3. When each connector's keyring secret was last set, and the
# rotation period after which Health warns (never the secret itself).
connector_secrets = sa.Table(
    "connector_secrets",
    metadata,
    sa.Column("connector_id", sa.String(32), primary_key=True),
    _org(),
    sa.Column("set_at", sa.DateTime),  # NULL: set before this was recorded
    sa.Column("rotation_days", sa.Integer),  # NULL: no rotation period
)

esg_ingestion_audit = sa.Table(
    "esg_ingestion_audit",
    metadata,
    _id("esg_ingestion_audit"),
    _org(),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("input_hash", sa.String(64)),
    sa.Column("output_hash", sa.String(64)),
    sa.Column("previous_hash", sa.String(64), nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),  # JSON, never a secret
    sa.Column("at", sa.DateTime, nullable=False, quote=True),  # a keyword in DuckDB
)

# since schema version 3 ---------------------------------------------------------------------

# The head of each organization's audit chain: how many entries it has and the hash of
# the last one. verify() compares the chain with it, so removed entries (the last ones,
# or all of them) are found. On a shared PostgreSQL workspace only the server's audit
# trigger writes it (audit_trigger.py); analysts may read their organization's head.
esg_audit_heads = sa.Table(
    "esg_audit_heads",
    metadata,
    sa.Column("organization_id", sa.String(64), primary_key=True, server_default="default"),
    sa.Column("entries", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

# One row per thing an organization's writers take turns on (a mapping's saves, its
# applies, the KPIs, a connector's sync ...): concurrency.py locks the row (SELECT ... FOR
# UPDATE / FOR SHARE). Row-level security hides other organizations' rows, so, unlike an
# advisory lock key, nobody outside the organization can take such a lock.
workspace_locks = sa.Table(
    "workspace_locks",
    metadata,
    _org(),
    sa.Column("lock_key", sa.String(40), nullable=False),  # sha1 of the kind and names
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("label", sa.String(200), nullable=False),  # the names, for an administrator reading pg_locks
    sa.PrimaryKeyConstraint("organization_id", "lock_key"),
)
