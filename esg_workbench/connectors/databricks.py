"""Databricks SQL: the SQL Statement Execution API (`databricks-sdk`,
`w.statement_execution`) on a SQL warehouse, with Arrow results.

Options: host (the workspace URL), warehouse_id, catalog, schema (default `default`);
the secret is a personal access token. `primary_key` (comma-separated column names)
names the key of tables that declare none: Databricks key constraints are informational
and often absent, and a delta load needs a key to update rows in place.

* Discovery reads Unity Catalog (`w.tables.list`): columns, types, nullability and
  declared primary and foreign keys.
* Statements run with disposition EXTERNAL_LINKS and format ARROW_STREAM: each result
  chunk is an Arrow IPC stream fetched from its (pre-signed) link without the token. A
  warehouse that refuses that combination is asked for INLINE JSON_ARRAY instead. Every
  batch is cast to the types the result manifest declares (an emulator, or the JSON
  format, may deliver decimals and timestamps as text), so every chunk of a table has
  one schema.
* A long statement is polled until it finishes; cancelling the sync cancels it.
* SQL is rendered here (`warehouse.RenderedSqlConnector`): identifiers in backticks
  (a backtick doubled); string values as quoted runs joined with `chr(39)` and
  `chr(92)` for quotes and backslashes, so no escape character ever appears inside a
  literal (Databricks reads backslash escapes, other engines do not); timestamps as
  `TIMESTAMP '...'` (aware values with +00:00), dates as `DATE '...'`, bytes as
  `unhex('...')`.
* Time windows use `date_trunc` in the session time zone, which is UTC on SQL
  warehouses unless an administrator changed it.

Delta tables read directly from object storage (`deltalake`), without a warehouse, are
the `delta_lake` connector (connectors/delta_lake.py).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlparse

from esg_workbench.core.errors import (
    AuthenticationFailed,
    ConfigError,
    DatabaseMissing,
    EsgError,
    PermissionDenied,
    SchemaDrift,
    SourceError,
    SourceUnreachable,
    TableMissing,
    TransientSourceError,
)
from esg_workbench.core.specs import CancelToken, ColumnInfo, ForeignKey, StreamRef, TableInfo, Timeouts
from esg_workbench.connectors.warehouse import RenderedSqlConnector, first_line, microsecond_timestamps

if TYPE_CHECKING:
    import pyarrow as pa

HTTP_TIMEOUT = 60  # seconds
RETRY_TIMEOUT = 60
POLL = 0.5

_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "TOO_MANY_REQUESTS", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED",
                    "RESOURCE_EXHAUSTED", "ABORTED", "UNAVAILABLE", "INTERNAL_ERROR"}

_FAMILIES = {
    "LONG": "integer", "BIGINT": "integer", "INT": "integer", "INTEGER": "integer", "SHORT": "integer",
    "SMALLINT": "integer", "BYTE": "integer", "TINYINT": "integer", "HUGEINT": "integer",
    "DOUBLE": "float", "FLOAT": "float", "REAL": "float",
    "DECIMAL": "decimal", "NUMERIC": "decimal",
    "STRING": "text", "VARCHAR": "text", "CHAR": "text", "TEXT": "text",
    "BOOLEAN": "boolean", "DATE": "date",
    "TIMESTAMP": "timestamptz", "TIMESTAMP_LTZ": "timestamptz", "TIMESTAMPTZ": "timestamptz",
    "TIMESTAMP WITH TIME ZONE": "timestamptz", "TIMESTAMP_NTZ": "timestamp", "TIMESTAMP WITHOUT TIME ZONE": "timestamp",
    "BINARY": "binary", "BLOB": "binary",
    "ARRAY": "json", "MAP": "json", "STRUCT": "json", "VARIANT": "json",
}


class StatementFailed(Exception):
    def __init__(self, error_code: str | None, message: str, sql_state: str | None = None):
        super().__init__(message)
        self.error_code, self.message, self.sql_state = error_code, message, sql_state


class DatabricksConnector(RenderedSqlConnector):
    default_schema = "default"

    def __init__(self, spec):
        super().__init__(spec)
        self._client = None
        self._format = "ARROW_STREAM"
        self._running: str | None = None  # the statement being polled or fetched (abort cancels it)

    # --- client ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        host = str(self.spec.option("host", "")).rstrip("/")
        if not host:
            raise ConfigError("The Databricks connector needs the workspace URL (host), e.g. "
                              "https://adb-1234567890123456.7.azuredatabricks.net.")
        return host if "://" in host else f"https://{host}"

    @property
    def warehouse_id(self) -> str:
        warehouse = self.spec.option("warehouse_id")
        if not warehouse:
            raise ConfigError("The Databricks connector needs the id of a SQL warehouse (warehouse_id).",
                              hint="Find it under SQL Warehouses > your warehouse > Connection details.")
        return str(warehouse)

    @property
    def catalog(self) -> str:
        catalog = self.spec.option("catalog")
        if not catalog:
            raise ConfigError("The Databricks connector needs a catalog (for example main or hive_metastore).")
        return str(catalog)

    @property
    def client(self):
        if self._client is None:
            from databricks.sdk import WorkspaceClient
            from databricks.sdk.core import Config

            if not self.spec.password:
                raise ConfigError("The Databricks connector needs a personal access token as its secret.")
            config = Config(host=self.host, token=self.spec.password, auth_type="pat",
                            http_timeout_seconds=max(1, round(self._read_timeout())),
                            retry_timeout_seconds=int(self.spec.option("retry_timeout", RETRY_TIMEOUT)))
            self._client = WorkspaceClient(config=config)
        return self._client

    @property
    def timeouts(self) -> Timeouts:
        """connect: opening a connection (the reachability check, result downloads);
        statement: how long a statement may run on the warehouse before it is cancelled;
        read: each HTTP request's wait for an answer (the SDK's http_timeout_seconds,
        unless http_timeout is set) and for a result chunk."""
        return Timeouts.from_options(self.spec.options)

    def _read_timeout(self) -> float:
        return float(self.spec.option("http_timeout") or Timeouts.given(self.spec.options, "read", HTTP_TIMEOUT))

    def close(self) -> None:
        self._client = None

    def abort(self) -> None:
        """A read given up on (stalled, or the sync cancelled) from another thread: the
        statement still running on the warehouse is cancelled, on a thread of its own
        (the connection may be the stalled one), so the warehouse stops working for no one."""
        statement, client = self._running, self._client
        if statement is None or client is None:
            return

        def cancel() -> None:
            try:
                client.statement_execution.cancel_execution(statement)
            except Exception:  # noqa: BLE001 (best effort: the statement ends on its own anyway)
                pass
        threading.Thread(target=cancel, name="esg-databricks-cancel", daemon=True).start()

    def _check_reachable(self) -> None:
        """A refused or unresolvable host answers at once here; the SDK would retry it
        for its whole retry timeout."""
        url = urlparse(self.host)
        port = url.port or (443 if url.scheme == "https" else 80)
        connect = self.timeouts.connect
        try:
            socket.create_connection((url.hostname, port), timeout=connect).close()
        except socket.gaierror as exc:
            raise SourceUnreachable(f"The Databricks host {url.hostname} is unknown.", code=f"EAI_{abs(exc.errno)}")
        except TimeoutError:
            raise SourceUnreachable(f"Databricks at {url.hostname}:{port} did not answer within {connect:g} s "
                                    "(the connector's connect_timeout).", code="ETIMEDOUT") from None
        except OSError as exc:
            name = {111: "ECONNREFUSED", 110: "ETIMEDOUT", 113: "EHOSTUNREACH"}.get(exc.errno or 0, str(exc.errno))
            raise SourceUnreachable(f"Databricks at {url.hostname}:{port} cannot be reached "
                                    f"({exc.strerror or type(exc).__name__}).", code=name)

    # --- rendering ------------------------------------------------------------------------------

    def quote(self, name: str) -> str:
        return "`" + str(name).replace("`", "``") + "`"

    def string_literal(self, text: str) -> str:
        return _string_literal(text)

    def table_ref(self, stream: StreamRef) -> str:
        return f"{self.quote(self.catalog)}.{self.quote(stream.schema or self.schema)}.{self.quote(stream.table)}"

    def window_start_sql(self, column_sql: str, window: str, family: str | None) -> str:
        return f"date_trunc('{window.upper()}', {column_sql})"

    # --- statements ------------------------------------------------------------------------------

    def run_arrow(self, sql: str, what: str, cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        with self.errors(what):
            try:
                response = self._execute(sql, cancel)
                yield from self._batches(response, cancel)
            finally:
                self._running = None

    def _execute(self, sql: str, cancel: CancelToken | None):
        from databricks.sdk.errors import DatabricksError
        from databricks.sdk.service import sql as dsql

        api = self.client.statement_execution
        limit = self.timeouts.statement
        deadline = time.monotonic() + limit
        try:
            response = api.execute_statement(
                statement=sql, warehouse_id=self.warehouse_id, catalog=self.catalog, schema=self.schema,
                disposition=dsql.Disposition.EXTERNAL_LINKS if self._format == "ARROW_STREAM" else dsql.Disposition.INLINE,
                format=dsql.Format(self._format), wait_timeout=_wait_timeout(limit),
                on_wait_timeout=dsql.ExecuteStatementRequestOnWaitTimeout.CONTINUE)
        except DatabricksError as exc:
            text = str(exc).lower()
            if self._format == "ARROW_STREAM" and ("arrow_stream" in text or "external_links" in text
                                                   or "disposition" in text or "not implemented" in text):
                self._format = "JSON_ARRAY"  # this warehouse serves JSON only
                return self._execute(sql, cancel)
            raise
        state = response.status.state.value if response.status and response.status.state else "SUCCEEDED"
        self._running = response.statement_id
        while state in ("PENDING", "RUNNING"):
            if cancel is not None and cancel.cancelled:
                api.cancel_execution(response.statement_id)
                cancel.raise_if_cancelled()
            if time.monotonic() > deadline:
                api.cancel_execution(response.statement_id)
                raise StatementFailed("STATEMENT_TIMEOUT", f"the statement ran longer than {limit:g} s "
                                      "(the connector's statement_timeout) and was cancelled")
            time.sleep(POLL)
            response = api.get_statement(response.statement_id)
            state = response.status.state.value
        if state != "SUCCEEDED":
            error = response.status.error if response.status else None
            raise StatementFailed(
                getattr(error, "error_code", None) and getattr(error.error_code, "value", str(error.error_code)),
                getattr(error, "message", None) or f"the statement ended {state}",
                getattr(response.status, "sql_state", None))
        return response

    def _batches(self, response, cancel: CancelToken | None) -> "Iterator[pa.RecordBatch]":
        import pyarrow as pa
        import requests

        columns = list(response.manifest.schema.columns or []) if response.manifest and response.manifest.schema else []
        api = self.client.statement_execution
        data = response.result
        while data is not None:
            if cancel is not None:
                cancel.raise_if_cancelled()
            if data.external_links:
                for link in data.external_links:
                    # a pre-signed URL: the token must not be sent along
                    got = requests.get(link.external_link, headers=link.http_headers or {},
                                       timeout=(self.timeouts.connect, self._read_timeout()))
                    got.raise_for_status()
                    for batch in pa.ipc.open_stream(pa.py_buffer(got.content)):
                        if batch.num_rows:
                            yield cast_to_manifest(batch, columns)
                next_index = data.external_links[-1].next_chunk_index
            elif data.data_array:
                yield cast_to_manifest(_json_batch(data.data_array, columns), columns)
                next_index = data.next_chunk_index
            else:
                next_index = data.next_chunk_index
            data = api.get_statement_result_chunk_n(response.statement_id, next_index) if next_index else None

    # --- validate and discover ------------------------------------------------------------------

    def validate(self) -> str:
        self._check_reachable()
        with self.errors("Connecting"):
            warehouse = self.client.warehouses.get(self.warehouse_id)
        with self.errors(f"Opening schema {self.catalog}.{self.schema}"):
            self.client.schemas.get(f"{self.catalog}.{self.schema}")
        tables = self.list_streams()
        with self.errors("Running a statement on the warehouse"):
            list(self.run_arrow("SELECT 1", "Running a statement on the warehouse"))
        name = getattr(warehouse, "name", None) or self.warehouse_id
        return f"Connected to Databricks warehouse {name}. {len(tables)} tables readable in {self.catalog}.{self.schema}."

    def _uc_tables(self):
        with self.errors(f"Listing tables of {self.catalog}.{self.schema}"):
            return list(self.client.tables.list(catalog_name=self.catalog, schema_name=self.schema))

    def list_streams(self) -> list[StreamRef]:
        return [StreamRef(self.schema, t.name) for t in sorted(self._uc_tables(), key=lambda t: t.name)]

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        wanted = None if streams is None else {s.table for s in streams}
        fallback_key = [c.strip() for c in str(self.spec.option("primary_key", "")).split(",") if c.strip()]
        infos = []
        for table in sorted(self._uc_tables(), key=lambda t: t.name):
            if wanted is not None and table.name not in wanted:
                continue
            pk: list[str] = []
            fks: list[ForeignKey] = []
            for constraint in table.table_constraints or []:
                if constraint.primary_key_constraint:
                    pk = list(constraint.primary_key_constraint.child_columns or [])
                if constraint.foreign_key_constraint:
                    fk = constraint.foreign_key_constraint
                    parts = (fk.parent_table or "").split(".")
                    fks.append(ForeignKey(tuple(fk.child_columns or ()), parts[-2] if len(parts) > 1 else None,
                                          parts[-1], tuple(fk.parent_columns or ())))
            names = [c.name for c in table.columns or []]
            if not pk and fallback_key and all(k in names for k in fallback_key):
                pk = fallback_key
            cols = []
            for c in sorted(table.columns or [], key=lambda c: c.position or 0):
                type_text = c.type_text or (c.type_name.value if c.type_name else "")
                cols.append(ColumnInfo(name=c.name, type=type_text, nullable=c.nullable is not False,
                                       primary_key=c.name in pk, family=_family(type_text, c.type_name)))
            info = TableInfo(stream=StreamRef(self.schema, table.name), columns=cols, primary_key=pk, foreign_keys=fks)
            self._tables[info.stream] = info
            infos.append(info)
        return infos

    # --- errors --------------------------------------------------------------------------------

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        code = getattr(exc, "error_code", None)
        code = getattr(code, "value", code)
        sql_state = getattr(exc, "sql_state", None)
        text = str(getattr(exc, "message", None) or exc)
        if self.spec.password:
            text = text.replace(self.spec.password, "***")
        low = text.lower()
        bracket = re.search(r"\[([A-Z_]+(?:\.[A-Z_]+)?)\]", text)
        error_class = bracket.group(1) if bracket else None
        code = code or error_class or sql_state
        status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
        where = self.spec.option("host")
        if code in ("UNAUTHENTICATED",) or status == 401 or "invalid access token" in low or "invalid token" in low:
            return AuthenticationFailed(f"{what}: Databricks at {where} refused the access token.",
                                        hint="Create a new personal access token (User settings > Developer) and "
                                             "enter it as the secret.", code=code)
        if "warehouse" in low and ("not found" in low or "does not exist" in low):
            return ConfigError(f"{what}: the SQL warehouse '{self.spec.option('warehouse_id')}' does not exist "
                               "or this user may not use it.", code=code,
                               hint="Check warehouse_id (SQL Warehouses > your warehouse > Connection details).")
        if code in ("PERMISSION_DENIED", "INSUFFICIENT_PERMISSIONS") or status == 403 or sql_state == "42501":
            return PermissionDenied(f"{what}: the user lacks permission ({first_line(text)}).", code=code)
        if error_class in ("SCHEMA_NOT_FOUND", "CATALOG_NOT_FOUND", "NO_SUCH_CATALOG_EXCEPTION") or (
                code in ("NOT_FOUND", "RESOURCE_DOES_NOT_EXIST", "SCHEMA_DOES_NOT_EXIST", "CATALOG_DOES_NOT_EXIST")
                and ("schema" in low or "catalog" in low) and "table" not in low):
            return DatabaseMissing(f"{what}: the catalog or schema does not exist or this user may not use it "
                                   f"({first_line(text)}).", code=code)
        if error_class == "TABLE_OR_VIEW_NOT_FOUND" or sql_state == "42P01" or (
                "table" in low and ("does not exist" in low or "not found" in low or "cannot be found" in low)):
            return TableMissing(f"{what}: the table no longer exists in the source ({first_line(text)}).", code=code)
        if (error_class or "").startswith("UNRESOLVED_COLUMN") or sql_state == "42703" or (
                "column" in low and ("not found" in low or "cannot be resolved" in low)):
            return SchemaDrift(f"{what}: the table's columns changed in the source ({first_line(text)}).", code=code)
        if code in _TRANSIENT_CODES or status in (429, 500, 502, 503, 504) or isinstance(exc, (TimeoutError, ConnectionError)) \
                or type(exc).__module__.startswith("requests"):
            return TransientSourceError(f"{what}: the connection to Databricks was interrupted ({first_line(text)}).",
                                        code=code)
        return SourceError(f"{what} failed: {first_line(text)}", code=code)


def _wait_timeout(statement_timeout: float) -> str:
    """How long the first request waits for the statement (the API takes 5 to 50 s):
    no longer than the statement may run, so a short statement_timeout is kept by polling."""
    return f"{max(5, min(30, int(statement_timeout)))}s"


def _string_literal(text: str) -> str:
    """A string literal with no escape character inside any quotes (see module docstring)."""
    parts: list[str] = []
    run = ""
    for ch in text:
        if ch in ("'", "\\"):
            if run:
                parts.append(f"'{run}'")
                run = ""
            parts.append(f"chr({ord(ch)})")
        else:
            run += ch
    if run or not parts:
        parts.append(f"'{run}'")
    return parts[0] if len(parts) == 1 else "(" + " || ".join(parts) + ")"


def _base_type(type_text: str) -> str:
    text = type_text.strip().upper()
    for long_name in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITHOUT TIME ZONE"):
        if text.startswith(long_name):
            return long_name
    return re.split(r"[\s(<]", text, maxsplit=1)[0]


def _family(type_text: str, type_name=None) -> str:
    name = getattr(type_name, "value", None)
    base = _base_type(type_text) if type_text else (name or "")
    return _FAMILIES.get(base, _FAMILIES.get(name or "", "other"))


def arrow_type(type_text: str | None, type_name=None) -> "pa.DataType | None":
    """The Arrow type of a result column from the manifest's type (None: keep as it comes)."""
    import pyarrow as pa

    text = (type_text or getattr(type_name, "value", None) or "").strip().upper()
    base = _base_type(text)
    simple = {
        "LONG": pa.int64(), "BIGINT": pa.int64(), "INT": pa.int32(), "INTEGER": pa.int32(),
        "SHORT": pa.int16(), "SMALLINT": pa.int16(), "BYTE": pa.int8(), "TINYINT": pa.int8(),
        "DOUBLE": pa.float64(), "FLOAT": pa.float32(), "REAL": pa.float32(), "BOOLEAN": pa.bool_(),
        "DATE": pa.date32(), "STRING": pa.string(), "VARCHAR": pa.string(), "CHAR": pa.string(),
        "BINARY": pa.binary(), "BLOB": pa.binary(),
        "TIMESTAMP_NTZ": pa.timestamp("us"), "TIMESTAMP WITHOUT TIME ZONE": pa.timestamp("us"),
        "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", "UTC"), "TIMESTAMPTZ": pa.timestamp("us", "UTC"),
        "TIMESTAMP_LTZ": pa.timestamp("us", "UTC"),
    }
    if base in simple:
        return simple[base]
    if base in ("DECIMAL", "NUMERIC"):
        match = re.search(r"\((\d+)\s*,\s*(\d+)\)", text)
        precision, scale = (int(match.group(1)), int(match.group(2))) if match else (10, 0)
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    return None  # TIMESTAMP (zone decided by the values), nested types, anything else


def cast_to_manifest(batch: "pa.RecordBatch", columns) -> "pa.RecordBatch":
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(columns) != batch.num_columns:
        return microsecond_timestamps(batch)
    arrays, fields = [], []
    for field, column, info in zip(batch.schema, batch.columns, columns):
        target = arrow_type(info.type_text, info.type_name)
        base = _base_type(info.type_text or getattr(info.type_name, "value", "") or "")
        if target is None and base == "TIMESTAMP" and not pa.types.is_timestamp(column.type):
            # text from an emulator or the JSON format: aware when the values carry an offset
            texts = column.cast(pa.string())
            aware = pc.any(pc.match_substring_regex(texts, r"(Z|[+-]\d\d:?\d\d)$")).as_py()
            target = pa.timestamp("us", "UTC") if aware else pa.timestamp("us")
        if target is not None and column.type != target:
            if pa.types.is_timestamp(target) and pa.types.is_timestamp(column.type):
                if column.type.tz and not target.tz:
                    target = pa.timestamp("us", column.type.tz)  # keep the instant
            column = column.cast(target, safe=not pa.types.is_timestamp(target))
        arrays.append(column)
        fields.append(pa.field(info.name or field.name, column.type))
    return microsecond_timestamps(pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)))


def _json_batch(rows: list[list], columns) -> "pa.RecordBatch":
    import pyarrow as pa

    names = [c.name for c in columns] or [f"c{i}" for i in range(len(rows[0]) if rows else 0)]
    arrays = [pa.array([None if r[i] is None else str(r[i]) for r in rows], pa.string()) for i in range(len(names))]
    return pa.RecordBatch.from_arrays(arrays, names=names)
