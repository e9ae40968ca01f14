"""MySQL / MariaDB source types: what each lands as, and how the read query selects it.

One table (`MYSQL_TYPES`, keyed by information_schema's DATA_TYPE) names the workspace
type a user sees, the coarse family, and how the query reads the column (`read`), which
is where ConnectorX's gaps are closed (see mysql.py for the measurements):

* ``native``: as ConnectorX reads it.
* ``decimal``: DECIMAL(p, s) with at most 18 integer digits and scale <= 10 natively
  (ConnectorX's 96-bit decimal holds 28 digits at a fixed scale of 10: DECIMAL(24,4)
  and wider integer parts fail or lose digits), others as ``CAST(c AS CHAR)``, which
  MySQL prints exactly, then parsed into DECIMAL(p, s) (decimal256 beyond 38 digits,
  which lands as exact text in DuckDB, whose DECIMAL holds 38 digits).
* ``zero_dates``: ``CASE WHEN MONTH(c) = 0 OR DAYOFMONTH(c) = 0 THEN NULL ELSE c END``:
  zero and partial-zero dates ('0000-00-00', '2024-00-00') are "no date" in MySQL's
  words and land as NULL; a flag column beside it counts them per column for the run.
* ``interval``: TIME is a signed duration up to +-838:59:59.999999 (MySQL: "elapsed time
  or a time interval", not only a time of day): read as microseconds and landed as
  INTERVAL, so values outside 00:00-24:00 and negative ones land like any other.
* ``bits``: BIT(n) as its n-digit bit string (``LPAD(BIN(c), n, '0')``), landed as BIT.
* ``wkb``: spatial values as WKB (``ST_AsBinary``), which ConnectorX cannot read natively.
* ``char``: ``CAST(c AS CHAR)``: types read as text (INET4/INET6, MariaDB's UUID, parsed
  into UUID by the workspace) and any type this table does not know, which the run then
  reports as "landed as text".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MyType:
    landed: str  # the DuckDB workspace type a user sees
    family: str  # core.specs.ColumnInfo.family
    read: str  # native | decimal | zero_dates | interval | bits | wkb | char
    workspace: str | None = None  # text parsed into this workspace type (raw_tables.TEXT_TYPES)


_TEXT = MyType("VARCHAR", "text", "native")
_BLOB = MyType("BLOB", "binary", "native")
_WKB = MyType("BLOB (WKB)", "binary", "wkb")

MYSQL_TYPES: dict[str, MyType] = {
    "tinyint": MyType("TINYINT (BOOLEAN too: MySQL stores any small integer there)", "integer", "native"),
    "smallint": MyType("SMALLINT", "integer", "native"),
    "mediumint": MyType("INTEGER", "integer", "native"),
    "int": MyType("INTEGER", "integer", "native"),
    "bigint": MyType("BIGINT (UBIGINT if unsigned)", "integer", "native"),
    "decimal": MyType("DECIMAL(p,s) / VARCHAR (p > 38)", "decimal", "decimal"),
    "float": MyType("DOUBLE", "float", "native"),
    "double": MyType("DOUBLE", "float", "native"),
    "date": MyType("DATE", "date", "zero_dates"),
    "datetime": MyType("TIMESTAMP", "timestamp", "zero_dates"),
    "timestamp": MyType("TIMESTAMP (UTC)", "timestamp", "zero_dates"),
    "time": MyType("INTERVAL", "other", "interval"),
    "year": MyType("SMALLINT", "integer", "native"),
    "char": _TEXT, "varchar": _TEXT, "tinytext": _TEXT, "text": _TEXT, "mediumtext": _TEXT,
    "longtext": _TEXT,  # MariaDB's JSON too
    "json": MyType("VARCHAR (JSON text)", "json", "native"),
    "enum": _TEXT, "set": _TEXT,
    "binary": _BLOB, "varbinary": _BLOB, "tinyblob": _BLOB, "blob": _BLOB, "mediumblob": _BLOB, "longblob": _BLOB,
    "bit": MyType("BIT", "other", "bits", workspace="bit"),
    "geometry": _WKB, "point": _WKB, "linestring": _WKB, "polygon": _WKB, "multipoint": _WKB,
    "multilinestring": _WKB, "multipolygon": _WKB, "geometrycollection": _WKB, "geomcollection": _WKB,
    "inet4": MyType("VARCHAR", "text", "char"),
    "inet6": MyType("VARCHAR", "text", "char"),
    "uuid": MyType("UUID", "text", "char", workspace="uuid"),
}

#: a type nobody listed: its text form, and the run says so
UNKNOWN = MyType("VARCHAR (landed as text)", "text", "char")

#: ConnectorX's rust_decimal holds at most 28 digits; its Arrow type keeps 10 decimals
CX_DECIMAL_DIGITS = 28
CX_DECIMAL_SCALE = 10


@dataclass(frozen=True)
class SourceColumn:
    """A column as information_schema.columns describes it."""

    name: str
    data_type: str  # e.g. decimal
    column_type: str  # e.g. decimal(24,4) unsigned
    precision: int | None = None
    scale: int | None = None
    bits: int | None = None  # BIT(n)


CATALOG_SQL = (
    "SELECT column_name, data_type, column_type, numeric_precision, numeric_scale "
    "FROM information_schema.columns WHERE table_schema = :schema AND table_name = :table "
    "ORDER BY ordinal_position"
)


def source_columns(rows) -> dict[str, SourceColumn]:
    out = {}
    for name, data_type, column_type, precision, scale in rows:
        data_type = str(data_type).lower()
        bits = int(precision) if data_type == "bit" and precision is not None else None
        out[name] = SourceColumn(name, data_type, str(column_type).lower(),
                                 None if precision is None else int(precision), None if scale is None else int(scale),
                                 bits)
    return out


def rule_of(column: SourceColumn) -> MyType:
    return MYSQL_TYPES.get(column.data_type) or MYSQL_TYPES.get(column.data_type.split()[0]) or UNKNOWN


def decimal_natively(precision: int, scale: int) -> bool:
    """Whether ConnectorX reads DECIMAL(p, s) exactly: its fixed scale of 10 plus the
    integer digits must fit its 28 digits."""
    return scale <= CX_DECIMAL_SCALE and (precision - scale) + CX_DECIMAL_SCALE <= CX_DECIMAL_DIGITS


def landed_as(column: SourceColumn) -> str:
    rule = rule_of(column)
    if rule.read == "decimal" and column.precision is not None:
        return f"DECIMAL({column.precision},{column.scale or 0})" if column.precision <= 38 else "VARCHAR"
    return rule.landed
