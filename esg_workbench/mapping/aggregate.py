"""Aggregating staging rows into KPI values, with lineage, result hashes and data quality.

* Base KPIs (`sum`, `stock`) are computed per site and month by one GROUP BY over the
  staging rows their selection picks (entity, field, category, subcategory, scope,
  method), converted to the KPI's unit. A `stock` (headcount) takes the rows of the
  latest date within the month: the value at the period's end, never a sum of months.
  The KPIs that sum are computed by one statement (per batch of sites, when there are
  many records), which reads each staging row once however many KPIs select it (which
  KPIs take which staging kinds is decided in Python: kinds are few); each stock by one
  of its own. That pass also gives the rows' content digest, whether a value's rows come
  from one source table and one factor (then gaps.py and gases.py need no pass of their
  own).
* The staging rows behind each month-and-site value are those its KPI's selection picks
  for its site and month (derived by drill_down, not stored link by link; `kpi_lineage`
  holds only the contractual instruments allocated to a value); every other value
  (organization totals, quarters, years, ratios, sums of KPIs) names the values it was
  computed from in `parts`, so every number leads back to source keys.
* Roll-ups: sums add up months and sites; stocks take the last month of the period
  (and add up sites); ratios are recomputed from the rolled-up numerator and
  denominator, never averaged; `linear` KPIs add up their terms.
* `result_hash` is a SHA-256 over the KPI, site, period, value, unit, rule, catalog
  version and the inputs (the content of the staging rows: source table and key, value
  with numbers spelled alike on every backend, unit, factor, flags; or the parts'
  hashes): the same inputs give the same hash, whatever the row ids, the connector's id,
  the time or the backend (DuckDB or PostgreSQL).
* Data-quality flags per value (mapping/flags.py says what each means): the staging rows'
  own flags (ROW_FLAGS: no_factor, factor_vintage, missing_value, unit_ambiguous,
  duplicate, ...), `missing` (no data for a site and month inside the reporting range),
  `partial` (a roll-up or total with missing months or sites), `gap` (a monthly input
  without rows for the month: gaps.py), `unit_mismatch` (rows whose unit could not be
  converted to the KPI's, left out), `negative`, `outlier` (far from the site's usual
  months: robust z-score over median and MAD), `not_period_end` (a stock taken from an
  earlier month), `unknown_site`, the market-based ones of scope2.py, `estimated` and
  `incomplete_source` (rows of a source table whose sync left a range missing: incomplete.py).
  Totals and roll-ups carry the flags of their parts (a missing part makes them
  `partial`).
* Market-based Scope 2 and renewable energy take the contractual instruments allocated
  to each site and month (scope2.py); missing site-months may be estimated (gaps.py).
* On a shared workspace recomputes of one organization take turns, and wait for the
  applies under way (workspace/concurrency.py): every recompute sees one settled set of
  staging rows and replaces all the values, so the last one is what a single run gives.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.core.errors import NotFound
from esg_workbench.core.specs import CancelToken
from esg_workbench.mapping import gaps, gases, periods, units
from esg_workbench.mapping import incomplete as incomplete_source
from esg_workbench.mapping.cancel import watching
from esg_workbench.mapping.catalog import Catalog, KpiDef, load_catalog
from esg_workbench.mapping.sql import Dialect, dialect_of
from esg_workbench.workspace import concurrency
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import kpi_lineage, kpi_values

OUTLIER_Z = 5.0
OUTLIER_MIN_MONTHS = 6
_SELECT_COLUMNS = ("entity", "field", "category", "subcategory", "scope", "method")
#: staging row flags a KPI value takes over from the rows behind it (row flag -> KPI flag)
ROW_FLAGS = {
    "no_factor": "no_factor", "market_uses_location_factor": "market_uses_location_factor",
    "factor_vintage": "factor_vintage", "factor_other_region": "factor_other_region",
    "lifecycle_factor": "lifecycle_factor", "site_without_country": "site_without_country",
    "missing_value": "missing_value", "unit_unknown": "unit_unknown", "unit_ambiguous": "unit_ambiguous",
    "unit_mismatch": "unit_mismatch", "not_a_number": "not_a_number", "no_energy_content": "no_energy_content",
    "market_factor_negative": "market_factor_negative", "duplicate": "duplicate", "duplicate_ignored": "duplicate",
    "estimated": "estimated",
}
#: KPI flags that are not passed up to totals and roll-ups as they are ('missing' months
#: and sites make a total 'partial' instead)
NOT_PASSED_UP = {"missing"}
#: the site of rows whose site could not be read (apply.UNASSIGNED_SITE)
UNKNOWN_SITE = "(unassigned)"


@dataclass(slots=True)
class Cell:
    kpi: str
    site: str | None  # None: the organization
    period: str
    period_type: str
    value: float | None
    unit: str
    rule: str
    input_rows: int = 0
    inputs: str | None = None  # hash of the input rows (base cells)
    parts: list[tuple[str, str | None, str]] = field(default_factory=list)  # (kpi, site, period) keys
    quality: list[str] = field(default_factory=list)
    id: int | None = None
    result_hash: str = ""

    @property
    def key(self) -> tuple[str, str | None, str]:
        return (self.kpi, self.site, self.period)

    def flag(self, *flags: str) -> None:
        for f in flags:
            if f not in self.quality:
                self.quality.append(f)


@dataclass
class AggregateResult:
    run_id: str
    values: int
    base_values: int
    lineage_rows: int
    months: list[str]
    sites: list[str]
    seconds: float
    flags: dict[str, int]
    output_hash: str


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off for a while. The KPI values hold no reference
    cycles (reference counting frees them), but making 25,000 of them (a million readings)
    sets off collections, and each full one walks every object the process holds, holding
    the GIL (three of them were a fifth of the recompute's Python time at a million
    readings, and each a stall of the app's window)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fmt(value: float | None) -> str | None:
    return None if value is None else repr(round(value, 9))


def _in(d: Dialect, column: str, value: Any) -> str:
    values = value if isinstance(value, (list, tuple)) else [value]
    if len(values) == 1:
        v = values[0]
        return f"s.{column} IS NULL" if v is None else f"s.{column} = {d.literal(v)}"
    return f"s.{column} IN ({', '.join(d.literal(v) for v in values)})"


def _attribute_conditions(d: Dialect, kpi: KpiDef) -> list[str]:
    """`"attribute": {"hazardous": "true"}` in a KPI's selection: rows whose attributes
    (JSON text written by apply.py as {"name":"text",...}) hold that value. 'false' also
    takes rows where the attribute is missing or empty: a record not marked hazardous is
    non-hazardous."""
    out = []  # strpos, not LIKE: psycopg reads a '%' in statement text as a placeholder
    for name, value in (kpi.select.get("attribute") or {}).items():
        if str(value).lower() == "false":
            truthy = d.literal(f'"{name}":"true"')
            out.append(f"(s.attributes IS NULL OR strpos(s.attributes, {truthy}) = 0)")
        else:
            wanted = d.literal('"%s":"%s"' % (name, value))
            out.append(f"strpos(coalesce(s.attributes, ''), {wanted}) > 0")
    return out


def number_text(d: Dialect, column: str) -> str:
    """A number as the same text in DuckDB and PostgreSQL (fixed six decimals): result
    hashes must not depend on how a backend prints a double ('0.0' vs '0')."""
    return f"coalesce(CAST(CAST({column} AS DECIMAL(38, 6)) AS {d.text}), '')"


def source_text(d: Dialect, column: str) -> str:
    """A source value's text with number spellings made equal ('12.50', '12.5' -> '12.5';
    '3.0' -> '3'): landed numbers print differently in DuckDB and PostgreSQL."""
    decimals = f"regexp_replace({column}, '^(-?[0-9]+[.][0-9]*[1-9])0+$', '\\1')"
    return f"coalesce(regexp_replace({decimals}, '^(-?[0-9]+)[.]0+$', '\\1'), '')"


def _fast_number_text(d: Dialect, column: str) -> str:
    """number_text() for every row of a KPI's inputs, cheaper: micro-units as a BIGINT's
    text (floor(x + 0.5) rounds alike on both backends, unlike round()); the DECIMAL text
    only beyond a BIGINT's range."""
    return (f"CASE WHEN {column} IS NULL THEN '' WHEN abs({column}) < 1e12 THEN "
            f"CAST(CAST(floor({column} * 1000000 + 0.5) AS BIGINT) AS {d.text}) ELSE {number_text(d, column)} END")


def _fast_source_text(d: Dialect, column: str) -> str:
    """source_text() without regular expressions (a third of the rows' hashing time):
    trailing zeros of a decimal fraction dropped ('12.50' -> '12.5', '3.0' -> '3')."""
    return (f"CASE WHEN strpos({column}, '.') > 0 AND strpos({column}, 'e') = 0 AND strpos({column}, 'E') = 0 "
            f"THEN rtrim(rtrim({column}, '0'), '.') ELSE coalesce({column}, '') END")


def _selection(d: Dialect, workspace: Workspace, kpi: KpiDef, extra: Iterable[str] = ()) -> list[str]:
    """The conditions on staging rows `s` that pick a base KPI's rows."""
    where = [f"s.organization_id = {d.literal(workspace.organization_id)}", "s.period IS NOT NULL", *extra]
    for column in _SELECT_COLUMNS:
        if column in kpi.select:
            where.append(_in(d, column, kpi.select[column]))
    return where + _attribute_conditions(d, kpi)


def _row_text(d: Dialect, column: Callable[[str], str]) -> str:
    """The content of a staging row, for the result hash (`column`: the SQL of a column of
    staging_rows): no ids (the connector's id is random), and numbers as the same text on
    every backend."""
    return (f"concat_ws('|', {column('source_table')}, {column('source_key')}, {column('field')}, "
            f"{_fast_source_text(d, column('value'))}, coalesce({column('unit')}, ''), "
            f"coalesce({column('factor_set')}, ''), coalesce({column('factor_id')}, ''), "
            f"{_fast_number_text(d, column('normalized_value'))}, coalesce({column('quality')}, ''))")


def _inputs_sql(d: Dialect, workspace: Workspace, kpi: KpiDef, unit_factors: dict[str, float],
                extra: Iterable[str] = ()) -> str:
    """The staging rows of a base KPI, with their value in the KPI's unit (`extra`: more
    conditions on `s`, e.g. one site and month for a drill-down)."""
    where = _selection(d, workspace, kpi, extra)
    whens = " ".join(f"WHEN s.normalized_unit = {d.literal(u)} THEN s.normalized_value * {d.number_literal(f)}"
                     for u, f in unit_factors.items())
    value = f"(CASE {whens} END)" if whens else f"CAST(NULL AS {d.double})"
    inner = (f"SELECT s.id, s.site, s.period, s.activity_date, {value} AS v, s.normalized_value AS nv, s.quality, "
             f"{_row_text(d, lambda column: 's.' + column)} AS rt, s.source_table AS st, s.connector_id AS ci, "
             f"s.factor_set AS fs, s.factor_id AS fi "
             f"FROM staging_rows s WHERE {' AND '.join(where)}")
    if kpi.rule == "stock":
        return (f"SELECT id, site, period, v, nv, quality, rt, st, ci, fs, fi FROM "
                f"(SELECT x.*, max(x.activity_date) OVER "
                f"(PARTITION BY x.site, x.period) AS last_date FROM ({inner}) x) y "
                f"WHERE y.activity_date IS NOT DISTINCT FROM y.last_date")
    return inner


def _with_digest(d: Dialect, rows_sql: str) -> str:
    """`rows_sql` (with each row's content text `rt`) and two 60-bit slices of the text's
    md5 as BIGINTs, `h1` (hex digits 1-15) and `h2` (16-30), alike on both backends. DuckDB
    reads them from md5_number (the digest's bytes as one little-endian 128-bit number):
    a third cheaper than printing 32 hex digits and parsing two slices of them back."""
    if not d.is_duckdb:
        sliced = ", ".join(f"CAST(CAST('x' || substr(x.h, {start}, 15) AS BIT(60)) AS BIGINT) AS {name}"
                           for name, start in (("h1", 1), ("h2", 16)))
        return f"SELECT x.*, {sliced} FROM (SELECT r.*, md5(r.rt) AS h FROM ({rows_sql}) r) x"

    # The digest's bytes 0-7 are `lo` (byte 0 lowest), 8-15 `hi`. With their bytes swapped
    # (`bl`, `bh`: byte 0 highest) h1 is bl's top 60 bits, and h2 bl's low 4 bits followed
    # by bh's top 56. A swap is three steps of masks and shifts: half the operations of
    # moving the 15 bytes one by one.
    low64 = 18446744073709551615  # masks both halves: an older DuckDB's md5_number is a signed HUGEINT

    def swapped(x: str) -> str:
        for width, mask in ((8, 0x00FF00FF00FF00FF), (16, 0x0000FFFF0000FFFF), (32, 0x00000000FFFFFFFF)):
            x = f"((({x} & {mask}) << {width}) | (({x} >> {width}) & {mask}))"
        return x

    return (f"SELECT x.*, CAST(bl >> 4 AS BIGINT) AS h1, CAST(((bl & 15) << 56) | (bh >> 8) AS BIGINT) AS h2 FROM "
            f"(SELECT z.*, {swapped('z.lo')} AS bl, {swapped('z.hi')} AS bh FROM "
            f"(SELECT y.*, CAST(y.h & {low64} AS UBIGINT) AS lo, CAST((y.h >> 64) & {low64} AS UBIGINT) AS hi "
            f"FROM (SELECT r.*, md5_number(r.rt) AS h FROM ({rows_sql}) r) y) z) x")


#: the columns of a KPI's selection that a staging kind holds (a kind and the records of its
#: values come from one table mapping: they share the entity)
_KIND_SELECT_COLUMNS = ("entity", "field", "scope", "method")


def _selects(kpi: KpiDef, column: str, value: Any) -> bool:
    """Whether a KPI's selection takes `value` in `column` (as _in's SQL would)."""
    if column not in kpi.select:
        return True
    wanted = kpi.select[column]
    values = wanted if isinstance(wanted, (list, tuple)) else [wanted]
    if len(values) == 1:
        return value == values[0]  # None: IS NULL
    return value is not None and value in values  # (IN never takes a NULL)


def _kinds_of(conn, d: Dialect, workspace: Workspace, kpis: list[KpiDef]) -> dict[str, list[tuple[int, str | None]]]:
    """For each base KPI, the staging kinds its selection takes on the kinds' columns
    (`_KIND_SELECT_COLUMNS`), with their normalized unit; KPIs that take none are left out.
    The kinds are few (one per field, unit and factor an apply found: thousands at most,
    against millions of rows), so this is decided here, not row by row."""
    kinds = conn.exec_driver_sql(
        f"SELECT id, entity, field, scope, method, normalized_unit FROM staging_kinds "
        f"WHERE organization_id = {d.literal(workspace.organization_id)} ORDER BY id").all()
    out: dict[str, list[tuple[int, str | None]]] = {}
    for kpi in kpis:
        mine = [(kind_id, unit) for kind_id, *values, unit in kinds
                if all(_selects(kpi, column, value) for column, value in zip(_KIND_SELECT_COLUMNS, values))]
        if mine:
            out[kpi.id] = mine
    return out


def _record_conditions(d: Dialect, kpi: KpiDef) -> list[str]:
    """The conditions of a KPI's selection on the columns of the records `s` (those its
    kinds do not decide: category, subcategory, attributes)."""
    return [_in(d, c, kpi.select[c]) for c in ("category", "subcategory") if c in kpi.select] + \
        _attribute_conditions(d, kpi)


def _unit_factor(unit: str | None, kpi: KpiDef) -> float | None:
    """The factor from a normalized unit to the KPI's; None: not convertible (the rows count
    as unit_mismatch)."""
    if unit is None:
        return None
    try:
        return units.factor(unit, kpi.unit)
    except Exception:  # UnknownUnit, or units of different dimensions
        return None


class KpiInputs:
    """The staging rows of the base KPIs (`base`): for each KPI that has staging kinds, its
    _inputs_sql, tagged with the KPI's number `k` in `kpis`, so that one statement can read
    those of several KPIs (a row that two KPIs select is in both)."""

    def __init__(self, d: Dialect, workspace: Workspace, kpis: list[KpiDef], kinds: dict[str, list[tuple[int, str | None]]]):
        self.d, self.workspace, self.kinds = d, workspace, kinds
        self.base = kpis
        self.kpis = [kpi for kpi in kpis if kpi.id in kinds]  # those that may have rows, numbered by `k`
        # per KPI the factor from each unit of its rows to the KPI's, in the order of the units
        # (the CASE over them is then the same text every time)
        self.factors = {kpi.id: {unit: f for unit in sorted({u for _, u in kinds[kpi.id] if u is not None})
                                 if (f := _unit_factor(unit, kpi)) is not None} for kpi in self.kpis}

    def sql(self, columns: str, only: Callable[[KpiDef], bool] = lambda kpi: True) -> str | None:
        """`columns` of the input rows (names of _inputs_sql) with `k`, of the KPIs `only` takes."""
        branches = [f"SELECT {k} AS k, {columns} FROM "
                    f"({_inputs_sql(self.d, self.workspace, kpi, self.factors[kpi.id])}) i"
                    for k, kpi in enumerate(self.kpis) if only(kpi)]
        return " UNION ALL ".join(branches) if branches else None

    def kpi(self, k: int) -> KpiDef:
        return self.kpis[k]

    def kind_ids(self, ks: list[int]) -> list[int]:
        """The staging kinds the KPIs `ks` take."""
        return sorted({kind_id for k in ks for kind_id, _ in self.kinds[self.kpis[k].id]})

    def pairs(self, ks: list[int]) -> list[tuple]:
        """(kind, k, factor) for each kind each of the KPIs `ks` takes: the factor from the
        kind's unit to the KPI's (None: not convertible)."""
        return [(kind_id, k, self.factors[self.kpis[k].id].get(unit))
                for k in ks for kind_id, unit in self.kinds[self.kpis[k].id]]

    @staticmethod
    def kind_parts(kinds: list[tuple]) -> list[tuple]:
        """(id, field, source table, factor set, factor id, factor text) of `kinds` (id,
        field, source table, factor set, factor id): the row text's parts a kind gives."""
        return [(*kind, f"{kind[3] or ''}|{kind[4] or ''}") for kind in kinds]

    def read_once(self, ks: list[int], kinds: str, pairs: str, sites: str | None = None) -> str:
        """The input rows of the KPIs `ks` (no stocks) as _scan_sql wants them, reading each
        staging row once however many of them select it: the rows of their kinds (the table
        `kinds` of kind_parts), each with its content digest, then joined to the table
        `pairs` (of pairs: which KPI takes which kind, and the factor to the KPI's unit);
        the conditions on the records' columns are the KPI's. `sites`: a condition on the
        records' `site` (site_batches), or None for all.

        The row text's parts that come from a record (its source table and key, value and
        unit) are made once per record, and those of a kind once per kind: left to the
        planner, they would be made again for each of the record's rows (up to eight here),
        which made the text and its md5 take 1.5 times the CPU. The records kept are narrow:
        their source table is their kinds' (one apply of one table wrote both), and the
        columns only some KPIs' conditions read are kept only when one does. The kinds are a
        table of known size, not a query of staging_kinds: with a filter on that table
        DuckDB guessed the values of the kinds fewer than the records after a re-apply in the
        same process, and built its hash table on the 7,000,000 values (1.2 GB more)."""
        d = self.d
        whens = [f"WHEN {k} THEN {' AND '.join(conditions)}"
                 for k in ks if (conditions := _record_conditions(d, self.kpis[k]))]
        selected = ", category, subcategory, attributes" if whens else ""
        records = (f"SELECT id, site, period{selected}, source_table || '|' || source_key AS lineage, "
                   f"{_fast_source_text(d, 'value')} || '|' || coalesce(unit, '') AS measured "
                   f"FROM staging_records WHERE organization_id = {d.literal(self.workspace.organization_id)} "
                   f"AND period IS NOT NULL{f' AND ({sites})' if sites else ''}")
        # the same text as _row_text (whose parts are never NULL, so concat_ws drops none)
        text = (f"concat_ws('|', r.lineage, k.field, r.measured, k.factor, "
                f"{_fast_number_text(d, 'v.normalized_value')}, coalesce(v.quality, ''))")
        rows = (f"WITH r AS MATERIALIZED ({records}) SELECT v.kind_id, r.site, r.period"
                f"{selected.replace(', ', ', r.')}, v.normalized_value AS nv, v.quality, {text} AS rt, "
                f"k.source_table AS st, k.factor_set AS fs, k.factor_id AS fi "
                f"FROM staging_values v JOIN r ON r.id = v.record_id JOIN {kinds} k ON k.id = v.kind_id")
        where = f" WHERE CASE m.k {' '.join(whens)} ELSE TRUE END" if whens else ""
        return (f"SELECT m.k, s.site, s.period, s.nv * m.f AS v, s.nv, s.quality, s.h1, s.h2, s.st, s.fs, s.fi "
                f"FROM ({_with_digest(d, rows)}) s JOIN {pairs} m ON m.kind_id = s.kind_id{where}")


@dataclass
class BaseScan:
    """What the pass over the base KPIs' rows found besides their site-month sums."""
    #: per KPI: (site, source table, period, sum) of its rows (gaps.py: which inputs are monthly)
    by_source: dict[str, list[tuple]] = field(default_factory=dict)
    #: per site-month value: the (factor set, factor id) pairs of its rows (gases.py)
    factors: dict[tuple, list[tuple]] = field(default_factory=dict)


#: the columns of KpiInputs.sql that _scan_sql reads (with the digest of `rt`)
_SCANNED = "site, period, v, nv, quality, rt, st, fs, fi"


class FlagBits:
    """The ROW_FLAGS of the staging rows as bits, so that the flags of a value's rows are
    one bit_or: a DISTINCT aggregate (string_agg of the distinct qualities) makes DuckDB
    split the grouping in two and buffer all its input rows for them (1.1 GB more for
    8,000,000 rows). A row's `quality` (its flags, comma-separated) takes its bits from a
    small table of the organization's distinct qualities."""

    #: the bit of each row flag, in the order of their names (the order values take them in)
    BITS = {name: 1 << i for i, name in enumerate(sorted(ROW_FLAGS))}

    def __init__(self, conn, d: Dialect, workspace: Workspace):
        qualities = conn.exec_driver_sql(
            f"SELECT DISTINCT quality FROM staging_values WHERE organization_id = {d.literal(workspace.organization_id)} "
            f"AND quality IS NOT NULL ORDER BY quality").scalars().all()
        masks = {q: sum(self.BITS[f] for f in set(q.split(",")) if f in self.BITS) for q in qualities}
        #: (quality, bits) of the qualities that hold a row flag
        self.rows = [(q, m) for q, m in masks.items() if m]

    def flags(self, bits: int | None) -> list[str]:
        """The KPI flags of a value whose rows have these bits."""
        return [ROW_FLAGS[name] for name, bit in self.BITS.items() if (bits or 0) & bit]


def _scan_sql(rows_sql: str, flag_bits: str | None) -> str:
    """The site-month sums of input rows (k, site, period, v, nv, quality, h1, h2, st, fs,
    fi), and what gaps.py and gases.py need to know about the rows behind them.
    `flag_bits`: the table of FlagBits.rows (quality, bits), None if there are none.

    sum(v ORDER BY v) and ORDER BY: floating-point addition depends on the order of the
    terms, and rows come in their physical order, which an incremental apply or a
    concurrent writer changes. In a fixed order the same staging rows always give the same
    value to the last bit, hence the same hash. A row with a value in a unit that cannot be
    converted to the KPI's: unit_mismatch; a row without a value says why itself
    (missing_value, no_factor, unit_unknown, ...). The rows' content digest is a multiset
    hash (the count and the sums of two 60-bit slices of each row's md5): no sort of the
    rows' texts and no long string per group, and the same on DuckDB and PostgreSQL. min =
    max of the source table (or factor) says that a value's rows come from one table (one
    factor): then the per-table sum is the value and its factor is known without another
    pass over the rows."""
    with_factor = "FILTER (WHERE fi IS NOT NULL)"
    bits, flagged = ("bit_or(q.bits)", f" LEFT JOIN {flag_bits} q ON q.quality = i.quality") \
        if flag_bits else ("CAST(NULL AS BIGINT)", "")
    return (f"SELECT k, site, period, sum(v ORDER BY v), count(*), count(*) FILTER (WHERE v IS NULL AND nv IS NOT NULL), "
            f"count(*) FILTER (WHERE v < 0), sum(h1), sum(h2), {bits}, "
            f"min(st), max(st), count(fi), min(fi), max(fi), count(fs) {with_factor}, min(fs) {with_factor}, "
            f"max(fs) {with_factor} FROM ({rows_sql}) i{flagged} GROUP BY k, site, period ORDER BY k, site, period")


def _scan(conn, d: Dialect, inputs: KpiInputs, cells: dict[tuple, Cell], scan: BaseScan) -> None:
    """The site-month cells of every base KPI that has rows. The KPIs that sum are read in
    one statement (per batch of sites, when there are many records: _site_batches), which
    hashes each staging row once (the row text and its md5 are most of the aggregation's
    time); a stock, which takes the rows of each month's last date, in a statement of its
    own."""
    sums = [k for k, kpi in enumerate(inputs.kpis) if kpi.rule != "stock"]
    wanted = set(inputs.kind_ids(sums))
    kinds = [row for row in conn.exec_driver_sql(
        f"SELECT id, field, source_table, factor_set, factor_id FROM staging_kinds "
        f"WHERE organization_id = {d.literal(inputs.workspace.organization_id)} ORDER BY id").all() if row[0] in wanted]
    batches = _site_batches(conn, d, inputs.workspace) if sums else []
    grouped: dict[int, list] = {k: [] for k in range(len(inputs.kpis))}
    flag_bits = FlagBits(conn, d, inputs.workspace)
    with _listed(conn, d, "_esg_scan_flags", {"quality": "text", "bits": "bigint"}, flag_bits.rows) as flags, \
            _listed(conn, d, "_esg_scan_kinds", _KIND_PARTS, inputs.kind_parts(kinds)) as kind_table, \
            _listed(conn, d, "_esg_scan_pairs", _PAIRS, inputs.pairs(sums)) as pair_table, \
            _listed(conn, d, "_esg_scan_sites", {"site": "text", "batch": "bigint"},
                    [(site, b) for b, batch in enumerate(batches) for site in batch if site is not None]) as sites:
        # (the batches in the order of their sites: a KPI's rows come in the order of one statement's)
        statements = [inputs.read_once(sums, kind_table, pair_table, _in_batch(sites, b, batch)
                                       if len(batches) > 1 else None) for b, batch in enumerate(batches)]
        statements += [_with_digest(d, inputs.sql(_SCANNED, only=lambda x, kpi=kpi: x is kpi))
                       for kpi in inputs.kpis if kpi.rule == "stock"]
        for rows_sql in statements:
            for k, *row in conn.exec_driver_sql(_scan_sql(rows_sql, flags if flag_bits.rows else None)).all():
                grouped[k].append(row)
    for k in range(len(inputs.kpis)):  # in the KPIs' order, as the cells always were
        _cells_of(conn, inputs, k, grouped[k], flag_bits, cells, scan)


#: the columns of the tables KpiInputs.read_once reads: the parts of the row text each kind
#: gives, and the (kind, KPI) pairs with the factor to the KPI's unit
_KIND_PARTS = {"id": "bigint", "field": "text", "source_table": "text", "factor_set": "text", "factor_id": "text",
               "factor": "text"}
_PAIRS = {"kind_id": "bigint", "k": "bigint", "f": "double"}
#: at most this many staging records in one statement of _scan: its ordered sums hold all
#: their values at once, and its records' text parts are materialized. In one statement the
#: 10,000,000 readings of the benchmark (20,000,000 records) peaked at 4.3 GB; in batches of
#: 4,000,000 records at 1.5 GB, of 1,000,000 at 1.0 GB, taking 10% longer.
SCAN_BATCH_RECORDS = 1_000_000


def _site_batches(conn, d: Dialect, workspace: Workspace) -> list[list[str | None]]:
    """The sites of the staging records in batches of at most SCAN_BATCH_RECORDS records
    (a site's records are never split: a value is a site's), in the order the statements'
    rows come in (sites ascending, no site last); one batch for all when they fit."""
    counts = conn.exec_driver_sql(
        f"SELECT site, count(*) FROM staging_records WHERE organization_id = {d.literal(workspace.organization_id)} "
        f"AND period IS NOT NULL GROUP BY site ORDER BY site NULLS LAST").all()
    batches: list[list[str | None]] = [[]]
    size = 0
    for site, n in counts:
        if size + n > SCAN_BATCH_RECORDS and batches[-1]:
            batches.append([])
            size = 0
        batches[-1].append(site)
        size += n
    return batches


def _in_batch(sites: str, b: int, batch: list[str | None]) -> str:
    """The condition on a record's site that picks batch `b` of the table `sites` (site,
    batch) of _site_batches."""
    picked = f"site IN (SELECT site FROM {sites} WHERE batch = {b})"
    return f"{picked} OR site IS NULL" if None in batch else picked


@contextlib.contextmanager
def _listed(conn, d: Dialect, name: str, columns: dict[str, str], rows: list[tuple]) -> Iterator[str]:
    """`rows` (of `columns`: name -> bigint | double | text) as a table `name` for the
    statements run inside. Not a list of literals in the statement: DuckDB took longer to
    plan one with the 2,500 staging kinds of the demo data (0.6 s) than to run it."""
    if d.is_duckdb:
        import pyarrow as pa

        types = {"bigint": pa.int64(), "double": pa.float64(), "text": pa.string()}
        raw = conn.connection.driver_connection
        raw.register(name, pa.table({c: pa.array([r[i] for r in rows], types[t])
                                     for i, (c, t) in enumerate(columns.items())}))
        try:
            yield name
        finally:
            raw.unregister(name)
        return
    types = {"bigint": "BIGINT", "double": d.double, "text": d.text}
    conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({', '.join(f'{c} {types[t]}' for c, t in columns.items())}) "
                         f"ON COMMIT DROP")
    if rows:
        conn.connection.driver_connection.cursor().executemany(
            f"INSERT INTO {name} VALUES ({', '.join(['%s'] * len(columns))})", rows)
    yield name
    # (after an error the transaction is rolled back, and the table made in it with it)
    conn.exec_driver_sql(f"DROP TABLE {name}")


def _cells_of(conn, inputs: KpiInputs, k: int, rows: list, flag_bits: FlagBits, cells: dict[tuple, Cell],
              scan: BaseScan) -> None:
    """A KPI's site-month cells from its rows of _scan_sql; a further statement only where a
    value mixes source tables or factors."""
    kpi = inputs.kpi(k)
    one_table, one_factor = True, True
    by_source = scan.by_source.setdefault(kpi.id, [])
    for (site, period, total, n, unusable, negatives, h1, h2, bits, first_table, last_table,
         factored, first_id, last_id, with_set, first_set, last_set) in rows:
        if first_table == last_table:
            by_source.append((site, first_table, period, total))
        else:
            one_table = False
        if factored and first_id == last_id and (with_set == 0 or (with_set == factored and first_set == last_set)):
            scan.factors[(kpi.id, site, period)] = [(first_set, first_id)]
        elif factored:
            one_factor = False
        if not periods.is_month(period):
            continue
        digest = hashlib.sha256(f"{n}:{int(h1)}:{int(h2)}".encode()).hexdigest()
        cell = Cell(kpi.id, site, period, "month", total, kpi.unit, kpi.rule, n, digest)
        if unusable:
            cell.flag("unit_mismatch")
        if negatives:
            cell.flag("negative")
        cell.flag(*flag_bits.flags(bits))
        if site == UNKNOWN_SITE:
            cell.flag("unknown_site")
        cells[cell.key] = cell
    rows_sql = inputs.sql(_SCANNED, only=lambda x: x is kpi)
    if not one_table:
        scan.by_source[kpi.id] = conn.exec_driver_sql(
            f"SELECT site, st, period, sum(v ORDER BY v) FROM ({rows_sql}) i GROUP BY site, st, period "
            f"ORDER BY site, st, period").all()
    if not one_factor and gases.states_gwp(kpi):
        for key in [key for key in scan.factors if key[0] == kpi.id]:
            del scan.factors[key]
        for site, period, set_label, factor_id in conn.exec_driver_sql(
                f"SELECT site, period, fs, fi FROM ({rows_sql}) i WHERE fi IS NOT NULL GROUP BY site, period, fs, fi "
                f"ORDER BY site, period, fs, fi").all():
            scan.factors.setdefault((kpi.id, site, period), []).append((set_label, factor_id))


def aggregate(workspace: Workspace, *, catalog: Catalog | None = None, fiscal_start: int = 1,
              actor: str | None = None, progress: Callable[[str], None] | None = None,
              estimate: str | None | bool = True, cancel: CancelToken | None = None) -> AggregateResult:
    """Recompute every KPI value of the organization from its staging rows. `estimate`:
    how gaps are estimated (gaps.METHODS); True (default): the organization's choice
    (gaps.set_estimate_method), None or False: not at all."""
    started = time.monotonic()
    catalog = catalog or load_catalog()
    say = progress or (lambda text: None)
    return concurrency.retrying(
        lambda: _aggregate_once(workspace, catalog, fiscal_start, actor, say, started, estimate, cancel),
        what="Recomputing the KPIs")


def _aggregate_once(workspace: Workspace, catalog: Catalog, fiscal_start: int, actor: str | None,
                    say: Callable[[str], None], started: float, estimate: str | None | bool = None,
                    cancel: CancelToken | None = None) -> AggregateResult:
    """One recompute's transaction (repeatable as a whole: it replaces every value)."""
    d = dialect_of(workspace)
    run_id = uuid.uuid4().hex[:16]
    org = workspace.organization_id
    cells: dict[tuple, Cell] = {}
    with workspace.transaction() as conn, watching(conn, cancel, say, "Recomputing the KPIs"):
        from esg_workbench.mapping.apply import drop_legacy_duckdb_indexes

        # One recompute per organization at a time, and none while an apply changes staging
        # rows: without it two recomputes would each delete the old values and both insert
        # theirs (twice the KPIs), and the sums and their lineage could see different rows.
        concurrency.lock_kpis(workspace, conn, shared=False, say=say)
        drop_legacy_duckdb_indexes(workspace, conn)
        conn.execute(sa.delete(kpi_lineage).where(kpi_lineage.c.organization_id == org))
        conn.execute(sa.delete(kpi_values).where(kpi_values.c.organization_id == org))
        # --- base cells: one statement for the KPIs that sum, one per stock ---------------------------
        base = [k for k in catalog.kpis_in_order() if k.is_base]
        staged = KpiInputs(d, workspace, base, _kinds_of(conn, d, workspace, base))
        scan = BaseScan()
        _scan(conn, d, staged, cells, scan)
        from esg_workbench.mapping import scope2

        # the Python part: its objects hold no cycles, and collecting them cost a fifth of it
        with _collector_paused():
            extra_lineage = scope2.allocate_instruments(conn, d, workspace, cells, catalog)
            months_seen = sorted({c.period for c in cells.values()})
            months = periods.month_range(months_seen[0], months_seen[-1]) if months_seen else []
            sites = sorted({c.site for c in cells.values() if c.site is not None})
            say(f"{len(cells)} site-month values from staging rows; {len(months)} months, {len(sites)} sites")
            gap_count = 0
            method = gaps.estimate_method(workspace, conn) if estimate is True else (estimate or None)
            site_cells = _site_cells_by_kpi(cells)  # (the empty values made below are of their own KPI)
            for kpi in base:
                _fill_missing(cells, kpi, months, site_cells.get(kpi.id, []))
                gap_count += gaps.flag_input_gaps(scan.by_source.get(kpi.id, []), cells, kpi, estimate=method)
            estimated = 0
            if method:
                site_cells = _site_cells_by_kpi(cells)  # (now with the empty values)
                estimated = sum(gaps.estimate(cells, kpi, method, site_cells.get(kpi.id, [])) for kpi in base)
                say(f"{estimated} missing site-month values estimated ({method})")
            # before totals and roll-ups, so that they carry it too
            incomplete = incomplete_source.flag_incomplete_sources(workspace, conn, d, staged, cells)
            gases.tag_gwp_sets(workspace, base, scan.factors, cells)  # gwp:<set> on emission values
            by_kpi: dict[str, list[Cell]] = {}  # the site-month values of each KPI (one pass, not one per KPI)
            for c in cells.values():
                by_kpi.setdefault(c.kpi, []).append(c)
            calendar = _Calendar(fiscal_start)
            for kpi in base:
                mine = by_kpi.get(kpi.id, [])
                kpi_months = sorted({c.period for c in mine})
                _flag_outliers(mine)
                _site_totals(cells, mine, kpi, kpi_months)
                _rollups(cells, kpi, kpi_months, sites, calendar)
            keys_of = _keys_by_kpi(cells)  # derived KPIs find their parts' values here, not by a pass over all
            for kpi in catalog.kpis_in_order():
                if not kpi.is_base:
                    (gases.derive_mass if kpi.rule == gases.MASS_RULE else _derive)(cells, kpi, keys_of)
            for cell in cells.values():
                if cell.value is not None and cell.value < 0:
                    cell.flag("negative")
            # --- hashes (parts before wholes), ids, rows ----------------------------------------------------
            places = _places(cells)
            ordered = _dependency_order(cells, places)
            _hash_results(ordered, cells, places, catalog.version)
            ids = _allocate_ids(conn, d, len(ordered))
            for cell, new_id in zip(ordered, ids):
                cell.id = new_id
            columns = _kpi_columns(ordered, cells)
        _bulk_insert(conn, d, columns, {"organization_id": org, "catalog_version": catalog.version, "run_id": run_id,
                                        "computed_at": utcnow()})
        # --- lineage of the base cells: derived, not stored ---------------------------------------------
        # A month-and-site value's staging rows are those its KPI's selection picks for that
        # site and month (drill_down runs _inputs_sql for them), so no link per row is
        # written: at a million readings those links were a third of the aggregation's time
        # and most of its memory. Only the contractual instruments scope2.py allocates are
        # linked in kpi_lineage.
        base_ids = {kpi.id for kpi in base}
        lineage = sum(c.input_rows for c in ordered if c.period_type == "month" and c.site is not None
                      and not c.parts and c.kpi in base_ids) - len(extra_lineage or [])
        if extra_lineage:  # the contractual instruments behind market-based and renewable values
            value_ids = {c.key: c.id for c in ordered}
            conn.execute(sa.insert(kpi_lineage), [
                dict(organization_id=org, kpi_value_id=value_ids[key], staging_row_id=row_id)
                for key, row_id in extra_lineage])
            lineage += len(extra_lineage)
        flags: dict[str, int] = {}
        for c in ordered:
            for f in c.quality:
                flags[f] = flags.get(f, 0) + 1
        output_hash = chain.sha256_json(sorted([c.kpi, c.site or "", c.period, c.result_hash] for c in ordered))
        chain.append(workspace, conn, "kpi.aggregate", actor=actor, output_hash=output_hash, metadata={
            "run_id": run_id, "values": len(ordered), "lineage_rows": lineage, "catalog_version": catalog.version,
            "months": [months[0], months[-1]] if months else [], "sites": len(sites), "flags": flags,
            "gaps": gap_count, "gap_estimate": method, "estimated": estimated,
            "incomplete_source": incomplete})
    return AggregateResult(run_id, len(ordered), sum(1 for c in ordered if c.period_type == "month" and c.site),
                           lineage, months, sites, time.monotonic() - started, flags, output_hash)


_KPI_COLUMNS = ("id", "organization_id", "site", "period", "period_type", "kpi", "value", "unit", "rule", "input_rows",
                "parts", "quality", "result_hash", "catalog_version", "run_id", "computed_at")


def _kpi_columns(ordered: list[Cell], cells: dict[tuple, Cell]) -> dict[str, list]:
    """The kpi_values columns of `ordered` (ids allocated) that differ from value to value."""
    # parts: json.dumps of a list of ids, '[3, 7]', written out; a list of flags is one of a
    # few dozen, each dumped once
    quality_texts: dict[tuple[str, ...], str] = {}

    def quality_text(quality: list[str]) -> str | None:
        if not quality:
            return None
        key = tuple(quality)
        text = quality_texts.get(key)
        if text is None:
            text = quality_texts[key] = json.dumps(quality)
        return text

    return {
        "id": [c.id for c in ordered], "site": [c.site for c in ordered], "period": [c.period for c in ordered],
        "period_type": [c.period_type for c in ordered], "kpi": [c.kpi for c in ordered],
        "value": [c.value for c in ordered], "unit": [c.unit for c in ordered], "rule": [c.rule for c in ordered],
        "input_rows": [c.input_rows for c in ordered],
        "parts": ["[" + ", ".join(map(str, sorted([cells[p].id for p in c.parts]))) + "]" if c.parts else None
                  for c in ordered],
        "quality": [quality_text(c.quality) for c in ordered], "result_hash": [c.result_hash for c in ordered],
    }


def _bulk_insert(conn, d: Dialect, columns: dict[str, list], same: dict[str, Any]) -> None:
    """kpi_values rows in one columnar insert (Arrow into DuckDB, executemany into
    PostgreSQL): `columns` (each a list) and the columns the same on every row (`same`:
    organization, catalog version, run, time)."""
    n = len(columns["id"])
    if not n:
        return
    names = ", ".join(_KPI_COLUMNS)
    if d.is_duckdb:
        import pyarrow as pa

        types = {"id": pa.int64(), "value": pa.float64(), "input_rows": pa.int64(), "computed_at": pa.timestamp("us")}
        # (a column the same on every row repeats one scalar: converting 25,000 datetimes took 20 ms)
        table = pa.table({c: pa.array(columns[c], types.get(c, pa.string())) if c in columns
                          else pa.repeat(pa.scalar(same[c], types.get(c, pa.string())), n) for c in _KPI_COLUMNS})
        raw = conn.connection.driver_connection
        raw.register("_esg_kpi_batch", table)
        try:
            raw.execute(f"INSERT INTO kpi_values ({names}) SELECT {names} FROM _esg_kpi_batch")
        finally:
            raw.unregister("_esg_kpi_batch")
        return
    cursor = conn.connection.driver_connection.cursor()
    marks = ", ".join(["%s"] * len(_KPI_COLUMNS))
    cursor.executemany(f"INSERT INTO kpi_values ({names}) VALUES ({marks})",
                       list(zip(*(columns[c] if c in columns else itertools.repeat(same[c], n) for c in _KPI_COLUMNS))))


def _sort_key(key: tuple) -> tuple:
    return (key[0], key[1] or "", key[2])


def _places(cells: dict[tuple, Cell]) -> dict[tuple, int]:
    """Each key's place in the order of _sort_key (keys that order alike share a place),
    so that sorting the parts of 25,000 values is a dictionary lookup per part, not a
    Python call."""
    decorated = sorted((k[0], k[1] or "", k[2], i, k) for i, k in enumerate(cells))
    places: dict[tuple, int] = {}
    place, last = -1, None
    for kpi, site, period, _, key in decorated:
        if (kpi, site, period) != last:
            place, last = place + 1, (kpi, site, period)
        places[key] = place
    return places


def _dependency_order(cells: dict[tuple, Cell], places: dict[tuple, int]) -> list[Cell]:
    """Every value after its parts: depth first from the keys in their sorted order
    (`places`: _places), each value's parts in their order (the ids follow this order)."""
    done: dict[tuple, Cell] = {}

    def visit(key: tuple) -> None:
        cell = cells[key]
        for p in cell.parts:
            if p not in done:
                visit(p)
        done[key] = cell

    for key in places:  # (in their sorted order already)
        if key not in done:
            visit(key)
    return list(done.values())


def _hash_results(ordered: list[Cell], cells: dict[tuple, Cell], places: dict[tuple, int], catalog_version: str) -> None:
    """Each value's result_hash (`ordered`: parts before wholes): over its inputs' hash (a
    base value) or its parts' result hashes in the order of their keys."""
    catalog_json = chain.canonical(catalog_version)
    place = places.__getitem__
    for cell in ordered:
        inputs = [cells[p].result_hash for p in sorted(cell.parts, key=place)] if cell.parts else cell.inputs
        cell.result_hash = hashlib.sha256(_result_text(cell, inputs, catalog_json).encode()).hexdigest()


_json_text = json.encoder.encode_basestring  # what json.dumps(..., ensure_ascii=False) writes for a str


def _result_text(cell: Cell, inputs: str | list[str] | None, catalog_json: str) -> str:
    """chain.canonical({"kpi", "site", "period", "value", "unit", "rule", "catalog", "inputs"})
    of a value, written out with its keys in their sorted order: json.dumps per value took
    four times as long (tests/mapping/test_aggregate_hash.py holds the two equal)."""
    if inputs is None:
        inputs_json = "null"
    elif isinstance(inputs, str):
        inputs_json = _json_text(inputs)
    else:
        inputs_json = "[" + ",".join(map(_json_text, inputs)) + "]"
    value = _fmt(cell.value)
    return (f'{{"catalog":{catalog_json},"inputs":{inputs_json},"kpi":{_json_text(cell.kpi)},'
            f'"period":{_json_text(cell.period)},"rule":{_json_text(cell.rule)},'
            f'"site":{"null" if cell.site is None else _json_text(cell.site)},'
            f'"unit":{"null" if cell.unit is None else _json_text(cell.unit)},'
            f'"value":{"null" if value is None else _json_text(value)}}}')


def _allocate_ids(conn, d: Dialect, n: int) -> list[int]:
    if n == 0:
        return []
    source = f"range({n})" if d.is_duckdb else f"generate_series(1, {n})"
    return [r[0] for r in conn.exec_driver_sql(f"SELECT nextval('kpi_values_id_seq') FROM {source}").all()]


def _site_cells_by_kpi(cells: dict[tuple, Cell]) -> dict[str, list[Cell]]:
    """The values of each KPI that have a site, in the order of `cells`."""
    out: dict[str, list[Cell]] = {}
    for c in cells.values():
        if c.site is not None:
            out.setdefault(c.kpi, []).append(c)
    return out


def _fill_missing(cells: dict[tuple, Cell], kpi: KpiDef, months: list[str], mine: list[Cell]) -> None:
    """A site that reports a KPI gets an empty, flagged value for every month it lacks
    within the months the KPI has data for. `mine`: the KPI's values with a site, in the
    order of `cells` (_site_cells_by_kpi)."""
    if not mine:
        return
    seen = sorted({c.period for c in mine})
    months = [m for m in months if seen[0] <= m <= seen[-1]]
    # in the sites' order: in a set's, which changes from one process to the next (with the
    # hash seed), so did the values' ids, the order of parts and of the flags a total takes
    # up, and the order of the terms of a total with estimated months
    for site in sorted({c.site for c in mine}):
        for month in months:
            if (kpi.id, site, month) not in cells:
                cells[(kpi.id, site, month)] = Cell(kpi.id, site, month, "month", None, kpi.unit, kpi.rule,
                                                    quality=["missing"])


def _flag_outliers(mine: list[Cell]) -> None:
    """`mine`: a KPI's site-month values."""
    by_site: dict[str, list[Cell]] = {}
    for c in mine:
        if c.site is not None and c.period_type == "month" and c.value is not None:
            by_site.setdefault(c.site, []).append(c)
    for series in by_site.values():
        if len(series) < OUTLIER_MIN_MONTHS:
            continue
        values = [c.value for c in series]
        median = statistics.median(values)
        mad = statistics.median(abs(v - median) for v in values)
        if mad == 0:
            continue
        for c in series:
            if abs(c.value - median) / (1.4826 * mad) > OUTLIER_Z:
                c.flag("outlier")


def _pass_up(cell: Cell, parts: list[Cell], keep: Callable[[str], bool]) -> None:
    """The flags of `parts` that `keep` takes join the cell's, in their order, each once
    (what cell.flag() for each of them does, without a scan of the list per flag)."""
    cell.quality = list(dict.fromkeys([*cell.quality, *(f for c in parts for f in c.quality if keep(f))]))


def _passed_up(flag: str) -> bool:
    return flag not in NOT_PASSED_UP


def _not_missing(flag: str) -> bool:
    return flag != "missing"


def _passed_to_rollups(flag: str) -> bool:
    return flag not in NOT_PASSED_UP and flag != "partial" and flag != "not_period_end"


def _site_totals(cells: dict[tuple, Cell], mine: list[Cell], kpi: KpiDef, months: list[str]) -> None:
    """Organization total per month: the sum over sites (stocks too: each site's stock).
    `mine`: the KPI's site-month values."""
    by_month: dict[str, list[Cell]] = {}
    for c in mine:
        if c.site is not None and c.period_type == "month":
            by_month.setdefault(c.period, []).append(c)
    for month in months:
        parts = by_month.get(month)
        if not parts:
            continue
        known = [c.value for c in parts if c.value is not None]
        total = Cell(kpi.id, None, month, "month", sum(known) if known else None, kpi.unit, kpi.rule,
                     sum(c.input_rows for c in parts), parts=[c.key for c in parts])
        if len(known) < len(parts):
            total.flag("partial")
        _pass_up(total, parts, _passed_up)
        cells[total.key] = total


class _Calendar:
    """The quarter and year of each month and the months of each quarter and year, for
    one fiscal year start: worked out once per recompute, not once per KPI and site."""

    def __init__(self, fiscal_start: int):
        self.fiscal_start = fiscal_start
        self._rollups: dict[str, tuple[str, str]] = {}
        self._months: dict[str, list[str]] = {}

    def rollups(self, month: str) -> tuple[str, str]:
        found = self._rollups.get(month)
        if found is None:
            found = self._rollups[month] = periods.rollups(month, self.fiscal_start)
        return found

    def months(self, label: str) -> list[str]:
        found = self._months.get(label)
        if found is None:
            found = self._months[label] = periods.parse_period(label, self.fiscal_start).months()
        return found


def _rollups(cells: dict[tuple, Cell], kpi: KpiDef, months: list[str], sites: list[str], calendar: _Calendar) -> None:
    groups: dict[tuple[str | None, str, str], list[Cell]] = {}
    for month in months:
        quarter, year = calendar.rollups(month)
        for site in [*sites, None]:
            cell = cells.get((kpi.id, site, month))
            if cell is None:
                continue
            groups.setdefault((site, quarter, "quarter"), []).append(cell)
            groups.setdefault((site, year, "year"), []).append(cell)
    for (site, label, kind), parts in groups.items():
        period_months = calendar.months(label)
        expected = [m for m in period_months if months and months[0] <= m <= months[-1]]
        if kpi.rule == "stock":
            by_month = {c.period: c for c in parts}
            last = next((by_month[m] for m in reversed(expected) if m in by_month and by_month[m].value is not None), None)
            cell = Cell(kpi.id, site, label, kind, last.value if last else None, kpi.unit, kpi.rule,
                        last.input_rows if last else 0, parts=[last.key] if last else [])
            if last is None:
                cell.flag("missing")
            elif last.period != period_months[-1]:
                cell.flag("not_period_end")
        else:
            known = [c for c in parts if c.value is not None]
            cell = Cell(kpi.id, site, label, kind, sum(c.value for c in known) if known else None, kpi.unit, kpi.rule,
                        sum(c.input_rows for c in parts), parts=[c.key for c in parts])
            if len(known) < len(expected) or any("partial" in c.quality for c in parts):
                cell.flag("partial" if known else "missing")
        _pass_up(cell, parts, _passed_to_rollups)
        cells[cell.key] = cell


def _keys_by_kpi(cells: dict[tuple, Cell]) -> dict[str, dict[tuple, None]]:
    """The keys of each KPI's values, in the order of `cells` (a dict as an ordered set:
    _derive and gases.derive_mass add the keys of the values they make)."""
    out: dict[str, dict[tuple, None]] = {}
    for key in cells:
        out.setdefault(key[0], {})[key] = None
    return out


def _derive(cells: dict[tuple, Cell], kpi: KpiDef, keys_of: dict[str, dict[tuple, None]] | None = None) -> None:
    """The values of a `ratio` or `linear` KPI, for every site and period one of its parts
    has (`keys_of`: _keys_by_kpi, which it updates)."""
    keys_of = _keys_by_kpi(cells) if keys_of is None else keys_of
    of = kpi.parts  # (a property that builds a list)
    keys = dict.fromkeys((cells[key].site, cells[key].period, cells[key].period_type)
                         for part in dict.fromkeys(of) for key in keys_of.get(part, ()))
    mine = keys_of.setdefault(kpi.id, {})
    for site, period, kind in keys:
        parts = {p: cells.get((p, site, period)) for p in of}
        present = [c for c in parts.values() if c is not None]
        if kpi.rule == "ratio":
            num, den = parts[kpi.numerator], parts[kpi.denominator]
            value = None
            if num is not None and den is not None and num.value is not None and den.value:
                value = num.value / den.value * kpi.multiplier
            cell = Cell(kpi.id, site, period, kind, value, kpi.unit, kpi.rule, parts=[c.key for c in present])
            if value is None:
                cell.flag("missing")
        else:
            known = [(kpi.terms[p], c) for p, c in parts.items() if c is not None and c.value is not None]
            value = sum(coef * c.value for coef, c in known) if known else None
            cell = Cell(kpi.id, site, period, kind, value, kpi.unit, kpi.rule, parts=[c.key for c in present])
            if len(known) < len(parts):
                cell.flag("partial" if known else "missing")
        _pass_up(cell, present, _not_missing)
        cells[cell.key] = cell
        mine[cell.key] = None


# --- reading KPIs ------------------------------------------------------------------------------------

def kpi_rows(workspace: Workspace, *, period: str | None = None, period_type: str | None = None,
             kpis: Iterable[str] | None = None, site: str | None | bool = False) -> list[dict[str, Any]]:
    """Stored KPI values. `period`: '2024-03', '2024-Q1', '2024' (that period only);
    `period_type`: month | quarter | year; `site`: a site, None for organization totals,
    False (default) for all."""
    t = kpi_values
    query = sa.select(t).where(t.c.organization_id == workspace.organization_id)
    if period:
        query = query.where(t.c.period == period)
    if period_type:
        query = query.where(t.c.period_type == period_type)
    if kpis:
        query = query.where(t.c.kpi.in_(list(kpis)))
    if site is None:
        query = query.where(t.c.site.is_(None))
    elif site is not False:
        query = query.where(t.c.site == site)
    with workspace.read() as conn:
        rows = conn.execute(query.order_by(t.c.kpi, t.c.period, t.c.site)).all()
    out = []
    for r in rows:
        row = dict(r._mapping)
        row["quality"] = json.loads(row["quality"]) if row["quality"] else []
        row["parts"] = json.loads(row["parts"]) if row["parts"] else []
        out.append(row)
    return out


def drill_down(workspace: Workspace, kpi_value_id: int, *, limit: int = 1000) -> dict[str, Any]:
    """A KPI value, the values it was computed from, and the staging rows and source keys
    behind it (down through roll-ups, totals and ratios)."""
    with workspace.read() as conn:
        row = conn.execute(sa.select(kpi_values).where(kpi_values.c.organization_id == workspace.organization_id,
                                                       kpi_values.c.id == kpi_value_id)).first()
        if row is None:
            raise NotFound(f"There is no KPI value {kpi_value_id}.")
        base_ids, seen, frontier = [], set(), [row]
        parts_rows = []
        while frontier:
            nxt = []
            for r in frontier:
                if r.id in seen:
                    continue
                seen.add(r.id)
                ids = json.loads(r.parts) if r.parts else []
                if not ids:
                    base_ids.append(r.id)
                    continue
                children = conn.execute(sa.select(kpi_values).where(kpi_values.c.id.in_(ids))).all()
                if r.id == row.id:
                    parts_rows = [dict(c._mapping) for c in children]
                nxt += children
            frontier = nxt
        ids_sql = _lineage_ids_sql(workspace, conn, base_ids)
        count, staging = 0, []
        if ids_sql is not None:
            # the ids are found and counted once, and only the first `limit` rows are read whole
            # (their id range lets the scan skip the row groups outside it)
            first = conn.exec_driver_sql(
                f"SELECT id, count(*) OVER () FROM ({ids_sql}) x ORDER BY id LIMIT {int(limit)}").all()
            count = first[0][1] if first else 0
            ids = ", ".join(str(int(i)) for i, _ in first)
            staging = [dict(r._mapping) for r in conn.exec_driver_sql(
                f"SELECT s.* FROM staging_rows s WHERE s.id BETWEEN {first[0][0]} AND {first[-1][0]} "
                f"AND s.id IN ({ids}) ORDER BY s.id")] if first else []
    staging_rows = staging
    return {
        "value": dict(row._mapping), "parts": parts_rows, "staging_row_count": count, "staging_rows": staging_rows,
        "source_keys": sorted({(r["connector_id"], r["source_table"], r["source_key"]) for r in staging_rows}),
    }


def _lineage_ids_sql(workspace: Workspace, conn, value_ids: list[int]) -> str | None:
    """The ids of the staging rows behind base KPI values, as SQL: for each month-and-site
    value the rows its KPI's selection picks for that site and month (the query that
    computed it), and the instrument rows linked in kpi_lineage."""
    if not value_ids:
        return None
    d = dialect_of(workspace)
    catalog = load_catalog()
    rows = conn.execute(sa.select(kpi_values.c.kpi, kpi_values.c.site, kpi_values.c.period).where(
        kpi_values.c.organization_id == workspace.organization_id, kpi_values.c.id.in_(value_ids),
        kpi_values.c.period_type == "month", kpi_values.c.site.is_not(None), kpi_values.c.input_rows > 0)).all()
    by_kpi: dict[str, list[tuple[str, str]]] = {}
    for kpi_id, site, period in rows:
        by_kpi.setdefault(kpi_id, []).append((site, period))
    linked = (f"FROM kpi_lineage l WHERE l.organization_id = {d.literal(workspace.organization_id)} "
              f"AND l.kpi_value_id IN ({', '.join(str(int(i)) for i in value_ids)})")
    links = f"SELECT l.staging_row_id AS id {linked}"

    def unlinked(row_id: str) -> str:  # (an anti-join: NOT IN would be a mark join, slower)
        return f"NOT EXISTS (SELECT 1 {linked} AND l.staging_row_id = {row_id})"

    # one row per link: an instrument allocated to twelve months counts in each of them, as
    # in input_rows; rows a value stored before lineage was derived still links to, once
    parts = [links]
    for kpi_id, pairs in sorted(by_kpi.items()):
        kpi = catalog.kpi(kpi_id)
        if kpi is None or not kpi.is_base:
            continue
        sites = sorted({site for site, _ in pairs})
        months = sorted({period for _, period in pairs})
        # sites and months narrow the scan; the pairs pick exactly the values asked for
        extra = [f"s.site IN ({', '.join(d.literal(x) for x in sites)})",
                 f"s.period IN ({', '.join(d.literal(x) for x in months)})"]
        # (a period label has no space, so period + ' ' + site names one pair)
        pair_list = ", ".join(d.literal(f"{b} {a}") for a, b in sorted(pairs))
        wanted = (lambda t: f"{t}.period || ' ' || {t}.site IN ({pair_list})") \
            if len(pairs) < len(sites) * len(months) else (lambda t: "TRUE")
        if kpi.rule == "stock":  # the rows of the month's last date: the query that computed the value
            parts.append(f"SELECT i.id FROM ({_inputs_sql(d, workspace, kpi, {}, extra)}) i WHERE {wanted('i')} "
                         f"AND {unlinked('i.id')}")
        else:
            parts.append(f"SELECT s.id FROM staging_rows s WHERE {' AND '.join(_selection(d, workspace, kpi, extra))} "
                         f"AND {wanted('s')} AND {unlinked('s.id')}")
    return " UNION ALL ".join(parts)


def find_value(workspace: Workspace, kpi: str, period: str, site: str | None) -> dict[str, Any] | None:
    rows = kpi_rows(workspace, period=period, kpis=[kpi], site=site)
    return rows[0] if rows else None
