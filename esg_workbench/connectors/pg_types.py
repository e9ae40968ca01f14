"""PostgreSQL source types: what each lands as in the workspace, and how it is read.

One table (`PG_TYPES`) maps a PostgreSQL type to the workspace type a user sees, its
coarse family, and what the read does when ADBC (the Arrow reader) cannot decode the type
itself: a cast in the source query (`cast`, usually to text, which PostgreSQL writes in
its own notation), a workspace type the text is parsed into on insert (`workspace`:
see raw_tables.TEXT_TYPES), and a fix applied to every Arrow batch (`fix`, in `FIXES`).
Like DuckDB's postgres scanner, a type the table does not know (an extension's type, a
user-defined base type) is read as its text form and the run says "landed as text".

Enums land as text, composite types as JSON text (`to_json`), arrays as lists of their
element's landed type where ADBC decodes the element and as lists of text (or JSON text
for composite elements) where it does not; `numeric[]` as DOUBLE lists.

numeric(p, s):
* p <= 18: read as scaled bigints (`value * 10^s`, fast; see postgres.py) and viewed as
  DECIMAL(p, s); NaN is sent as a sentinel no scaled value can have and lands as NULL;
* p <= 38: DECIMAL(p, s) from ADBC's text; NaN lands as NULL;
* p > 38: decimal256 (exact keys and checkpoints), landed as exact text in DuckDB,
  whose DECIMAL holds 38 digits, and as numeric(p, s) in a PostgreSQL workspace;
* numeric without (p, s): DOUBLE, as DuckDB's postgres scanner does (NaN and the
  infinities are kept).
Every NaN landed as NULL is counted and reported with the run.

date / timestamp / timestamptz: ADBC shifts PostgreSQL's epoch (2000) to Arrow's (1970),
which wraps PostgreSQL's `infinity` / `-infinity` into far-BC values; they become DuckDB's
own infinities. A finite value beyond what Arrow's microseconds hold (after 294247 AD)
lands as NULL and is counted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import pyarrow as pa



@dataclass(frozen=True)
class PgType:
    landed: str  # the DuckDB workspace type a user sees
    family: str  # core.specs.ColumnInfo.family
    cast: str | None = None  # the source query reads CAST(column AS cast)
    workspace: str | None = None  # text parsed into this workspace type (raw_tables.TEXT_TYPES)
    fix: str | None = None  # Arrow fix of every batch (FIXES)


_TEXT = PgType("VARCHAR", "text", cast="text")

PG_TYPES: dict[str, PgType] = {
    "bool": PgType("BOOLEAN", "boolean"),
    "int2": PgType("SMALLINT", "integer"),
    "int4": PgType("INTEGER", "integer"),
    "int8": PgType("BIGINT", "integer"),
    "oid": PgType("BIGINT", "integer", cast="bigint"),  # unsigned 32 bits: ADBC's int32 wraps
    "float4": PgType("FLOAT", "float"),
    "float8": PgType("DOUBLE", "float"),
    "numeric": PgType("DECIMAL(p,s) / VARCHAR (p > 38) / DOUBLE (no p)", "decimal", fix="numeric"),
    "money": PgType("DECIMAL(19,s)", "decimal", fix="money"),  # s: the server's lc_monetary digits
    "text": PgType("VARCHAR", "text"),
    "varchar": PgType("VARCHAR", "text"),
    "bpchar": PgType("VARCHAR", "text"),  # char(n) keeps its padding
    "name": PgType("VARCHAR", "text"),
    "char": PgType("VARCHAR", "text"),
    "citext": _TEXT,
    "bytea": PgType("BLOB", "binary"),
    "date": PgType("DATE", "date", fix="date"),
    "timestamp": PgType("TIMESTAMP", "timestamp", fix="timestamp"),
    "timestamptz": PgType("TIMESTAMP WITH TIME ZONE", "timestamptz", fix="timestamp"),
    "time": PgType("TIME", "time"),
    "timetz": PgType("TIME WITH TIME ZONE", "time", cast="text", workspace="timetz"),
    "interval": PgType("INTERVAL", "other"),
    "uuid": PgType("UUID", "text", cast="text", workspace="uuid"),
    "json": PgType("VARCHAR (JSON text)", "json", fix="plain"),
    "jsonb": PgType("VARCHAR (JSON text)", "json", fix="plain"),
    "bit": PgType("BIT", "other", cast="text", workspace="bit", fix="bits"),
    "varbit": PgType("BIT", "other", cast="text", workspace="bit", fix="bits"),
    # read as PostgreSQL's own text notation
    "inet": _TEXT, "cidr": _TEXT, "macaddr": _TEXT, "macaddr8": _TEXT,
    "point": _TEXT, "line": _TEXT, "lseg": _TEXT, "box": _TEXT, "path": _TEXT, "polygon": _TEXT,
    "circle": _TEXT, "tsvector": _TEXT, "tsquery": _TEXT, "hstore": _TEXT, "pg_lsn": _TEXT,
    "xml": _TEXT, "xid": _TEXT, "xid8": _TEXT, "cid": _TEXT, "tid": _TEXT, "txid_snapshot": _TEXT,
    "pg_snapshot": _TEXT, "regclass": _TEXT, "regtype": _TEXT, "regproc": _TEXT,
}

#: by pg_type.typtype, for types not named above
KIND_TYPES: dict[str, PgType] = {
    "e": PgType("VARCHAR", "text"),  # enum: ADBC reads the label
    "c": PgType("VARCHAR (JSON text)", "json", cast="json"),  # composite: to_json(column)::text
    "r": _TEXT,  # range
    "m": _TEXT,  # multirange
}

#: a type nobody listed: its text form, and the run says so
UNKNOWN = dataclasses.replace(_TEXT, landed="VARCHAR (landed as text)")

#: array elements ADBC decodes into plain Arrow lists
_LIST_ELEMENTS = {"bool", "int2", "int4", "int8", "float4", "float8", "text", "varchar", "bpchar", "name",
                  "char", "bytea", "date", "timestamp", "timestamptz", "time", "interval", "json", "jsonb"}


@dataclass(frozen=True)
class SourceColumn:
    """A column as PostgreSQL's catalog describes it (domains resolved to their base)."""

    name: str
    typname: str
    typtype: str  # b base, c composite, e enum, r range, m multirange, p pseudo
    typmod: int = -1
    element: "SourceColumn | None" = None  # of an array
    declared: str = ""  # as format_type() writes it, e.g. "numeric(10,2)[]"


#: the catalog query behind SourceColumn: one row per column, domains resolved one level
CATALOG_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod),
       t.typname, t.typtype, CASE WHEN d.typtype = 'd' THEN d.typtypmod ELSE a.atttypmod END,
       e.typname, e.typtype
FROM pg_attribute a
JOIN pg_type d ON d.oid = a.atttypid
JOIN pg_type t ON t.oid = CASE WHEN d.typtype = 'd' THEN d.typbasetype ELSE d.oid END
LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
WHERE a.attrelid = to_regclass(quote_ident(:schema) || '.' || quote_ident(:table)) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def source_columns(rows) -> dict[str, SourceColumn]:
    out = {}
    for name, declared, typname, typtype, typmod, elem_name, elem_type in rows:
        element = SourceColumn(name, elem_name, elem_type, typmod) if elem_name else None
        out[name] = SourceColumn(name, typname, typtype, typmod if typmod is not None else -1, element, declared)
    return out


def rule_of(column: SourceColumn) -> PgType:
    """The table's entry for a column (arrays: see array_rule)."""
    if column.element is not None:
        return array_rule(column.element)
    return PG_TYPES.get(column.typname) or KIND_TYPES.get(column.typtype) or UNKNOWN


def array_rule(element: SourceColumn) -> PgType:
    if element.typname == "numeric":
        return PgType("DOUBLE[]", "other", cast="float8[]")
    if element.typname in _LIST_ELEMENTS:
        inner = PG_TYPES[element.typname]
        return PgType(f"{inner.landed}[]", "other", fix="list_" + (inner.fix or "plain"))
    if element.typtype == "c":
        return PgType("VARCHAR (JSON text)", "json", cast="json")
    return PgType("VARCHAR[] (text of each element)", "other", cast="text[]")


def family_of_name(type_name: str) -> str | None:
    """The family of a type by the name discovery shows ("INET", "MONEY"), if the table has it."""
    rule = PG_TYPES.get(type_name.lower().split("(")[0].strip())
    return rule.family if rule else None


def numeric_shape(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of numeric(p, s), None for an unconstrained numeric."""
    if typmod is None or typmod < 4:
        return None
    return (typmod - 4) >> 16, (typmod - 4) & 0xFFFF


def landed_as(column: SourceColumn) -> str:
    """The workspace type a column lands as, for discovery and the README's table."""
    rule = rule_of(column)
    if column.element is None and column.typname == "numeric":
        shape = numeric_shape(column.typmod)
        if shape is None:
            return "DOUBLE"
        return f"DECIMAL({shape[0]},{shape[1]})" if shape[0] <= 38 else "VARCHAR (exact text)"
    return rule.landed


# --- Arrow fixes ------------------------------------------------------------------------------
# Each takes (array, column, counts) and returns the array to land; `counts` collects
# "what happened to how many values" per column for the run's warnings.

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 - 1970-01-01 in microseconds
_PG_EPOCH_DAYS = 10_957
#: the sentinel a scaled numeric(p <= 18, s) NaN is sent as (no |value * 10^s| reaches it)
NAN_SENTINEL = _INT64_MIN


def _count(counts: dict, column: str, what: str, n: int) -> None:
    if n:
        per = counts.setdefault(column, {})
        per[what] = per.get(what, 0) + int(n)


def _plain(array, column, counts):
    import pyarrow as pa

    return array.storage if isinstance(array.type, pa.BaseExtensionType) else array


def _infinities(array, column, counts, bits: int, offset: int, dtype):
    """Undo ADBC's wrap of PostgreSQL's infinities; values it wrapped that are finite are
    beyond what the workspace can hold: NULL, counted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lowest = (_INT64_MIN if bits == 64 else _INT32_MIN)
    top = (_INT64_MAX if bits == 64 else _INT32_MAX)
    itype = pa.int64() if bits == 64 else pa.int32()
    raw = array.view(itype)
    floor = lowest + offset  # -infinity arrives exactly here, +infinity one below
    wrapped = pc.less_equal(raw, floor)
    if not pc.any(wrapped).as_py():
        return array
    plus = pc.equal(raw, floor - 1)
    minus = pc.equal(raw, floor)
    beyond = pc.and_(wrapped, pc.invert(pc.or_(plus, minus)))
    _count(counts, column, "values beyond the workspace's date range landed as NULL", pc.sum(beyond).as_py() or 0)
    fixed = pc.if_else(plus, pa.scalar(top, itype), raw)
    fixed = pc.if_else(minus, pa.scalar(-top, itype), fixed)  # DuckDB's -infinity is -max
    fixed = pc.if_else(beyond, pa.scalar(None, itype), fixed)
    return fixed.cast(dtype)


def _timestamp(array, column, counts):
    return _infinities(array, column, counts, 64, _PG_EPOCH_US, array.type)


def _date(array, column, counts):
    return _infinities(array, column, counts, 32, _PG_EPOCH_DAYS, array.type)


def _bits(array, column, counts):
    """DuckDB's BIT cannot be empty: an empty varbit lands as NULL, counted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = _plain(array, column, counts)
    empty = pc.equal(pc.utf8_length(array), 0)
    n = pc.sum(empty).as_py() or 0
    if not n:
        return array
    _count(counts, column, "empty bit strings landed as NULL", n)
    return pc.if_else(empty, pa.scalar(None, array.type), array)


def _nan_to_null(array, column, counts, target):
    """numeric text (ADBC writes NaN as 'nan') cast to decimal; NaN lands as NULL, counted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = _plain(array, column, counts)
    nan = pc.equal(pc.utf8_lower(text), "nan")
    n = pc.sum(nan).as_py() or 0
    if n:
        _count(counts, column, "NaN values landed as NULL", n)
        text = pc.if_else(nan, pa.scalar(None, text.type), text)
    return text.cast(target)


def _scaled(array, column, counts, precision: int, scale: int, nan_sentinel: bool = True):
    """int64 (value * 10^s) viewed as decimal128(p, s); the NaN sentinel lands as NULL
    (money has no NaN: there the sentinel is its minimum)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    nan = pc.equal(array, NAN_SENTINEL)
    n = (pc.sum(nan).as_py() or 0) if nan_sentinel else 0
    if n:
        _count(counts, column, "NaN values landed as NULL", n)
        array = pc.if_else(nan, pa.scalar(None, pa.int64()), array)
    # int64 -> decimal128(38, 0) keeps the integers; decimal128(p, s) has the same layout,
    # so the view only reinterprets them as value / 10^s
    return array.cast(pa.decimal128(38, 0)).view(pa.decimal128(precision, scale))


def _list_of(fix: Callable):
    def apply(array, column, counts):
        import pyarrow as pa

        values = fix(array.values, column, counts)
        if values is array.values:
            return array
        return pa.ListArray.from_arrays(array.offsets, values, mask=array.is_null())

    return apply


FIXES: dict[str, Callable] = {
    "plain": _plain,
    "timestamp": _timestamp,
    "date": _date,
    "bits": _bits,
}
FIXES.update({f"list_{name}": _list_of(fix) for name, fix in list(FIXES.items())})
