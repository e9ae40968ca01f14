"""Raw landed tables: one per source stream, typed from the source's Arrow schema.

Bulk paths stay columnar: Arrow batches go into DuckDB by scanning the Arrow data
in place (`INSERT ... BY NAME SELECT ... FROM batch`), and into PostgreSQL by COPY.
Every raw row carries lineage: the sync run and the ledger chunk that landed it.

On a shared (secured) PostgreSQL workspace a raw table also carries its organization
(`_esg_organization_id`), belongs to the organization's role and has row-level security
like every other table (postgres_security.py). PostgreSQL refuses COPY FROM into a
table with row-level security, so there a batch is copied into a temporary table (no
security needed: only this session sees it) and inserted from it in one statement.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from typing import TYPE_CHECKING

import sqlalchemy as sa

from esg_workbench.workspace.database import Workspace, utcnow

if TYPE_CHECKING:
    import pyarrow as pa

LINEAGE_COLUMNS = ("_esg_sync_id", "_esg_chunk_id", "_esg_landed_at")


def raw_table_name(connector_id: str, stream: str) -> str:
    """A plain ASCII name, stable per connector and stream, whatever the source calls it."""
    slug = re.sub(r"[^a-z0-9]+", "_", stream.lower()).strip("_")[:40] or "table"
    digest = hashlib.sha1(f"{connector_id}\0{stream}".encode()).hexdigest()[:8]
    return f"raw_{slug}_{digest}"


def shadow_table_name(raw_table: str, sync_id: int) -> str:
    return f"{raw_table}__shadow_{sync_id}"


def _q(workspace: Workspace, name: str) -> str:
    return workspace.engine.dialect.identifier_preparer.quote(name)


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
    return "text"


@functools.lru_cache(maxsize=256)
def _duckdb_type(arrow_type: "pa.DataType") -> str:
    import duckdb
    import pyarrow as pa

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


def column_type(workspace: Workspace, arrow_type: "pa.DataType") -> str:
    """The workspace type a column of `arrow_type` gets, spelled as existing_columns() spells it."""
    return (_duckdb_type if workspace.is_duckdb else _pg_type)(arrow_type)


def retype_columns(workspace: Workspace, conn: sa.Connection, table: str, fields: list["pa.Field"],
                   existing: dict[str, str]) -> None:
    """Follow a retyped source column without losing landed values.

    On DuckDB a column only ever widens, to the common type of what it holds and what
    arrives (INTEGER and DECIMAL(10,2) give DECIMAL(12,2); numbers and text give text),
    so a source that narrows a type (or a file whose inferred types differ) never rounds
    what was landed. PostgreSQL columns take the source's new type; a cast that cannot
    work fails the chunk with the database's reason."""
    for field in fields:
        new_type = column_type(workspace, field.type)
        if workspace.is_duckdb:
            new_type = _common_type(existing[field.name], new_type)
            if new_type == existing[field.name]:
                continue  # arriving values fit the landed type: they are cast on insert
        using = f" USING {_q(workspace, field.name)}::{new_type}" if not workspace.is_duckdb else ""
        conn.exec_driver_sql(
            f"ALTER TABLE {_q(workspace, table)} ALTER COLUMN {_q(workspace, field.name)} TYPE {new_type}{using}"
        )


@functools.lru_cache(maxsize=256)
def _common_type(old: str, new: str) -> str:
    """DuckDB's own answer, asked of a scratch in-memory database: a failed statement
    inside the chunk's transaction would abort the transaction."""
    import duckdb

    try:
        return duckdb.connect().execute(f"SELECT typeof([NULL::{old}, NULL::{new}][1])").fetchone()[0]
    except duckdb.Error:  # no implicit common type (e.g. a number and text)
        return "VARCHAR" if "VARCHAR" in (old, new) else new


def create_table(workspace: Workspace, conn: sa.Connection, table: str, schema: "pa.Schema") -> None:
    columns = [f"{_q(workspace, f.name)} {column_type(workspace, f.type)}" for f in schema]
    landed_default = "" if workspace.is_duckdb else " DEFAULT (now() AT TIME ZONE 'UTC')"
    columns += [f"{_q(workspace, '_esg_sync_id')} BIGINT", f"{_q(workspace, '_esg_chunk_id')} BIGINT",
                f"{_q(workspace, '_esg_landed_at')} TIMESTAMP{landed_default}"]
    where = ""
    if workspace.secured:  # in the organization's schema (the second on the session's search path)
        where = _q(workspace, workspace.roles.raw_schema(workspace.organization_id)) + "."
    conn.exec_driver_sql(f"CREATE TABLE {where}{_q(workspace, table)} ({', '.join(columns)})")
    if workspace.secured:
        from esg_workbench.workspace import postgres_security

        postgres_security.secure_raw_table(conn, workspace.roles, table, workspace.organization_id)


def add_columns(workspace: Workspace, conn: sa.Connection, table: str, fields: list["pa.Field"]) -> None:
    for field in fields:
        conn.exec_driver_sql(
            f"ALTER TABLE {_q(workspace, table)} ADD COLUMN {_q(workspace, field.name)} {column_type(workspace, field.type)}"
        )


def drop_table(workspace: Workspace, conn: sa.Connection, table: str) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_q(workspace, table)}")


def swap_in(workspace: Workspace, conn: sa.Connection, shadow: str, target: str) -> None:
    """Replace `target` by `shadow` inside the caller's transaction."""
    drop_table(workspace, conn, target)
    conn.exec_driver_sql(f"ALTER TABLE {_q(workspace, shadow)} RENAME TO {_q(workspace, target)}")


def delete_keys(workspace: Workspace, conn: sa.Connection, table: str, batch: "pa.Table",
                key: list[str]) -> int:
    """Delete the rows of `table` whose key occurs in `batch` (upsert's first half)."""
    if batch.num_rows == 0:
        return 0
    keys = batch.select(key)
    if workspace.is_duckdb:
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


# --- rows deleted in the source ---------------------------------------------------------------

#: set on a raw row whose key the source no longer has (found by a keys-only pass); the row
#: stays, mapping leaves it out. NULL: the row is in the source.
DELETED_COLUMN = "_esg_deleted_at"


def has_deleted_column(workspace: Workspace, conn: sa.Connection, table: str) -> bool:
    columns = existing_columns(workspace, conn, table)
    return columns is not None and DELETED_COLUMN in columns


def mark_deleted(workspace: Workspace, conn: sa.Connection, table: str, source_keys: "pa.Table | None",
                 key: list[str]) -> tuple[int, int]:
    """Reconcile `table` with every key the source has now: rows whose key is missing
    get DELETED_COLUMN (now); marked rows whose key is back lose the mark. Nothing is
    erased. Returns (newly marked, unmarked)."""
    import pyarrow as pa

    if not has_deleted_column(workspace, conn, table):
        add_columns(workspace, conn, table, [pa.field(DELETED_COLUMN, pa.timestamp("us"))])
    target = _q(workspace, table)
    if source_keys is None or source_keys.num_rows == 0:  # the source table is empty: every row went
        marked = conn.exec_driver_sql(f"UPDATE {target} SET {_q(workspace, DELETED_COLUMN)} = "
                                      f"TIMESTAMP '{utcnow().isoformat()}' WHERE {_q(workspace, DELETED_COLUMN)} IS NULL")
        return _rowcount(workspace, marked), 0
    keys = source_keys.select(key)
    temp = "_esg_source_keys"
    found = " AND ".join(f"k.{_q(workspace, k)} = {target}.{_q(workspace, k)}" for k in key)
    deleted = _q(workspace, DELETED_COLUMN)
    now = f"TIMESTAMP '{utcnow().isoformat()}'"
    mark = (f"UPDATE {target} SET {deleted} = {now} WHERE {deleted} IS NULL "
            f"AND NOT EXISTS (SELECT 1 FROM {temp} k WHERE {found})")
    unmark = (f"UPDATE {target} SET {deleted} = NULL WHERE {deleted} IS NOT NULL "
              f"AND EXISTS (SELECT 1 FROM {temp} k WHERE {found})")
    if workspace.is_duckdb:
        raw = conn.connection.driver_connection
        raw.register(temp, keys)
        try:
            return raw.execute(mark).fetchone()[0], raw.execute(unmark).fetchone()[0]
        finally:
            raw.unregister(temp)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{temp}")
    conn.exec_driver_sql(f"CREATE TEMP TABLE {temp} AS SELECT {', '.join(_q(workspace, k) for k in key)} "
                         f"FROM {target} LIMIT 0")
    if keys.num_rows:
        _copy_into(workspace, conn, temp, keys, None)
    conn.exec_driver_sql(f"ANALYZE pg_temp.{temp}")
    marked = conn.exec_driver_sql(mark).rowcount
    unmarked = conn.exec_driver_sql(unmark).rowcount
    conn.exec_driver_sql(f"DROP TABLE pg_temp.{temp}")
    return marked, unmarked


def _rowcount(workspace: Workspace, result) -> int:
    """Rows an UPDATE changed: DuckDB answers with a row holding the count."""
    if workspace.is_duckdb:
        return int(result.fetchone()[0])
    return result.rowcount
