"""Raw landed tables: one per source stream, typed from the source's Arrow schema.

Bulk paths stay columnar: Arrow batches go into DuckDB by scanning the Arrow data
in place (`INSERT ... BY NAME SELECT ... FROM batch`), and into PostgreSQL by COPY.
Every raw row carries lineage: the sync run and the ledger chunk that landed it.

On a shared (secured) PostgreSQL workspace a raw table also carries its organization
(`_esg_organization_id`), belongs to the workspace's owner and has row-level security
like every other table (postgres_security.py). Analysts may not alter it: its definition
changes only through the owner's esg_raw_* functions (raw_table_security.py), which take
a table name, column names and types from a fixed list, so nothing an analyst adds to a
raw table can run in a colleague's session. PostgreSQL refuses COPY FROM into a table
with row-level security, so there a batch is copied into a temporary table (no security
needed: only this session sees it) and inserted from it in one statement.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import re
from typing import TYPE_CHECKING

import sqlalchemy as sa

from esg_workbench.core.specs import WORKSPACE_TYPE_KEY
from esg_workbench.workspace.database import Workspace, utcnow

if TYPE_CHECKING:
    import pyarrow as pa

LINEAGE_COLUMNS = ("_esg_sync_id", "_esg_chunk_id", "_esg_landed_at")


def raw_table_name(connector_id: str, stream: str) -> str:
    """A plain ASCII name, stable per connector and stream, whatever the source calls it."""
    slug = re.sub(r"[^a-z0-9]+", "_", stream.lower()).strip("_")[:40] or "table"
    digest = hashlib.sha1(f"{connector_id}\0{stream}".encode()).hexdigest()[:8]
    return f"raw_{slug}_{digest}"


#: columns the workspace adds to raw tables (lineage, deletion marks, the organization of
#: a secured workspace): a source column of such a name lands renamed (landing_names)
WORKSPACE_COLUMNS = (*LINEAGE_COLUMNS, "_esg_deleted_at", "_esg_organization_id")


def landing_names(names: list[str]) -> dict[str, str]:
    """Source column -> the name it lands under, for the columns that cannot keep theirs:
    a name of the workspace's own columns (WORKSPACE_COLUMNS, in any case) lands as
    `src_esg_*`; a name equal to an earlier one but for case (`val`, `VAL`, `Val`: one
    column to DuckDB) gets `_2`, `_3`, ... in source column order. Deterministic, so
    every chunk and every later sync of the table lands the same way. (Other `_esg_*`
    columns, such as a file connector's `_esg_file`, keep their names.)"""
    reserved = {c.lower() for c in WORKSPACE_COLUMNS}
    sources = {n.lower() for n in names}
    seen: set[str] = set()
    renamed = {}
    for name in names:
        wanted = "src" + name if name.lower() in reserved else name
        landed, n = wanted, 1
        # never a name already landed, nor (when renamed) another source column's name
        while landed.lower() in seen or (landed != name and landed.lower() in sources):
            n += 1
            landed = f"{wanted}_{n}"
        seen.add(landed.lower())
        if landed != name:
            renamed[name] = landed
    return renamed


def with_landing_names(batch: "pa.Table") -> tuple["pa.Table", dict[str, str]]:
    """The batch with its columns under their landing names (landing_names), and those."""
    renamed = landing_names(batch.column_names)
    if not renamed:
        return batch, renamed
    return batch.rename_columns([renamed.get(n, n) for n in batch.column_names]), renamed


def shadow_table_name(raw_table: str, sync_id: int) -> str:
    return f"{raw_table}__shadow_{sync_id}"


def _q(workspace: Workspace, name: str) -> str:
    """Always quoted: DuckDB reserves words SQLAlchemy's dialect does not know (`at`, say)."""
    return workspace.engine.dialect.identifier_preparer.quote_identifier(name)


def _pg_type(arrow_type: "pa.DataType") -> str:
    """The PostgreSQL type for an Arrow type, spelled as format_type() spells it."""
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_boolean(arrow_type):
        return "boolean"
    if t.is_int8(arrow_type) or t.is_int16(arrow_type) or t.is_uint8(arrow_type):
        return "smallint"
    if t.is_int32(arrow_type) or t.is_uint16(arrow_type):
        return "integer"
    if t.is_integer(arrow_type):
        return "bigint" if not t.is_uint64(arrow_type) else "numeric(20,0)"
    if t.is_floating(arrow_type):
        return "real" if t.is_float32(arrow_type) else "double precision"
    if t.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    if t.is_timestamp(arrow_type):
        return "timestamp with time zone" if arrow_type.tz else "timestamp without time zone"
    if t.is_date(arrow_type):
        return "date"
    if t.is_time(arrow_type):
        return "time without time zone"
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type) or t.is_fixed_size_binary(arrow_type):
        return "bytea"
    if t.is_duration(arrow_type):
        return "interval"
    if isinstance(arrow_type, pa.DictionaryType):
        return _pg_type(arrow_type.value_type)
    if t.is_nested(arrow_type):
        return "jsonb"  # lists and structs arrive as JSON text (_csv_ready)
    if t.is_interval(arrow_type):
        return "interval"
    return "text"


@functools.lru_cache(maxsize=256)
def _duckdb_type(arrow_type: "pa.DataType") -> str:
    import duckdb
    import pyarrow as pa

    if pa.types.is_decimal256(arrow_type):
        return "VARCHAR"  # DuckDB's DECIMAL holds 38 digits: exact text (_duckdb_ready)

    # Let DuckDB itself say how it reads this Arrow type.
    empty = pa.table({"c": pa.array([], type=arrow_type)})
    return str(duckdb.sql("SELECT * FROM empty").types[0])


def existing_columns(workspace: Workspace, conn: sa.Connection, table: str) -> dict[str, str] | None:
    """Column name -> type of a raw table, or None when it does not exist."""
    if workspace.is_duckdb:  # duckdb-engine's inspector queries pg_catalog tables DuckDB lacks
        query = ("SELECT column_name, data_type FROM information_schema.columns "
                 "WHERE table_name = :t AND table_schema = current_schema() ORDER BY ordinal_position")
    else:
        query = ("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                 "WHERE a.attrelid = to_regclass(quote_ident(:t)) AND a.attnum > 0 AND NOT a.attisdropped "
                 "ORDER BY a.attnum")
    rows = conn.execute(sa.text(query), {"t": table}).all()
    return {name: type_ for name, type_ in rows} or None


#: workspace types a connector hands over as text (Arrow field metadata
#: `esg:workspace_type`), which the workspace parses on insert: (DuckDB, PostgreSQL) as
#: existing_columns() spells them
TEXT_TYPES = {
    "uuid": ("UUID", "uuid"),
    "timetz": ("TIME WITH TIME ZONE", "time with time zone"),
    "bit": ("BIT", "bit varying"),
    "interval": ("INTERVAL", "interval"),
}


def column_type(workspace: Workspace, arrow: "pa.DataType | pa.Field") -> str:
    """The workspace type a column gets, spelled as existing_columns() spells it: by its
    Arrow type, or, for a field carrying text meant as another type, that type."""
    import pyarrow as pa

    if isinstance(arrow, pa.Field):
        named = (arrow.metadata or {}).get(WORKSPACE_TYPE_KEY)
        if named is not None and named.decode() in TEXT_TYPES:
            return TEXT_TYPES[named.decode()][0 if workspace.is_duckdb else 1]
        arrow = arrow.type
    return (_duckdb_type if workspace.is_duckdb else _pg_type)(arrow)


def retype_columns(workspace: Workspace, conn: sa.Connection, table: str, fields: list["pa.Field"],
                   existing: dict[str, str]) -> None:
    """Follow a retyped source column without losing landed values.

    On DuckDB a column only ever widens, to the common type of what it holds and what
    arrives (INTEGER and DECIMAL(10,2) give DECIMAL(12,2); numbers and text give text),
    so a source that narrows a type (or a file whose inferred types differ) never rounds
    what was landed. PostgreSQL columns take the source's new type; a cast that cannot
    work fails the chunk with the database's reason."""
    for field in fields:
        new_type = column_type(workspace, field)
        if workspace.is_duckdb:
            new_type = _common_type(existing[field.name], new_type)
            if new_type == existing[field.name]:
                continue  # arriving values fit the landed type: they are cast on insert
        if workspace.secured:
            _call(conn, "esg_raw_retype_column", table, field.name, new_type)
            continue
        using = f" USING {_q(workspace, field.name)}::{new_type}" if not workspace.is_duckdb else ""
        conversion = _UPGRADES.get((workspace.is_duckdb, existing[field.name], new_type))
        if conversion:
            using = " USING " + conversion.format(c=_q(workspace, field.name))
        conn.exec_driver_sql(
            f"ALTER TABLE {_q(workspace, table)} ALTER COLUMN {_q(workspace, field.name)} TYPE {new_type}{using}"
        )


#: (DuckDB?, landed type, new type) -> the conversion of landed values, where the plain cast
#: does not exist: tables landed by earlier versions, which read MySQL TIME as TIME and
#: PostgreSQL uuid as its 16 bytes, follow the types of connectors/*_types.py
_UPGRADES = {
    (True, "TIME", "INTERVAL"): "(DATE '2000-01-01' + {c}) - TIMESTAMP '2000-01-01'",
    (True, "BLOB", "UUID"): ("CASE WHEN octet_length({c}) = 16 THEN CAST(regexp_replace(lower(hex({c})), "
                             "'^(.{{8}})(.{{4}})(.{{4}})(.{{4}})(.{{12}})$', '\\1-\\2-\\3-\\4-\\5') AS UUID) END"),
    (False, "bytea", "uuid"): "CASE WHEN octet_length({c}) = 16 THEN encode({c}, 'hex')::uuid END",
}


@functools.lru_cache(maxsize=256)
def _common_type(old: str, new: str) -> str:
    """DuckDB's own answer, asked of a scratch in-memory database: a failed statement
    inside the chunk's transaction would abort the transaction."""
    import duckdb

    try:
        return duckdb.connect().execute(f"SELECT typeof([NULL::{old}, NULL::{new}][1])").fetchone()[0]
    except duckdb.Error:  # no implicit common type (e.g. a number and text)
        return "VARCHAR" if "VARCHAR" in (old, new) else new


def _call(conn: sa.Connection, function: str, *arguments) -> None:
    """One of the secured workspace's raw-table functions (raw_table_security.DDL_FUNCTIONS)."""
    placeholders = ", ".join(f":a{i}" for i in range(len(arguments)))
    conn.execute(sa.text(f"SELECT {function}({placeholders})"), {f"a{i}": a for i, a in enumerate(arguments)})


def create_table(workspace: Workspace, conn: sa.Connection, table: str, schema: "pa.Schema") -> None:
    if workspace.secured:  # in the organization's schema (the second on the session's search path)
        _call(conn, "esg_raw_create", table, [f.name for f in schema], [column_type(workspace, f) for f in schema])
        return
    columns = [f"{_q(workspace, f.name)} {column_type(workspace, f)}" for f in schema]
    landed_default = "" if workspace.is_duckdb else " DEFAULT (now() AT TIME ZONE 'UTC')"
    columns += [f"{_q(workspace, '_esg_sync_id')} BIGINT", f"{_q(workspace, '_esg_chunk_id')} BIGINT",
                f"{_q(workspace, '_esg_landed_at')} TIMESTAMP{landed_default}"]
    conn.exec_driver_sql(f"CREATE TABLE {_q(workspace, table)} ({', '.join(columns)})")


def add_columns(workspace: Workspace, conn: sa.Connection, table: str, fields: list["pa.Field"]) -> None:
    for field in fields:
        if workspace.secured:
            _call(conn, "esg_raw_add_column", table, field.name, column_type(workspace, field))
            continue
        conn.exec_driver_sql(
            f"ALTER TABLE {_q(workspace, table)} ADD COLUMN {_q(workspace, field.name)} {column_type(workspace, field)}"
        )


def drop_table(workspace: Workspace, conn: sa.Connection, table: str) -> None:
    if workspace.secured:
        _call(conn, "esg_raw_drop", table)
        return
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_q(workspace, table)}")


def swap_in(workspace: Workspace, conn: sa.Connection, shadow: str, target: str) -> None:
    """Replace `target` by `shadow` inside the caller's transaction."""
    if workspace.secured:
        _call(conn, "esg_raw_swap", shadow, target)
        return
    drop_table(workspace, conn, target)
    conn.exec_driver_sql(f"ALTER TABLE {_q(workspace, shadow)} RENAME TO {_q(workspace, target)}")


def delete_keys(workspace: Workspace, conn: sa.Connection, table: str, batch: "pa.Table",
                key: list[str]) -> int:
    """Delete the rows of `table` whose key occurs in `batch` (upsert's first half)."""
    if batch.num_rows == 0:
        return 0
    keys = batch.select(key)
    if workspace.is_duckdb:
        keys = _duckdb_ready(keys)
        raw = conn.connection.driver_connection
        raw.register("_esg_keys", keys)
        try:
            cond = " AND ".join(f"t.{_q(workspace, k)} = k.{_q(workspace, k)}" for k in key)
            result = raw.execute(f"DELETE FROM {_q(workspace, table)} t USING _esg_keys k WHERE {cond}")
            return result.fetchone()[0]
        finally:
            raw.unregister("_esg_keys")
    temp = "_esg_keys"
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {_q(workspace, table)}) ON COMMIT DROP")
    conn.exec_driver_sql(f"TRUNCATE {temp}")
    _copy_into(workspace, conn, temp, keys, None)
    cond = " AND ".join(f"t.{_q(workspace, k)} = k.{_q(workspace, k)}" for k in key)
    return conn.exec_driver_sql(f"DELETE FROM {_q(workspace, table)} t USING {temp} k WHERE {cond}").rowcount


def append(workspace: Workspace, conn: sa.Connection, table: str, batch: "pa.Table",
           sync_id: int, chunk_id: int) -> int:
    """Insert `batch` with its lineage into `table`, matching columns by name."""
    if batch.num_rows == 0:
        return 0
    if workspace.is_duckdb:
        batch = _duckdb_ready(batch)
        raw = conn.connection.driver_connection
        raw.register("_esg_batch", batch)
        try:
            names = ", ".join(_q(workspace, n) for n in batch.column_names)
            raw.execute(
                f"INSERT INTO {_q(workspace, table)} ({names}, _esg_sync_id, _esg_chunk_id, _esg_landed_at) "
                f"SELECT {names}, {int(sync_id)}, {int(chunk_id)}, TIMESTAMP '{utcnow().isoformat()}' FROM _esg_batch"
            )
        finally:
            raw.unregister("_esg_batch")
        return batch.num_rows
    return _copy_into(workspace, conn, table, batch, (sync_id, chunk_id))


#: what DuckDB's cached table blocks are evicted down to by release_written_blocks (MiB)
_EVICT_TO_MB = 16


def release_written_blocks(workspace: Workspace) -> None:
    """Let DuckDB drop the blocks appends wrote from its memory (after they committed).

    DuckDB keeps every block it writes cached until its `memory_limit` is reached, 80% of
    the machine's memory by default, so a sync's memory grew with the table it landed,
    blocks it never reads again: about 36 MB per million rows of a 14-column table, a
    667 MB peak for 10M rows. Lowering the limit for a moment evicts unpinned blocks
    (committed, so already in the file: nothing is lost, and a later reader loads them
    again); RESET gives the default back exactly (the setting reads back rounded, so it
    cannot be set back to itself). A limit someone set is left alone: it bounds the cache
    already. Outside any transaction: when more than the lower limit is pinned (a query
    under way), DuckDB evicts what it can and refuses the setting, which would abort a
    transaction it ran in. Between write transactions too: the lower limit would also make
    DuckDB evict the uncommitted blocks and temporary tables of an apply another thread has
    under way, the state in which DuckDB 2.0.1 was seen to corrupt the strings of a large
    transaction (README, Benchmarks). Never raises. PostgreSQL: nothing to do."""
    if not workspace.is_duckdb:
        return
    import duckdb

    try:
        with workspace.between_writes(), workspace.read() as conn:
            raw = conn.connection.driver_connection  # autocommit: no SQLAlchemy transaction begun
            cached = raw.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                                 "WHERE tag = 'BASE_TABLE'").fetchone()[0]
            if cached <= _EVICT_TO_MB * 2**20:  # (a small sync never pays for _default_memory_limit)
                return
            if raw.execute("SELECT current_setting('memory_limit')").fetchone()[0] != _default_memory_limit():
                return
            try:
                raw.execute(f"SET memory_limit = '{_EVICT_TO_MB}MiB'")
            except duckdb.OutOfMemoryException:  # more than that is pinned: what could go went
                pass
            finally:
                raw.execute("RESET memory_limit")
    except (duckdb.Error, sa.exc.SQLAlchemyError):
        # a cache left full costs memory, not data: the caller's rows are committed, and a
        # chunk that landed must not be reported failed (its retry would land it twice)
        return


@functools.lru_cache(maxsize=1)
def _default_memory_limit() -> str:
    """DuckDB's own memory_limit on this machine, as current_setting() spells it."""
    import duckdb

    with duckdb.connect(":memory:") as con:
        return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]


def _copy_into(workspace: Workspace, conn: sa.Connection, table: str, batch: "pa.Table",
               lineage: tuple[int, int] | None) -> int:
    """COPY an Arrow table into PostgreSQL as CSV (NULL is an unquoted empty field)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = list(batch.column_names)
    if lineage is not None:
        n = batch.num_rows
        batch = batch.append_column("_esg_sync_id", pa.array([lineage[0]] * n, pa.int64()))
        batch = batch.append_column("_esg_chunk_id", pa.array([lineage[1]] * n, pa.int64()))
        names += ["_esg_sync_id", "_esg_chunk_id"]
    batch = _csv_ready(batch)
    buffer = io.BytesIO()
    pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
    cursor = conn.connection.driver_connection.cursor()
    cols = ", ".join(_q(workspace, c) for c in names)
    target = table
    if workspace.secured and lineage is not None:  # COPY FROM is refused under row-level security
        target = "_esg_rows"
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{target}")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {target} (LIKE {_q(workspace, table)}) ON COMMIT DROP")
    with cursor.copy(f"COPY {_q(workspace, target)} ({cols}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buffer.getvalue())
    if target != table:
        conn.exec_driver_sql(f"INSERT INTO {_q(workspace, table)} ({cols}) SELECT {cols} FROM pg_temp.{target}")
    return batch.num_rows


def _duckdb_ready(batch: "pa.Table") -> "pa.Table":
    """DuckDB cannot read decimal256 from Arrow: such columns as their exact text."""
    import pyarrow as pa

    for i, field in enumerate(batch.schema):
        if pa.types.is_decimal256(field.type):  # rare: plain notation with every scale digit, as sources print it
            text = pa.array([None if v is None else format(v, "f") for v in batch.column(i).to_pylist()], pa.string())
            batch = batch.set_column(i, pa.field(field.name, pa.string(), field.nullable, field.metadata), text)
    return batch


# --- values Arrow's CSV writer cannot write as PostgreSQL reads them ----------------------

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1


def _csv_ready(batch: "pa.Table") -> "pa.Table":
    """The batch with every column PostgreSQL's COPY can parse: infinite dates and
    timestamps (DuckDB's sentinels) as 'infinity', TIME 24:00:00, intervals, bytes in
    bytea's hex form, and lists and structs as JSON text."""
    import pyarrow as pa

    for i, field in enumerate(batch.schema):
        column = batch.column(i)
        fixed = _csv_column(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0), field.type)
        if fixed is not None:
            batch = batch.set_column(i, pa.field(field.name, fixed.type, field.nullable, field.metadata), fixed)
    return batch


def _csv_column(array: "pa.Array", type_: "pa.DataType") -> "pa.Array | None":
    import json

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as t

    if t.is_nested(type_):
        from esg_workbench.connectors.sql import json_safe

        return pa.array([None if v is None else json.dumps(json_safe(v)) for v in array.to_pylist()], pa.string())
    if t.is_binary(type_) or t.is_large_binary(type_) or t.is_fixed_size_binary(type_):
        return pa.array([None if v is None else "\\x" + v.hex() for v in array.to_pylist()], pa.string())
    if t.is_duration(type_):  # Arrow's CSV writes the bare count, which PostgreSQL reads as seconds
        unit = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": None}[type_.unit]
        if unit is None:
            array, unit = pc.divide(array.cast(pa.int64()), 1000).cast(pa.duration("us")), "microseconds"
        return pa.array([None if v is None else f"{v} {unit}" for v in array.cast(pa.int64()).to_pylist()], pa.string())
    if t.is_interval(type_):
        return pa.array([None if v is None else f"{v.months} mons {v.days} days {v.nanoseconds // 1000} microseconds"
                         for v in array.to_pylist()], pa.string())
    if t.is_time(type_):
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[type_.unit]
        raw = array.view(pa.int64() if type_.bit_width == 64 else pa.int32())
        midnight = pc.equal(raw, 86400 * per_second)  # 24:00:00, which Arrow cannot print
        if not pc.any(midnight).as_py():
            return None
        return pc.if_else(midnight, "24:00:00", pc.if_else(midnight, pa.scalar(None, type_), array).cast(pa.string()))
    if t.is_timestamp(type_) or t.is_date(type_):
        is_date = t.is_date(type_)
        per_day = 1 if is_date else 86400 * {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[type_.unit]
        raw = array.view(pa.int32() if is_date else pa.int64())
        # outside 0001-01-01 .. 9999-12-31 (and DuckDB's infinities) Arrow prints no date
        odd = pc.or_(pc.less(raw, -719_162 * per_day), pc.greater_equal(raw, 2_932_897 * per_day))
        if not pc.any(odd).as_py():
            return None
        text = pc.if_else(odd, pa.scalar(None, type_), array).cast(pa.string()).to_pylist()
        top = _INT32_MAX if is_date else _INT64_MAX
        zone = "+00" if getattr(type_, "tz", None) else ""
        out = []
        for value, number, rare in zip(text, raw.to_pylist(), odd.to_pylist()):
            if rare:
                value = ("infinity" if number == top else "-infinity" if number == -top
                         else _pg_instant(number, per_day, is_date, zone))
            out.append(value)
        return pa.array(out, pa.string())
    return None


def _pg_instant(number: int, per_day: int, is_date: bool, zone: str) -> str:
    """A date (days) or timestamp (units since 1970) in PostgreSQL's notation, for years
    Python and Arrow cannot print (before 1 AD: 'BC'; after 9999)."""
    days, rest = divmod(number, per_day)
    # days since 1970-01-01 -> proleptic Gregorian (y, m, d) (H. Hinnant's civil_from_days)
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    text = f"{year if year > 0 else 1 - year:04d}-{month:02d}-{day:02d}"
    if not is_date:
        seconds, fraction = divmod(rest, per_day // 86400)
        text += f" {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if fraction:
            text += "." + str(fraction).rjust(len(str(per_day // 86400)) - 1, "0")
        text += zone
    return text + (" BC" if year <= 0 else "")


# --- rows deleted in the source ---------------------------------------------------------------

#: set on a raw row whose key the source no longer has (found by a keys-only pass); the row
#: stays, mapping leaves it out. NULL: the row is in the source.
DELETED_COLUMN = "_esg_deleted_at"


def has_deleted_column(workspace: Workspace, conn: sa.Connection, table: str) -> bool:
    columns = existing_columns(workspace, conn, table)
    return columns is not None and DELETED_COLUMN in columns


#: where a deletes pass collects the source's keys on PostgreSQL: a temporary table of the
#: pass's own session (no row-level security applies to it, and an analyst of a secured
#: workspace may create no other table)
SOURCE_KEYS = "_esg_source_keys"


def source_keys_name(workspace: Workspace, table: str) -> str:
    """The table a deletes pass of raw `table` collects the source's keys in: on DuckDB a
    table beside it (on disk, so ten million keys need not fit in memory; one sync per
    connector at a time, so one pass per raw table), on PostgreSQL SOURCE_KEYS."""
    return f"{table}__keys" if workspace.is_duckdb else SOURCE_KEYS


def create_source_keys(workspace: Workspace, conn: sa.Connection, table: str, key: list[str]) -> str:
    """An empty key table typed like `table`'s key columns (what an earlier, broken-off
    pass left is dropped first). Returns its name. On PostgreSQL it lives as long as
    `conn`'s session: the pass fills it and marks in that one session."""
    name = source_keys_name(workspace, table)
    columns = ", ".join(_q(workspace, k) for k in key)
    temp = "" if workspace.is_duckdb else "TEMP "
    drop_source_keys(workspace, conn, name)
    conn.exec_driver_sql(f"CREATE {temp}TABLE {_q(workspace, name)} AS SELECT {columns} FROM {_q(workspace, table)} "
                         "LIMIT 0")
    return name


def add_source_keys(workspace: Workspace, conn: sa.Connection, name: str, batch: "pa.Table") -> int:
    """Append a batch of the source's keys (columns under their landing names)."""
    if batch.num_rows == 0:
        return 0
    if not workspace.is_duckdb:
        return _copy_into(workspace, conn, name, batch, None)
    raw = conn.connection.driver_connection
    raw.register("_esg_key_batch", _duckdb_ready(batch))
    try:
        names = ", ".join(_q(workspace, n) for n in batch.column_names)
        raw.execute(f"INSERT INTO {_q(workspace, name)} ({names}) SELECT {names} FROM _esg_key_batch")
    finally:
        raw.unregister("_esg_key_batch")
    return batch.num_rows


def drop_source_keys(workspace: Workspace, conn: sa.Connection, name: str) -> None:
    where = "" if workspace.is_duckdb else "pg_temp."
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {where}{_q(workspace, name)}")


@dataclasses.dataclass
class Marked:
    """What mark_deleted changed: rows newly marked, marks taken off (the key is back), and
    the newly marked rows per value of the `count_by` column (say, per file)."""

    marked: int = 0
    unmarked: int = 0
    by: dict = dataclasses.field(default_factory=dict)


def mark_deleted(workspace: Workspace, conn: sa.Connection, table: str, source_keys: str,
                 key: list[str], count_by: str | None = None, back_key: list[str] | None = None) -> Marked:
    """Reconcile `table` with every key the source has now, collected in the table
    `source_keys` (create_source_keys): rows whose key is not there get DELETED_COLUMN
    (now); marked rows whose key is back lose the mark. Two statements, an anti-join and
    a semi-join, so the workspace does the matching (hash joins, on disk when large)
    and nothing here holds the keys. Nothing is erased. A row with a NULL key column
    matches nothing and is left as it is (a key the source cannot have). `back_key`
    (columns of `source_keys` too; default `key`): what must match for a mark to go,
    e.g. a file's name and its time, so only the very rows that were marked come back."""
    import pyarrow as pa

    if not has_deleted_column(workspace, conn, table):
        add_columns(workspace, conn, table, [pa.field(DELETED_COLUMN, pa.timestamp("us"))])
    target = _q(workspace, table)
    keys = _q(workspace, source_keys) if workspace.is_duckdb else f"pg_temp.{_q(workspace, source_keys)}"
    if not workspace.is_duckdb:
        conn.exec_driver_sql(f"ANALYZE {keys}")  # the planner's row estimate: a hash anti-join
    found = " AND ".join(f"k.{_q(workspace, k)} = {target}.{_q(workspace, k)}" for k in key)
    known = " AND ".join(f"{target}.{_q(workspace, k)} IS NOT NULL" for k in key)
    deleted = _q(workspace, DELETED_COLUMN)
    gone = f"{deleted} IS NULL AND {known} AND NOT EXISTS (SELECT 1 FROM {keys} k WHERE {found})"
    result = Marked()
    if count_by is not None:
        by = _q(workspace, count_by)
        result.by = {row[0]: int(row[1]) for row in conn.exec_driver_sql(
            f"SELECT {by}, count(*) FROM {target} WHERE {gone} GROUP BY {by}")}
    now = f"TIMESTAMP '{utcnow().isoformat()}'"
    result.marked = _rowcount(workspace, conn.exec_driver_sql(f"UPDATE {target} SET {deleted} = {now} WHERE {gone}"))
    back = " AND ".join(f"k.{_q(workspace, k)} = {target}.{_q(workspace, k)}" for k in back_key or key)
    result.unmarked = _rowcount(workspace, conn.exec_driver_sql(
        f"UPDATE {target} SET {deleted} = NULL WHERE {deleted} IS NOT NULL "
        f"AND EXISTS (SELECT 1 FROM {keys} k WHERE {back})"))
    return result


def _rowcount(workspace: Workspace, result) -> int:
    """Rows an UPDATE changed: DuckDB answers with a row holding the count."""
    if workspace.is_duckdb:
        return int(result.fetchone()[0])
    return result.rowcount
