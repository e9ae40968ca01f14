"""Applying a mapping: set-based SQL over the landed raw tables into the staging rows.

For each table mapping, one SELECT over the raw table (with LEFT JOINs for lookups)
computes every field of the entity into a temporary table; then a few INSERT ... SELECT
statements write the staging rows: one per mapped measure (normalized to the field's
unit), energy derived from fuel quantities, and emissions per gas joined with the factors
the factor set gives for the categories and units found. Nothing is done per row in
Python, so a million landed rows map in seconds, in DuckDB and PostgreSQL alike.

The staging rows are written narrow (workspace/schema.py: the staging_rows view joins
three tables): per landed row and measure one staging record (lineage, period, site,
category, the source value); per distinct field, unit and factor found one staging kind,
made here in Python with the factor choice; and per staging row one staging value: its
record, its kind, the normalized value and the flags.

Every staging row carries its lineage: connector, source table, source key, the sync run
that landed the raw row, the mapping name and version, the source value in its source
unit (`value`, `unit`) and the converted value in its unit; emission and energy rows also
the factor set, factor id and value. A row without a value, with an unknown or ambiguous
unit, or sharing a business key is kept and flagged, so every KPI it feeds says so.

Emission factors are chosen per category, unit, site region (workspace site locations,
filled by a mapping of the `site` entity, which an apply processes first) and month
(factors.FactorLibrary.resolve). Market-based rows take the supplier's rate (a source
column, else an imported rate of the supplier), else the region's residual mix, else the
location factor; contractual instruments are allocated when the KPIs are computed
(scope2.py). Re-applying replaces the mapping's staging rows; an
incremental apply maps only rows landed since the last apply (and drops rows that left
the raw table).

An apply reports the staging rows written as it goes and can be cancelled at any
statement (mapping/cancel.py): its transaction rolls back and nothing changes.

On a shared workspace two applies of one mapping take turns (workspace/concurrency.py),
an apply never maps the rows of a sync still landing (that sync maps them when it ends),
and an apply rolled back by PostgreSQL to resolve a conflict is simply run again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.core.errors import EsgError
from esg_workbench.core.specs import CancelToken, SyncStatus
from esg_workbench.mapping import units
from esg_workbench.mapping.cancel import watching
from esg_workbench.mapping.catalog import EMISSION_FIELDS, Catalog, EntityDef, FieldDef, load_catalog
from esg_workbench.mapping.errors import AmbiguousUnit, MappingError, UnknownUnit
from esg_workbench.mapping.factors import FactorLibrary, load_library
from esg_workbench.mapping.model import Edge, Mapping, TableMapping, errors_only, validate
from esg_workbench.mapping.sql import (ANY, BOOLEAN, DUCKDB, NULL, NUMBER, Dialect, dialect_of,
                                       value_type)
from esg_workbench.mapping.transforms import Context
from esg_workbench.workspace import concurrency, raw_tables
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import staging_rows_select

UNASSIGNED_SITE = "(unassigned)"


class MappingInvalid(EsgError):
    hint = "Fix the problems on the mapping canvas (or in the mapping file), save, and apply again."

    def __init__(self, message: str, problems: list[MappingError]):
        super().__init__(message)
        self.problems = problems

    def describe(self) -> str:
        lines = [self.message] + [f"  - {p.message}" for p in self.problems[:20]]
        return "\n".join(lines) + f"\nWhat to do: {self.hint}"


@dataclass
class SourceInfo:
    stream: str
    raw_table: str
    columns: dict[str, str]  # name -> value type
    primary_key: list[str]


@dataclass
class TableResult:
    table_id: str
    stream: str
    entity: str
    source_rows: int = 0
    staging_rows: int = 0
    quality: dict[str, int] = field(default_factory=dict)


@dataclass
class ApplyResult:
    mapping: str
    version: int | None
    tables: list[TableResult]
    seconds: float
    incremental: bool = False
    output_hash: str = ""

    @property
    def source_rows(self) -> int:
        return sum(t.source_rows for t in self.tables)

    @property
    def staging_rows(self) -> int:
        return sum(t.staging_rows for t in self.tables)


# --- the workspace side: where each stream landed ----------------------------------------------

def resolve_connector_id(workspace: Workspace, conn, connector: str) -> str:
    from esg_workbench.workspace import connectors_store

    return connectors_store.get(workspace, conn, connector).id


def source_info(workspace: Workspace, conn, connector_id: str, stream: str) -> SourceInfo | None:
    """Raw table, columns and primary key of a landed stream (None if not landed)."""
    from esg_workbench.workspace import raw_tables
    from esg_workbench.workspace.schema import connector_sync_state as state
    from esg_workbench.workspace.schema import source_schema_cache as cache

    rows = conn.execute(sa.select(state.c.stream, state.c.raw_table, state.c.plan).where(
        state.c.organization_id == workspace.organization_id, state.c.connector_id == connector_id)).all()
    match = [r for r in rows if r.stream == stream] or [r for r in rows if r.stream.split(".")[-1] == stream]
    if not match:
        return None
    found = match[0]
    columns = raw_tables.existing_columns(workspace, conn, found.raw_table)
    if columns is None:
        return None
    cached = conn.execute(sa.select(cache.c.primary_key).where(
        cache.c.organization_id == workspace.organization_id, cache.c.connector_id == connector_id,
        cache.c.table_name == found.stream.split(".")[-1])).first()
    primary_key = json.loads(cached[0]) if cached else []
    if not primary_key and found.plan:
        primary_key = json.loads(found.plan).get("primary_key") or []
    return SourceInfo(found.stream, found.raw_table, {n: value_type(t) for n, t in columns.items()}, primary_key)


def workspace_columns(workspace: Workspace, mapping: Mapping) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Columns and keys of the mapping's landed streams, for validation."""
    columns, keys = {}, {}
    with workspace.read() as conn:
        try:
            connector_id = resolve_connector_id(workspace, conn, mapping.connector)
        except EsgError:
            return {}, {}
        for t in mapping.tables:
            info = source_info(workspace, conn, connector_id, t.stream)
            if info is not None:
                columns[t.stream] = {n: v for n, v in info.columns.items() if not n.startswith("_esg_")}
                keys[t.stream] = info.primary_key
    return columns, keys


def validate_in_workspace(workspace: Workspace, mapping: Mapping, catalog: Catalog | None = None) -> list[MappingError]:
    columns, keys = workspace_columns(workspace, mapping)
    return validate(mapping, catalog or load_catalog(), columns, keys)


# --- compiling one table mapping ----------------------------------------------------------------

class TableCompiler(Context):
    def __init__(self, dialect: Dialect, catalog: Catalog, library: FactorLibrary, table: TableMapping,
                 source: SourceInfo, lookup_source: Callable[[str], SourceInfo | None],
                 fallback_region: str | None = None):
        self.dialect = dialect
        self.catalog = catalog
        self.library = library
        self.factor_set = library.sets[0]  # the mapping's own set: energy content of fuels
        self.fallback_region = fallback_region
        self.table = table
        self.entity: EntityDef = catalog.entity(table.entity)
        self.source = source
        self._lookup_source = lookup_source
        self.joins: list[str] = []
        self._join_cache: dict[tuple, tuple[str, str]] = {}
        q = dialect.quote
        self.columns = {name: (f"src.{q(name)}", t) for name, t in source.columns.items()}

    # lookups become LEFT JOINs over a de-duplicated key -> value table
    def add_lookup(self, stream, key_column, value_column, key):
        cache_key = (stream, key_column, value_column, key[0])
        if cache_key in self._join_cache:
            return self._join_cache[cache_key]
        info = self._lookup_source(stream)
        d = self.dialect
        if info is None or key_column not in info.columns or value_column not in info.columns:
            from esg_workbench.mapping.errors import UnknownStream

            what = stream if info is None else f"{stream}.{key_column if key_column not in info.columns else value_column}"
            raise UnknownStream(f"The lookup reads {what}, which is not landed in the workspace.", table_id=self.table.id)
        alias = f"j{len(self.joins) + 1}"
        key_type = info.columns[key_column]
        left = d.cast(key[0], key[1], key_type) if key[1] not in (key_type, ANY, NULL) else key[0]
        if key[1] != key_type and key[1] not in (ANY, NULL) and not (key_type == NUMBER and key[1] == NUMBER):
            left, right = d.to_text(key[0], key[1]), d.to_text(f"{alias}.k", key_type)
        else:
            right = f"{alias}.k"
        self.joins.append(
            f"LEFT JOIN (SELECT {d.quote(key_column)} AS k, min({d.quote(value_column)}) AS v "
            f"FROM {d.quote(info.raw_table)} GROUP BY {d.quote(key_column)}) {alias} ON {right} = {left}")
        out = (f"{alias}.v", info.columns[value_column])
        self._join_cache[cache_key] = out
        return out

    def edge_sql(self, edge: Edge) -> tuple[str, str]:
        if edge.source is None:
            sql, t = "NULL", NULL
        else:
            sql, t = self.columns[edge.source]
        for transform in edge.transforms:
            sql, t = transform.compile(sql, t, self)
        return sql, t

    def field_sql(self, name: str) -> tuple[str, str] | None:
        edges = self.table.edges_to(name)
        return self.edge_sql(edges[0]) if edges else None

    def stated_unit(self, measure: FieldDef) -> tuple[str | None, str | None]:
        """(constant unit, SQL of a unit column) for a measure."""
        edges = self.table.edges_to(measure.name)
        unit = None
        for t in edges[0].transforms if edges else []:
            unit = t.output_unit(unit)
        if unit:
            return unit, None
        unit_field = self.entity.unit_field_for(measure.name)
        if unit_field is not None:
            found = self.field_sql(unit_field.name)
            if found is not None:
                return None, self.dialect.to_text(*found)
        return measure.unit, None

    def source_unit(self, measure: FieldDef) -> tuple[str | None, str | None]:
        """(constant unit, SQL of a unit column) the source value is in: the input unit of
        the edge's first unit conversion, else the stated unit. Staging rows keep the source
        value in it (55,546 kWh, not '55546 MWh')."""
        edges = self.table.edges_to(measure.name)
        for t in edges[0].transforms if edges else []:
            source = getattr(t, "from_unit", None)
            if source:
                return source, None
        return self.stated_unit(measure)

    def duplicate_columns(self) -> list[str]:
        """_dup_flag ('duplicate' on every row sharing its business key with another) and
        _dup_ignored (TRUE on all but the first of them, by source key, when the table
        mapping counts duplicates once). Rows with a NULL key part are never duplicates."""
        d = self.dialect
        keys = [self.columns[k][0] for k in (self.table.business_key or []) if k in self.columns]
        if not keys:
            return [f"CAST(NULL AS {d.text}) AS _dup_flag", "FALSE AS _dup_ignored"]
        window = f"PARTITION BY {', '.join(keys)}"
        any_null = " OR ".join(f"{k} IS NULL" for k in keys)
        first = f"row_number() OVER ({window} ORDER BY {self.key_sql()}) = 1"
        once = self.table.duplicates == "count_once"
        return [f"CASE WHEN {any_null} THEN NULL WHEN count(*) OVER ({window}) > 1 THEN 'duplicate' END AS _dup_flag",
                f"CASE WHEN {any_null} THEN FALSE ELSE {'NOT (' + first + ')' if once else 'FALSE'} END AS _dup_ignored"]

    def key_sql(self) -> str:
        d = self.dialect
        keys = self.table.key_columns or self.source.primary_key
        if len(keys) == 1:
            return d.to_text(*self.columns[keys[0]])
        if keys:
            parts = " || ',' || ".join(d.json_string(d.to_text(*self.columns[k])) for k in keys)
            return f"'[' || {parts} || ']'"
        names = [n for n in self.source.columns if not n.startswith("_esg_")]
        return "md5(concat_ws('|', " + ", ".join(d.to_text(*self.columns[n]) for n in names) + "))"

    def category_sql(self, spec: dict[str, Any]) -> str:
        d = self.dialect
        if "constant" in spec:
            return d.literal(spec["constant"])
        if "field" in spec:
            found = self.field_sql(spec["field"])
            if found is not None:
                return f"trim({d.to_text(*found)})"
        return f"CAST(NULL AS {d.text})"

    def select_sql(self, where: list[str]) -> str:
        """The SELECT of the `_esg_src` temporary table."""
        d = self.dialect
        e = self.entity
        cols: list[str] = [f"{self.key_sql()} AS source_key"]
        sync_col = "_esg_sync_id" if "_esg_sync_id" in self.source.columns else None
        cols.append(f"src.{d.quote(sync_col)} AS sync_id" if sync_col else "CAST(NULL AS BIGINT) AS sync_id")
        date_field = next((f for f in e.by_role("date") if self.table.edges_to(f.name)), None)
        date_sql = d.to_date(*self.field_sql(date_field.name)) if date_field else "CAST(NULL AS DATE)"
        cols.append(f"{date_sql} AS activity_date")
        period_field = next((f for f in e.by_role("period") if self.table.edges_to(f.name)), None)
        if period_field is not None:
            period_sql = d.month_label(*self.field_sql(period_field.name))
        else:
            period_sql = d.format_date(date_sql, "%Y-%m")
        cols.append(f"{period_sql} AS period")
        site = next((self.field_sql(f.name) for f in e.by_role("site") if self.table.edges_to(f.name)), None)
        site_sql = f"COALESCE(NULLIF(trim({d.to_text(*site)}), ''), {d.literal(UNASSIGNED_SITE)})" if site else d.literal(UNASSIGNED_SITE)
        cols.append(f"{site_sql} AS site")
        cols.append(f"{self.category_sql(e.category)} AS category")
        cols.append(f"{self.category_sql(e.subcategory)} AS subcategory")
        attrs = [(f.name, self.field_sql(f.name)) for f in e.by_role("attribute") if self.table.edges_to(f.name)]
        if attrs:
            body = " || ',' || ".join(f"'\"{name}\":' || {d.json_string(d.to_text(*sql))}" for name, sql in attrs)
            cols.append(f"'{{' || {body} || '}}' AS attributes")
        else:
            cols.append(f"CAST(NULL AS {d.text}) AS attributes")
        for m in e.measures:
            found = self.field_sql(m.name)
            if found is None:
                continue
            cols.append(f"{d.to_number(*found)} AS {d.quote('m__' + m.name)}")
            raw_edge = self.table.edges_to(m.name)[0]
            raw = self.columns.get(raw_edge.source) if raw_edge.source else found
            cols.append(f"{d.to_text(*raw)} AS {d.quote('v__' + m.name)}")
            constant, unit_sql = self.stated_unit(m)
            cols.append(f"{unit_sql if unit_sql else d.literal(constant)} AS {d.quote('u__' + m.name)}")
            constant, unit_sql = self.source_unit(m)
            cols.append(f"{unit_sql if unit_sql else d.literal(constant)} AS {d.quote('su__' + m.name)}")
        mf = next((self.field_sql(f.name) for f in e.by_role("market_factor") if self.table.edges_to(f.name)), None)
        cols.append(f"{d.to_number(*mf) if mf else f'CAST(NULL AS {d.double})'} AS market_factor")
        # the supplier's name: an imported supplier-specific rate is matched on it (market-based)
        supplier = self.field_sql("supplier") if e.field("supplier") is not None else None
        cols.append(f"trim({d.to_text(*supplier)}) AS supplier_name" if supplier else f"CAST(NULL AS {d.text}) AS supplier_name")
        cols += self.duplicate_columns()
        conditions = list(where)
        if self.table.filter:
            from esg_workbench.mapping.expressions import parse

            fsql, ftype = parse(self.table.filter).to_sql(d, self.columns)
            conditions.append(f"COALESCE({d.cast(fsql, ftype, BOOLEAN)}, FALSE)")
        sql = f"SELECT {', '.join(cols)} FROM {d.quote(self.source.raw_table)} src " + " ".join(self.joins)
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        return sql


# --- unit normalization and factors, resolved for the values actually found ---------------------

def _normalizer(measure: FieldDef, found_units: list[str | None]) -> dict[str | None, tuple[float, str] | str]:
    """source unit -> (factor, normalized unit), or a quality flag when it cannot be used."""
    out: dict[str | None, tuple[float, str] | str] = {}
    for unit in found_units:
        try:
            dim = units.dimension(unit)
        except AmbiguousUnit:  # 'gallon', 'ton': never guessed
            out[unit] = "unit_ambiguous"
            continue
        except UnknownUnit:
            out[unit] = "unit_unknown"
            continue
        target = measure.unit_for_dimension(dim)
        if target is None:
            out[unit] = "unit_mismatch"
            continue
        out[unit] = (units.factor(unit, target), target)
    return out


def _case(d: Dialect, column: str, branches: dict[str | None, str], otherwise: str) -> str:
    whens = []
    for key, sql in branches.items():
        test = f"{column} IS NULL" if key is None else f"{column} = {d.literal(key)}"
        whens.append(f"WHEN {test} THEN {sql}")
    return f"(CASE {' '.join(whens)} ELSE {otherwise} END)" if whens else otherwise


def _vocab_selectors(catalog: Catalog, entity: EntityDef, category: str | None, subcategory: str | None) -> list[dict]:
    """Factor selectors for a category (and treatment route etc.), most specific first."""
    vocab = catalog.vocabulary(entity.category.get("vocabulary"))
    entry = _vocab_entry(vocab, category)
    if entry is None or "factor" not in entry:
        return []
    # a list: alternative activities, preferred first (e.g. a national authority's grid
    # factor before the lifecycle grid intensity): the first with a factor of the region wins
    bases = entry["factor"] if isinstance(entry["factor"], list) else [entry["factor"]]
    sub_vocab = catalog.vocabulary(entity.subcategory.get("vocabulary"))
    sub = _vocab_entry(sub_vocab, subcategory)
    out = []
    for base in bases:
        if sub and "factor" in sub:
            extra = sub["factor"]
            texts = extra.get("column_text")
            if isinstance(texts, list):
                out += [{**base, **{k: v for k, v in extra.items() if k != "column_text"}, "column_text": t} for t in texts]
            else:
                out.append({**base, **extra})
        else:
            out.append(dict(base))
    return out


def _vocab_flags(catalog: Catalog, entity: EntityDef, category: str | None) -> dict[str, Any]:
    """The category's vocabulary entry (regional?, residual mix selector)."""
    return _vocab_entry(catalog.vocabulary(entity.category.get("vocabulary")), category) or {}


def _vocab_entry(vocab: dict[str, dict], value: str | None) -> dict | None:
    if value is None:
        return None
    if value in vocab:
        return vocab[value]
    low = value.strip().lower()
    for key, entry in vocab.items():
        if key.lower() == low or low in [s.lower() for s in entry.get("synonyms", [])]:
            return entry
    return None


# --- apply ---------------------------------------------------------------------------------------

def drop_legacy_duckdb_indexes(workspace: Workspace, conn) -> None:
    """A DuckDB workspace made before the bulk tables' indexes became PostgreSQL-only
    (workspace/schema.py) still has them as ART indexes, which every bulk insert and delete
    would keep maintaining: drop them. A no-op elsewhere and once done."""
    if not workspace.is_duckdb:
        return
    from esg_workbench.workspace.schema import POSTGRES_ONLY_INDEXES

    names = ", ".join(DUCKDB.literal(n) for n in POSTGRES_ONLY_INDEXES)
    for name in conn.exec_driver_sql(f"SELECT index_name FROM duckdb_indexes() WHERE index_name IN ({names}) "
                                     f"AND schema_name = current_schema()").scalars().all():
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {DUCKDB.quote(name)}")


def apply_mapping(workspace: Workspace, mapping: Mapping | str, *, incremental: bool = False,
                  catalog: Catalog | None = None, actor: str | None = None,
                  progress: Callable[[str], None] | None = None, cancel: CancelToken | None = None) -> ApplyResult:
    """Map the landed rows of every table of a saved mapping into staging_rows. Setting
    `cancel` stops the apply (mapping/cancel.py: MappingCancelled), which then changes nothing."""
    from esg_workbench.mapping.store import load_mapping

    started = time.monotonic()
    if isinstance(mapping, str):
        mapping = load_mapping(workspace, mapping)
    if mapping.version is None or mapping.mapping_id is None:
        raise EsgError(f"The mapping '{mapping.name}' has not been saved.",
                       hint="Save it first: staging rows record the mapping version that produced them.")
    catalog = catalog or load_catalog()
    problems = errors_only(validate_in_workspace(workspace, mapping, catalog))
    if problems:
        raise MappingInvalid(f"The mapping '{mapping.name}' v{mapping.version} has {len(problems)} problem(s):", problems)
    library = load_library(workspace, mapping.factor_set, mapping.factor_set_version)
    say = progress or (lambda text: None)
    return concurrency.retrying(
        lambda: _apply_once(workspace, mapping, incremental, catalog, library, actor, say, started, cancel),
        what=f"Applying the mapping '{mapping.name}'")


def _apply_once(workspace: Workspace, mapping: Mapping, incremental: bool, catalog: Catalog, library: FactorLibrary,
                actor: str | None, say: Callable[[str], None], started: float,
                cancel: CancelToken | None = None) -> ApplyResult:
    """One apply's transaction (repeatable as a whole: it replaces what it writes)."""
    d = dialect_of(workspace)
    results: list[TableResult] = []
    with workspace.transaction() as conn, watching(conn, cancel, say, f"Applying the mapping '{mapping.name}'"):
        # Another apply of this mapping (an analyst's, or a sync's) commits first: its
        # delete + insert of the same staging rows never interleaves with ours. The KPI
        # lock, shared, keeps a recompute from reading staging rows while we change them.
        concurrency.lock_mapping_apply(workspace, conn, mapping.name, say)
        concurrency.lock_kpis(workspace, conn, shared=True, say=say)
        drop_legacy_duckdb_indexes(workspace, conn)
        connector_id = resolve_connector_id(workspace, conn, mapping.connector)
        org = workspace.organization_id
        mine = f"organization_id = {d.literal(org)} AND mapping_name = {d.literal(mapping.name)}"
        if incremental:
            stale = conn.exec_driver_sql(
                f"SELECT count(*) FROM staging_records WHERE {mine} AND mapping_version <> {int(mapping.version)}").scalar()
            if stale:
                incremental = False  # another version produced rows: re-map everything
        if not incremental:
            _delete_scope(conn, STAGING, mine)
        # site locations first: the emissions of the other tables are chosen by them
        ordered = sorted(mapping.tables, key=lambda t: catalog.entity(t.entity).kind != "site_registry")
        for table in ordered:
            source = source_info(workspace, conn, connector_id, table.stream)
            compiler = TableCompiler(d, catalog, library, table, source,
                                     lambda s: source_info(workspace, conn, connector_id, s),
                                     mapping.factor_fallback_region)
            say(f"Mapping {table.stream} → {table.entity}")
            result = TableResult(table.id, table.stream, table.entity)
            if compiler.entity.kind == "site_registry":
                from esg_workbench.mapping import sites

                counts = sites.apply_registry(conn, workspace, compiler, mapping.name)
                result.source_rows = counts.pop("sites")
                result.quality = {k: v for k, v in counts.items() if v}
                results.append(result)
                continue
            where = []
            scope = (f"{mine} AND source_table = {d.literal(source.stream)} AND entity = {d.literal(table.entity)}")
            if "_esg_sync_id" in source.columns:
                where.append(_not_landing(d))
            if raw_tables.DELETED_COLUMN in source.columns:  # rows gone from the source are kept, not mapped
                where.append(f"src.{d.quote(raw_tables.DELETED_COLUMN)} IS NULL")
            table_incremental = incremental
            if incremental and table.business_key:
                # duplicates of a business key are found among all the table's rows, not only
                # the new ones: re-map the whole table
                _delete_scope(conn, STAGING, scope)
                table_incremental = False
            if table_incremental:
                last = conn.exec_driver_sql(f"SELECT max(sync_id) FROM staging_records WHERE {scope}").scalar()
                if last is not None and "_esg_sync_id" in source.columns:
                    where.append(f"src.{d.quote('_esg_sync_id')} > {int(last)}")
            _run_table(conn, d, workspace, compiler, mapping, connector_id, where, result, table_incremental, scope)
            results.append(result)
        if incremental:  # kinds whose values were all replaced
            conn.exec_driver_sql(f"DELETE FROM staging_kinds WHERE {mine} AND NOT EXISTS "
                                 f"(SELECT 1 FROM staging_values v WHERE v.kind_id = staging_kinds.id)")
        summary = conn.exec_driver_sql(
            f"SELECT k.field, count(*), sum(v.normalized_value) FROM staging_values v JOIN "
            f"(SELECT id, field FROM staging_kinds WHERE {mine}) k ON k.id = v.kind_id GROUP BY k.field ORDER BY k.field").all()
        output_hash = chain.sha256_json([[r[0], r[1], None if r[2] is None else round(r[2], 6)] for r in summary])
        chain.append(workspace, conn, "mapping.apply", actor=actor, input_hash=mapping.definition_hash(),
                     output_hash=output_hash, metadata={
                         "mapping": mapping.name, "version": mapping.version, "incremental": incremental,
                         "factor_set": library.label, "catalog_version": catalog.version,
                         "tables": [{"stream": r.stream, "entity": r.entity, "source_rows": r.source_rows,
                                     "staging_rows": r.staging_rows, "quality": r.quality} for r in results]})
    return ApplyResult(mapping.name, mapping.version, results, time.monotonic() - started, incremental, output_hash)


def _not_landing(d: Dialect) -> str:
    """Rows of a sync still landing are left to that sync, which maps them when it has
    landed them all (sync/engine.py). Mapping some of them here would move the
    incremental watermark (the largest sync id in staging) past the run, and its later
    chunks would never be mapped. The same statement reads the run's status and its
    rows, so both come from one snapshot."""
    return (f"NOT EXISTS (SELECT 1 FROM connector_sync_logs l WHERE l.id = src.{d.quote('_esg_sync_id')} "
            f"AND l.status = {d.literal(SyncStatus.RUNNING.value)})")


@dataclass(frozen=True)
class StagingTables:
    """Where an apply writes its staging rows (workspace/schema.py: the staging_rows view is
    over these three tables): the workspace's own, or a preview's temporary copies."""
    records: str = "staging_records"
    kinds: str = "staging_kinds"
    values: str = "staging_values"

    def names(self) -> tuple[str, str, str]:
        return self.records, self.kinds, self.values


STAGING = StagingTables()
PREVIEW = StagingTables("_esg_preview_records", "_esg_preview_kinds", "_esg_preview_values")
RECORD_COLUMNS = ("id", "organization_id", "connector_id", "source_table", "source_key", "sync_id", "mapping_id",
                  "mapping_name", "mapping_version", "entity", "period", "activity_date", "site", "category",
                  "subcategory", "attributes", "value", "unit", "arrived_at")
KIND_COLUMNS = ("organization_id", "mapping_name", "source_table", "entity", "field", "scope", "method",
                "normalized_unit", "factor_set", "factor_id", "factor_value", "factor_unit")


def _delete_scope(conn, t: StagingTables, where: str) -> None:
    """The staging rows of a mapping, or of one of its tables: `where` is on the columns
    that kinds and records both have (organization, mapping, source table, entity)."""
    conn.exec_driver_sql(f"DELETE FROM {t.values} WHERE kind_id IN (SELECT id FROM {t.kinds} WHERE {where})")
    conn.exec_driver_sql(f"DELETE FROM {t.records} WHERE {where}")
    conn.exec_driver_sql(f"DELETE FROM {t.kinds} WHERE {where}")


def _delete_records(conn, t: StagingTables, where: str) -> None:
    """The staging rows of the records `where` picks (by source key: an incremental apply)."""
    conn.exec_driver_sql(f"DELETE FROM {t.values} WHERE record_id IN (SELECT id FROM {t.records} WHERE {where})")
    conn.exec_driver_sql(f"DELETE FROM {t.records} WHERE {where}")


def _insert_kinds(conn, d: Dialect, t: StagingTables, kinds: list[dict[str, Any]]) -> list[int]:
    """New staging kinds (KIND_COLUMNS; missing ones NULL); their ids, in order."""
    if not kinds:
        return []
    ids = [int(i) for i in conn.exec_driver_sql(
        f"SELECT nextval('staging_kinds_id_seq') FROM generate_series(1, {len(kinds)})").scalars()]
    rows = ", ".join("(" + ", ".join([str(i)] + [d.literal(k.get(col)) for col in KIND_COLUMNS]) + ")"
                     for i, k in zip(ids, kinds))
    conn.exec_driver_sql(f"INSERT INTO {t.kinds} (id, {', '.join(KIND_COLUMNS)}) VALUES {rows}")
    return ids


def _run_table(conn, d: Dialect, workspace: Workspace, c: TableCompiler, mapping: Mapping, connector_id: str,
               where: list[str], result: TableResult, incremental: bool, scope: str,
               t: StagingTables = STAGING) -> None:
    entity = c.entity
    measures = [m for m in entity.measures if c.table.edges_to(m.name)]
    src = "_esg_src"
    conn.exec_driver_sql(d.drop_temp(src))
    # each row with the region of its site (workspace site locations): factors are chosen by it;
    # on PostgreSQL also the id of its staging record per measure (DuckDB: _Ids blocks)
    record_ids = "" if d.is_duckdb else "".join(
        f", nextval('staging_records_id_seq') AS {d.quote('r__' + m.name)}" for m in measures)
    located = (f"SELECT x.*, sl.region AS region{record_ids} FROM ({c.select_sql(where)}) x LEFT JOIN site_locations sl "
               f"ON sl.organization_id = {d.literal(workspace.organization_id)} AND sl.site = x.site")
    conn.exec_driver_sql(d.temp_table(src, located))
    ordinal = None
    if d.is_duckdb:
        # a new table's rowids are a dense range (offset while the transaction is open): checked, not assumed
        n, first, last = conn.exec_driver_sql(f"SELECT count(*), min(rowid), max(rowid) FROM {src}").one()
        ordinal = f"rowid - {int(first)}" if n else "0"
        if n and last - first != n - 1:
            numbered = "_esg_src_numbered"
            conn.exec_driver_sql(d.temp_table(numbered, f"SELECT *, row_number() OVER () - 1 AS _esg_ordinal FROM {src}"))
            conn.exec_driver_sql(d.drop_temp(src))
            src, ordinal = numbered, "_esg_ordinal"
        result.source_rows = n
    else:
        result.source_rows = conn.exec_driver_sql(f"SELECT count(*) FROM {src}").scalar()
    ids = _Ids(conn, d, "staging_rows_id_seq", result.source_rows)
    if incremental:
        _delete_records(conn, t, f"{scope} AND source_key IN (SELECT source_key FROM {src})")
        # rows that left the raw table (a full reload without them) leave staging too
        # (and so do rows marked deleted in the source)
        key = c.key_sql().replace("src.", "r.")
        alive = f" WHERE r.{d.quote(raw_tables.DELETED_COLUMN)} IS NULL" \
            if raw_tables.DELETED_COLUMN in c.source.columns else ""
        _delete_records(conn, t, f"{scope} AND source_key NOT IN (SELECT {key} FROM {d.quote(c.source.raw_table)} r{alive})")
    if result.source_rows == 0:
        conn.exec_driver_sql(d.drop_temp(src))
        return
    now = d.literal(utcnow())
    lit = d.literal
    org = lit(workspace.organization_id)
    whose = {"organization_id": workspace.organization_id, "mapping_name": mapping.name,
             "source_table": c.source.stream, "entity": entity.name}
    # --- normalization of each mapped measure ----------------------------------------------------
    norm_cols, normalizers = [], {}
    for m in measures:
        u = d.quote("u__" + m.name)
        found = [r[0] for r in conn.exec_driver_sql(f"SELECT DISTINCT {u} FROM {src}").all()]
        table = normalizers[m.name] = _normalizer(m, found)
        value_branches = {k: f"{d.quote('m__' + m.name)} * {d.number_literal(v[0])}" for k, v in table.items() if isinstance(v, tuple)}
        unit_branches = {k: lit(v[1]) for k, v in table.items() if isinstance(v, tuple)}
        flag_branches = {k: lit(v) for k, v in table.items() if isinstance(v, str)}
        # a duplicate counted once elsewhere has no value here (and says so)
        norm_cols += [f"CASE WHEN _dup_ignored THEN CAST(NULL AS {d.double}) ELSE "
                      f"{_case(d, u, value_branches, f'CAST(NULL AS {d.double})')} END AS {d.quote('n__' + m.name)}",
                      f"{_case(d, u, unit_branches, f'CAST(NULL AS {d.text})')} AS {d.quote('nu__' + m.name)}",
                      f"CASE WHEN _dup_ignored THEN 'duplicate_ignored' ELSE "
                      f"{_case(d, u, flag_branches, f'CAST(NULL AS {d.text})')} END AS {d.quote('uf__' + m.name)}"]
    rn = f", {ordinal} AS _esg_rn" if ordinal else ""
    norm = f"(SELECT *{rn}{''.join(', ' + col for col in norm_cols)} FROM {src}) n"

    def quality(*flags: str) -> str:
        """The row's flags, and 'duplicate' when it shares its business key with another row."""
        return f"NULLIF(concat_ws(',', {', '.join(flags + ('n._dup_flag',))}), '')"

    def kinds(*made: dict[str, Any]) -> list[int]:
        return _insert_kinds(conn, d, t, [{**whose, **k} for k in made])

    def values(record: str, kind: str, normalized: str, flags: str, source: str, factor_value: str = "NULL",
               condition: str = "") -> int:
        """Staging values, one per row of `source` (`record`, `kind`: SQL of their ids)."""
        sql = (f"INSERT INTO {t.values} (id, organization_id, record_id, kind_id, normalized_value, factor_value, "
               f"quality) SELECT {ids.take()}, {org}, {record}, {kind}, {normalized}, {factor_value}, {flags} "
               f"FROM {source}{' WHERE ' + condition if condition else ''}")
        return conn.exec_driver_sql(sql).rowcount or 0

    written = 0
    records: dict[str, str] = {}  # measure -> SQL of its record's id
    for m in measures:
        q = lambda p: f"n.{d.quote(p + m.name)}"  # noqa: E731
        # the record: lineage and the source value, once for every staging row of the measure
        record = records[m.name] = _Ids(conn, d, "staging_records_id_seq", result.source_rows).take() \
            if d.is_duckdb else q("r__")
        conn.exec_driver_sql(
            f"INSERT INTO {t.records} ({', '.join(RECORD_COLUMNS)}) SELECT {record}, {org}, {lit(connector_id)}, "
            f"{lit(c.source.stream)}, n.source_key, n.sync_id, {int(mapping.mapping_id)}, {lit(mapping.name)}, "
            f"{int(mapping.version)}, {lit(entity.name)}, n.period, n.activity_date, n.site, n.category, n.subcategory, "
            f"n.attributes, {q('v__')}, {q('su__')}, {now} FROM {norm}")
        # the measure in its field's unit (a kind per unit it is normalized to); a row without
        # a value is kept (flagged missing_value), so every KPI it feeds shows the gap
        table = normalizers[m.name]
        targets = sorted({v[1] for v in table.values() if isinstance(v, tuple)})
        unit_kinds = kinds(*({"field": m.name, "normalized_unit": unit} for unit in [None, *targets]))
        kind = _case(d, q("u__"), {k: str(unit_kinds[1 + targets.index(v[1])])
                                   for k, v in table.items() if isinstance(v, tuple)}, str(unit_kinds[0]))
        written += values(record, kind, q("n__"), quality(
            f"CASE WHEN {q('v__')} IS NULL THEN 'missing_value' ELSE {q('uf__')} END",
            f"CASE WHEN {q('v__')} IS NOT NULL AND {q('m__')} IS NULL THEN 'not_a_number' END",
            f"CASE WHEN {q('n__')} < 0 THEN 'negative' END"), norm)
    # --- derived energy (fuel quantity -> MWh by energy content) ------------------------------------
    for spec in entity.derive:
        m = entity.field(spec["from"])
        if m not in measures:
            continue
        q = lambda p: f"n.{d.quote(p + m.name)}"  # noqa: E731
        pairs = conn.exec_driver_sql(f"SELECT DISTINCT category, {q('nu__')} FROM {norm} WHERE {q('n__')} IS NOT NULL").all()
        rows, found_kinds = [], []
        for category, unit in pairs:
            # energy content is physical, not regional: the first set (the mapping's own, then
            # the shipped ones) that gives the fuel's per-unit and per-kWh factors
            found = next(((fs, r) for selector in _vocab_selectors(c.catalog, entity, category, None)
                          for fs in c.library.sets
                          if (r := fs.energy_per_unit(selector, unit, spec.get("basis", "Gross CV"))) is not None), None)
            if found is not None:
                fs, (kwh, per_unit, per_kwh) = found
                fid = None if per_unit is None else f"{per_unit.id}/{per_kwh.id}"
                rows.append((category, unit, units.convert(kwh, "kWh", spec["unit"])))
                found_kinds.append({"field": spec["field"], "normalized_unit": spec["unit"], "factor_id": fid,
                                    "factor_set": None if fid is None else fs.label,
                                    "factor_value": None if per_unit is None else kwh,
                                    "factor_unit": None if per_unit is None else f"kWh per {unit}"})
        *factor_kinds, no_content = kinds(*found_kinds, {"field": spec["field"], "normalized_unit": spec["unit"]})
        _factor_temp(conn, d, "_esg_energy", ["category", "unit", "mult", "kind_id"],
                     [d.text, d.text, d.double, "BIGINT"], [(*r, k) for r, k in zip(rows, factor_kinds)])
        # rows without a usable quantity too (value NULL, flagged): the energy KPI shows the doubt
        written += values(records[m.name], f"COALESCE(f.kind_id, {no_content})", f"{q('n__')} * f.mult", quality(
            f"CASE WHEN {q('n__')} IS NULL THEN COALESCE({q('uf__')}, CASE WHEN "
            f"{q('v__')} IS NULL THEN 'missing_value' ELSE 'not_a_number' END) END",
            f"CASE WHEN {q('n__')} IS NOT NULL AND f.mult IS NULL THEN 'no_energy_content' END",
            f"CASE WHEN {q('n__')} < 0 THEN 'negative' END"),
            f"{norm} LEFT JOIN _esg_energy f ON f.category IS NOT DISTINCT FROM n.category AND f.unit = {q('nu__')}")
    # --- emissions per gas -------------------------------------------------------------------------
    # The factor of each activity is chosen per category, unit, site region and month
    # (factors.FactorLibrary.resolve): the temp tables hold one row per such combination
    # found, with its staging kinds (field and factor) and the flags the choice raised
    # (factor_vintage, no_factor, ...).
    for spec in entity.emissions:
        m = entity.field(spec["from"])
        if m not in measures:
            continue
        q = lambda p: f"n.{d.quote(p + m.name)}"  # noqa: E731
        combos = conn.exec_driver_sql(
            f"SELECT DISTINCT category, subcategory, {q('nu__')}, region, period FROM {norm} "
            f"WHERE {q('n__')} IS NOT NULL").all()
        gases = spec.get("gases", ["CO2e"])
        on = (f"f.category IS NOT DISTINCT FROM n.category AND f.subcategory IS NOT DISTINCT FROM n.subcategory "
              f"AND f.unit = {q('nu__')} AND f.region IS NOT DISTINCT FROM n.region "
              f"AND f.period IS NOT DISTINCT FROM n.period")
        emission = {"scope": spec["scope"], "method": spec.get("method"), "normalized_unit": "tCO2e"}
        keys = ["category", "subcategory", "unit", "region", "period"]
        key_types = [d.text] * 5
        if spec.get("market"):
            # per supplier too: an imported supplier rate ("Electricity supplier" / "Electricity:
            # supplier", Level 4 = the supplier's name as the source writes it) comes before the
            # residual mix; it is resolved like any factor, by the site's region and the month
            combos = conn.exec_driver_sql(
                f"SELECT DISTINCT category, subcategory, {q('nu__')}, region, period, supplier_name FROM {norm} "
                f"WHERE {q('n__')} IS NOT NULL").all()
            keys, key_types = keys + ["supplier_name"], key_types + [d.text]
            on += " AND f.supplier_name IS NOT DISTINCT FROM n.supplier_name"
            rows, made = [], []
            for combo in combos:
                category, subcategory, unit, region, period, supplier_name = combo
                entry = _vocab_flags(c.catalog, entity, category)
                loc = c.library.resolve(_vocab_selectors(c.catalog, entity, category, subcategory), unit, region,
                                        period, regional=bool(entry.get("regional")), fallback_region=c.fallback_region)
                res = None
                if supplier_name and entry.get("supplier_rate"):
                    found = c.library.resolve([{**entry["supplier_rate"], "level4": supplier_name}], unit, region,
                                              period, regional=True)
                    res = found if found.co2e is not None else None
                if res is None and entry.get("residual_mix"):
                    found = c.library.resolve([entry["residual_mix"]], unit, region, period, regional=True)
                    res = found if found.co2e is not None else None
                lf, rf = loc.co2e, res.co2e if res else None
                factor_unit = f"kg CO2e per {(lf or rf).uom.strip()}" if (lf or rf) else None
                rows.append((*combo, lf.per(unit) if lf else None, ",".join(loc.flags) or None,
                             rf.per(unit) if rf else None, ",".join(res.flags) if res and res.flags else None))
                made += [{**emission, "field": "ghg_co2e", "factor_set": lf.set_label if lf else None,
                          "factor_id": lf.id if lf else None, "factor_value": lf.value if lf else None,
                          "factor_unit": factor_unit},
                         {**emission, "field": "ghg_co2e", "factor_set": rf.set_label if rf else None,
                          "factor_id": rf.id if rf else None, "factor_value": rf.value if rf else None,
                          "factor_unit": factor_unit}]
            *factor_kinds, supplier_kind = kinds(*made, {**emission, "field": "ghg_co2e", "factor_id": "supplier_specific",
                                                         "factor_unit": "kg CO2e per kWh"})
            _factor_temp(conn, d, "_esg_mk", keys + ["loc_t", "loc_flags", "res_t", "res_flags", "loc_kind", "res_kind"],
                         key_types + [d.double, d.text, d.double, d.text, "BIGINT", "BIGINT"],
                         [(*r, factor_kinds[2 * i], factor_kinds[2 * i + 1]) for i, r in enumerate(rows)])
            # the row's rate, after the GHG Protocol's hierarchy (instruments are allocated to
            # consumption when the KPIs are computed: scope2.py): the supplier's own rate, else
            # the residual mix of the site's region, else the location factor (flagged)
            per_kwh = units.factor(m.unit, "kWh")
            supplier = "n.market_factor IS NOT NULL AND n.market_factor >= 0"
            written += values(
                records[m.name],
                f"CASE WHEN {supplier} THEN {supplier_kind} WHEN f.res_t IS NOT NULL THEN f.res_kind ELSE f.loc_kind END",
                f"CASE WHEN {supplier} THEN {q('n__')} * {d.number_literal(per_kwh)} * n.market_factor / 1000.0 "
                f"WHEN f.res_t IS NOT NULL THEN {q('n__')} * f.res_t ELSE {q('n__')} * f.loc_t END",
                quality("CASE WHEN n.market_factor < 0 THEN 'market_factor_negative' END",
                        f"CASE WHEN NOT ({supplier}) AND f.res_t IS NULL THEN "
                        f"concat_ws(',', 'market_uses_location_factor', f.loc_flags) END",
                        f"CASE WHEN NOT ({supplier}) AND f.res_t IS NOT NULL THEN f.res_flags END",
                        f"CASE WHEN {q('n__')} < 0 THEN 'negative' END"),
                f"{norm} JOIN _esg_mk f ON {on}", factor_value=f"CASE WHEN {supplier} THEN n.market_factor END")
        else:
            rows, made = [], []
            for combo in combos:
                category, subcategory, unit, region, period = combo
                entry = _vocab_flags(c.catalog, entity, category)
                # `selector` of the spec narrows the activity (biogenic CO2: DESNZ's "Outside of scopes")
                selectors = [{**sel, **spec.get("selector", {})}
                             for sel in _vocab_selectors(c.catalog, entity, category, subcategory)]
                found = c.library.resolve(selectors, unit, region, period, gases, regional=bool(entry.get("regional")),
                                          fallback_region=c.fallback_region)
                flags = ",".join(found.flags) or None
                if found.factors.get(gases[0]) is None:
                    if not spec.get("optional"):  # a CO2e row without value, flagged: not lost silently
                        rows.append((*combo, None, 0, flags))
                        made.append({**emission, "field": "ghg_co2e"})
                    continue
                for gas_ix, g in enumerate(gases):
                    f = found.factors.get(g)
                    if f is not None:
                        gwp = f" ({f.gwp})" if f.gwp and f.gwp != "not stated" else ""
                        rows.append((*combo, f.per(unit), gas_ix, flags))
                        made.append({**emission, "field": EMISSION_FIELDS[g], "factor_set": f.set_label,
                                     "factor_id": f.id, "factor_value": f.value,
                                     "factor_unit": f"kg CO2e{gwp}{'' if g == 'CO2e' else ' of ' + g} per {f.uom.strip()}"})
            _factor_temp(conn, d, "_esg_ef", keys + ["t_per_unit", "gas_ix", "flags", "kind_id"],
                         key_types + [d.double, "INTEGER", d.text, "BIGINT"],
                         [(*r, k) for r, k in zip(rows, kinds(*made))])
            # DuckDB: one INSERT per gas (a row per source row each), which keeps the memory
            # of a statement to that of the source; PostgreSQL: all gases in one
            for gas_ix in range(len(gases)) if d.is_duckdb else [None]:
                written += values(records[m.name], "f.kind_id", f"{q('n__')} * f.t_per_unit",
                                  quality("f.flags", f"CASE WHEN {q('n__')} < 0 THEN 'negative' END"),
                                  f"{norm} JOIN _esg_ef f ON {on}",
                                  condition="" if gas_ix is None else f"f.gas_ix = {gas_ix}")
        if spec.get("optional"):
            continue
        # activity that could not be used (no value, an unknown or ambiguous unit): a CO2e row
        # without value carrying the measure's flag, so the emission KPI shows the doubt too
        unusable, = kinds({**emission, "field": "ghg_co2e"})
        written += values(records[m.name], str(unusable), "NULL", quality(
            f"COALESCE({q('uf__')}, CASE WHEN {q('v__')} IS NULL THEN 'missing_value' ELSE 'not_a_number' END)"),
            norm, condition=f"{q('n__')} IS NULL")
    result.staging_rows = written
    flags = conn.exec_driver_sql(
        f"SELECT quality, count(*) FROM {t.values} WHERE kind_id IN (SELECT id FROM {t.kinds} WHERE {scope}) "
        f"AND quality IS NOT NULL GROUP BY quality").all()
    for text, count in flags:
        for flag in text.split(","):
            result.quality[flag] = result.quality.get(flag, 0) + count
    conn.exec_driver_sql(d.drop_temp(src))


class _Ids:
    """Ids of staging values or records, from their sequence.

    On PostgreSQL every row takes `nextval` of the sequence (safe with concurrent writers;
    a record's id is drawn into `_esg_src`, where its values find it). On DuckDB a per-row
    `nextval` serializes the insert on the sequence's lock and keeps the second core idle,
    so each INSERT (at most one row per source row) takes a block of the sequence instead,
    as large as the source: the id is the block's start + the source row's ordinal in
    `_esg_src` (`_esg_rn`: its rowid, a dense range). The block is taken (nextval, setval)
    before the statement runs; DuckDB writers are serialized by the workspace's write lock,
    and no other process can open the file.
    """

    def __init__(self, conn, d: Dialect, sequence: str, source_rows: int):
        self.conn, self.sequence, self.source_rows = conn, sequence, source_rows
        self.block = d.is_duckdb

    def take(self) -> str:
        if not self.block:
            return f"nextval('{self.sequence}')"
        start = int(self.conn.exec_driver_sql(f"SELECT nextval('{self.sequence}')").scalar())
        if self.source_rows > 1:
            self.conn.exec_driver_sql(f"SELECT setval('{self.sequence}', {start + self.source_rows - 1})")
        return f"({start} + n._esg_rn)"


def _factor_temp(conn, d: Dialect, name: str, columns: list[str], types: list[str], rows: list[tuple]) -> None:
    conn.exec_driver_sql(d.drop_temp(name))
    spec = ", ".join(f"{c} {t}" for c, t in zip(columns, types))
    if d.is_duckdb:
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({spec})")
    else:
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({spec}) ON COMMIT DROP")
    if rows:
        values = ", ".join("(" + ", ".join(d.literal(v) for v in row) + ")" for row in rows)
        conn.exec_driver_sql(f"INSERT INTO {name} VALUES {values}")


# --- preview --------------------------------------------------------------------------------------

def preview(workspace: Workspace, mapping: Mapping, table_id: str, limit: int = 20,
            catalog: Catalog | None = None) -> list[dict[str, Any]]:
    """The staging rows the table mapping would produce from the first `limit` landed rows,
    computed by the same SQL as apply, in a transaction that is rolled back."""
    catalog = catalog or load_catalog()
    table = mapping.table(table_id)
    library = load_library(workspace, mapping.factor_set, mapping.factor_set_version)
    d = dialect_of(workspace)
    with workspace.transaction() as conn:
        outer = conn.begin_nested() if not workspace.is_duckdb else None
        try:
            connector_id = resolve_connector_id(workspace, conn, mapping.connector)
            source = source_info(workspace, conn, connector_id, table.stream)
            if source is None:
                from esg_workbench.mapping.errors import UnknownStream

                raise UnknownStream(f"{table.stream} has not been landed in the workspace.", table_id=table.id)
            sample = "_esg_sample"
            conn.exec_driver_sql(d.drop_temp(sample))
            conn.exec_driver_sql(d.temp_table(sample, f"SELECT * FROM {d.quote(source.raw_table)} LIMIT {int(limit)}"))
            for name, base in zip(PREVIEW.names(), STAGING.names()):
                conn.exec_driver_sql(d.drop_temp(name))
                conn.exec_driver_sql(d.temp_table(name, f"SELECT * FROM {base} WHERE 1 = 0"))
            shown = SourceInfo(source.stream, sample, source.columns, source.primary_key)
            compiler = TableCompiler(d, catalog, library, table, shown,
                                     lambda s: source_info(workspace, conn, connector_id, s),
                                     mapping.factor_fallback_region)
            probe = mapping.copy()
            probe.version, probe.mapping_id = probe.version or 0, probe.mapping_id or 0
            result = TableResult(table.id, table.stream, table.entity)
            _run_table(conn, d, workspace, compiler, probe, connector_id, [], result, False,
                       f"mapping_name = {d.literal(probe.name)}", PREVIEW)
            rows = [dict(r._mapping) for r in conn.exec_driver_sql(
                "SELECT source_key, period, site, category, subcategory, scope, method, field, value, unit, "
                "normalized_value, normalized_unit, factor_id, quality FROM "
                f"({staging_rows_select(PREVIEW.records, PREVIEW.values, PREVIEW.kinds)}) s ORDER BY id")]
        finally:
            if outer is not None:
                outer.rollback()
        if workspace.is_duckdb:
            for name in (*PREVIEW.names(), "_esg_sample"):
                conn.exec_driver_sql(d.drop_temp(name))
    return rows


def output_digest(rows: list[tuple]) -> str:
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()
