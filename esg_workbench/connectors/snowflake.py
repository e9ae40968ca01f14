"""Snowflake: `snowflake-connector-python` directly, results as Arrow batches
(`cursor.fetch_arrow_batches()`), planning and read queries rendered in
`warehouse.RenderedSqlConnector` (SQLAlchemy's Snowflake dialect does not work with
SQLAlchemy 2.1).

Options: account, username, warehouse, role, database, schema (default PUBLIC). Auth is
a password (the secret), or key-pair: `private_key_path` names a PKCS#8 private key file
and the secret, if any, is its passphrase. `host`, `port` and `protocol` reach a
non-standard endpoint (a private link, or an emulator in the tests).

* The session runs with TIMEZONE=UTC (TIMESTAMP_LTZ values and windows in UTC) and
  WEEK_START=1 (ISO weeks from Monday).
* Names are matched the Snowflake way: exactly, else case-insensitively when that is
  unambiguous (`public` finds PUBLIC).
* Values are rendered as typed literals: `'...'::TIMESTAMP_NTZ`, `'...+00:00'::
  TIMESTAMP_TZ`, `'...'::DATE`, strings with `'` doubled and `\\` escaped (Snowflake
  reads backslash escapes in string literals), bytes through TO_BINARY(hex).
* TIMESTAMP(9) values arrive as nanoseconds and are landed truncated to microseconds;
  the upper bound of a sync is compared below the next microsecond, so the truncation
  leaves no row out (see `RenderedSqlConnector.cursor_at_most`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Iterator

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
from esg_workbench.connectors.base import close_quietly
from esg_workbench.connectors.warehouse import RenderedSqlConnector, first_line, microsecond_timestamps

if TYPE_CHECKING:
    import pyarrow as pa

LOGIN_TIMEOUT = 30  # seconds
NETWORK_TIMEOUT = 300

_AUTH = {390100, 390101, 390102, 390144, 390318, 390400, 394300, 394301, 394302, 394303, 394304, 250100}
_PERMISSION = {3001, 3003, 3011, 390189}
_MISSING = {2003}
_DRIFT = {904, 2043}
_NO_WAREHOUSE = {606, 390201}
_TRANSIENT = {604, 630, 625, 250002, 250003, 251005, 251006, 251011, 251012, 254005, 390114}
_UNREACHABLE = {250001}

_FAMILIES = {
    "NUMBER": "decimal", "DECIMAL": "decimal", "NUMERIC": "decimal", "FIXED": "decimal",
    "INT": "integer", "INTEGER": "integer", "BIGINT": "integer", "SMALLINT": "integer",
    "FLOAT": "float", "DOUBLE": "float", "REAL": "float",
    "TEXT": "text", "VARCHAR": "text", "STRING": "text", "CHAR": "text",
    "BOOLEAN": "boolean", "DATE": "date", "TIME": "time",
    "TIMESTAMP_NTZ": "timestamp", "DATETIME": "timestamp", "TIMESTAMP": "timestamp",
    "TIMESTAMP_TZ": "timestamptz", "TIMESTAMP_LTZ": "timestamptz",
    "BINARY": "binary", "VARBINARY": "binary",
    "VARIANT": "json", "OBJECT": "json", "ARRAY": "json",
}


class SnowflakeConnector(RenderedSqlConnector):
    default_schema = "PUBLIC"

    def __init__(self, spec):
        super().__init__(spec)
        self._conn = None
        self._names: tuple[str, str] | None = None  # resolved (database, schema)

    # --- connection ------------------------------------------------------------------------

    @property
    def _account(self) -> str:
        return str(self.spec.option("account", "")) or "?"

    def connect_args(self) -> dict[str, Any]:
        if not self.spec.option("account"):
            raise ConfigError("The Snowflake connector needs its account identifier (for example myorg-myaccount).")
        if not self.spec.option("username"):
            raise ConfigError("The Snowflake connector needs a user name.")
        args: dict[str, Any] = {
            "account": self.spec.option("account"),
            "user": self.spec.option("username"),
            "login_timeout": int(self.spec.option("login_timeout")
                                 or Timeouts.given(self.spec.options, "connect", LOGIN_TIMEOUT)),
            "network_timeout": int(self.spec.option("network_timeout")
                                   or Timeouts.given(self.spec.options, "read", NETWORK_TIMEOUT)),
            "session_parameters": {"TIMEZONE": "UTC", "WEEK_START": 1, "QUERY_TAG": "esg-workbench"},
            "application": "ESGWorkbench",
            "client_session_keep_alive": False,
        }
        for option, arg in (("warehouse", "warehouse"), ("role", "role"), ("database", "database"),
                            ("host", "host"), ("port", "port"), ("protocol", "protocol")):
            if self.spec.option(option) not in (None, ""):
                args[arg] = self.spec.option(option)
        if "port" in args:
            args["port"] = int(args["port"])
        key_path = self.spec.option("private_key_path")
        if key_path:
            args["private_key"] = self._private_key(str(key_path))
            args["authenticator"] = "SNOWFLAKE_JWT"
        else:
            if not self.spec.password:
                raise ConfigError("The Snowflake connector needs a password, or a private key file (private_key_path) "
                                  "for key-pair authentication.")
            args["password"] = self.spec.password
        return args

    def _private_key(self, path: str) -> bytes:
        """The private key as DER bytes, decrypted with the passphrase (the secret)."""
        from cryptography.hazmat.primitives import serialization

        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigError(f"The private key file {path} cannot be read ({exc.strerror or exc}).",
                              hint="Check private_key_path: it names the PKCS#8 key (.p8) registered for the user.")
        passphrase = self.spec.password.encode() if self.spec.password else None
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except TypeError:  # encrypted without a passphrase, or a passphrase for a plain key
            raise AuthenticationFailed(
                f"The private key {path} " + ("is encrypted: enter its passphrase as the secret." if not passphrase
                                              else "is not encrypted: leave the passphrase empty."))
        except ValueError:
            raise AuthenticationFailed(f"The private key {path} cannot be decrypted: the passphrase is wrong, "
                                       "or the file is not a PEM private key.",
                                       hint="Enter the key's passphrase as the secret (Edit connector).")
        return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def _connection(self):
        if self._conn is None:
            import snowflake.connector

            args = self.connect_args()
            with self.errors("Connecting"):
                self._conn = snowflake.connector.connect(**args)
        return self._conn

    def _drop_connection(self) -> None:
        close_quietly(self._conn)
        self._conn = None

    def close(self) -> None:
        self._drop_connection()

    # --- rendering ----------------------------------------------------------------------------

    def quote(self, name: str) -> str:
        return '"' + str(name).replace('"', '""') + '"'

    def string_literal(self, text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

    def nonfinite_literal(self, text: str) -> str:
        return f"'{text}'::FLOAT"

    def timestamp_literal(self, text: str, aware: bool) -> str:
        return f"'{text}'::{'TIMESTAMP_TZ' if aware else 'TIMESTAMP_NTZ'}"

    def date_literal(self, text: str) -> str:
        return f"'{text}'::DATE"

    def time_literal(self, value: "dt.time") -> str:
        return f"'{value.isoformat(timespec='microseconds')}'::TIME"

    def binary_literal(self, hex_digits: str) -> str:
        return f"TO_BINARY('{hex_digits}', 'HEX')"

    def table_ref(self, stream: StreamRef) -> str:
        database, schema = self._resolved()
        if stream.schema is not None and stream.schema != schema and _match(stream.schema, [schema]) is None:
            schema = stream.schema  # another schema of the database, named explicitly
        return f"{self.quote(database)}.{self.quote(schema)}.{self.quote(stream.table)}"

    def window_start_sql(self, column_sql: str, window: str, family: str | None) -> str:
        if family == "timestamptz":
            column_sql = f"CONVERT_TIMEZONE('UTC', {column_sql})"
        return f"DATE_TRUNC('{window}', {column_sql})"

    # --- running ------------------------------------------------------------------------------

    def run_arrow(self, sql: str, what: str, cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        try:
            with self.errors(what):
                cursor = self._connection().cursor()
                try:
                    cursor.execute(sql)
                    for batch in cursor.fetch_arrow_batches():
                        if cancel is not None and cancel.cancelled:
                            cursor.abort_query(cursor.sfqid) if cursor.sfqid else None
                            cancel.raise_if_cancelled()
                        for record_batch in batch.to_batches():
                            yield microsecond_timestamps(record_batch)
                finally:
                    cursor.close()
        except EsgError as exc:
            if exc.transient:
                self._drop_connection()  # a broken session is not reused by the next chunk
            raise

    def _plain_rows(self, sql: str, what: str) -> list[tuple]:
        """SHOW commands answer as JSON, not Arrow."""
        with self.errors(what):
            cursor = self._connection().cursor()
            try:
                cursor.execute(sql)
                names = [d[0].lower() for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
            finally:
                cursor.close()

    # --- names -------------------------------------------------------------------------------

    def _resolved(self) -> tuple[str, str]:
        """The database and schema as Snowflake spells them."""
        if self._names is None:
            wanted_db = self.spec.option("database")
            if not wanted_db:
                raise ConfigError("The Snowflake connector needs a database.")
            databases = [r["name"] for r in self._plain_rows("SHOW DATABASES", "Listing databases")]
            database = _match(wanted_db, databases)
            if database is None:
                raise DatabaseMissing(f"The database '{wanted_db}' does not exist in Snowflake account {self._account}, "
                                      "or the role may not use it.")
            wanted_schema = self.spec.option("schema", self.default_schema)
            schemas = [r[0] for r in self.rows(
                f"SELECT schema_name FROM {self.quote(database)}.information_schema.schemata", "Listing schemas")]
            schema = _match(wanted_schema, schemas)
            if schema is None:
                raise DatabaseMissing(f"The schema '{wanted_schema}' does not exist in database {database}, "
                                      "or the role may not use it.", hint="Check the schema name in the connector settings.")
            self._names = (database, schema)
        return self._names

    @property
    def schema(self) -> str | None:
        """The schema as Snowflake spells it (asks the source the first time)."""
        return self._resolved()[1]

    # --- validate and discover ------------------------------------------------------------------

    def validate(self) -> str:
        self._connection()
        database, schema = self._resolved()
        tables = self._table_rows(database, schema)
        who = self.spec.option("username")
        return f"Connected to Snowflake account {self._account} as {who}. {len(tables)} tables readable in {database}.{schema}."

    def _table_rows(self, database: str, schema: str) -> list[tuple]:
        return self.rows(
            f"SELECT table_name, row_count FROM {self.quote(database)}.information_schema.tables "
            f"WHERE table_schema = {self.literal(schema)} AND table_type IN ('BASE TABLE', 'VIEW') ORDER BY table_name",
            "Listing tables")

    def list_streams(self) -> list[StreamRef]:
        database, schema = self._resolved()
        return [StreamRef(schema, name) for name, _ in self._table_rows(database, schema)]

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        database, schema = self._resolved()
        wanted = None if streams is None else {s.table for s in streams}
        tables = {name: rows for name, rows in self._table_rows(database, schema) if wanted is None or name in wanted}
        if not tables:
            return []
        columns: dict[str, list[tuple]] = {}
        for row in self.rows(
                f"SELECT table_name, column_name, data_type, is_nullable, numeric_precision, numeric_scale "
                f"FROM {self.quote(database)}.information_schema.columns WHERE table_schema = {self.literal(schema)} "
                f"ORDER BY table_name, ordinal_position", "Reading the schema"):
            if row[0] in tables:
                columns.setdefault(row[0], []).append(row)
        where = f"{self.quote(database)}.{self.quote(schema)}"
        pks: dict[str, list[tuple[int, str]]] = {}
        for r in self._plain_rows(f"SHOW PRIMARY KEYS IN SCHEMA {where}", "Reading primary keys"):
            pks.setdefault(r["table_name"], []).append((int(r["key_sequence"]), r["column_name"]))
        fks: dict[str, dict[str, list]] = {}
        try:
            for r in self._plain_rows(f"SHOW IMPORTED KEYS IN SCHEMA {where}", "Reading foreign keys"):
                if r.get("pk_table_name"):
                    fk = fks.setdefault(r["fk_table_name"], {}).setdefault(
                        r["fk_name"], [r.get("pk_schema_name"), r["pk_table_name"], [], []])
                    fk[2].append(r["fk_column_name"])
                    fk[3].append(r["pk_column_name"])
        except SourceError:  # foreign keys are informational: their absence stops nothing
            pass
        infos = []
        for name in sorted(tables):
            pk = [c for _, c in sorted(pks.get(name, []))]
            cols = [ColumnInfo(name=col, type=_type_name(dtype, precision, scale), nullable=nullable == "YES",
                               primary_key=col in pk, family=_family(dtype, scale))
                    for _, col, dtype, nullable, precision, scale in columns.get(name, [])]
            info = TableInfo(
                stream=StreamRef(schema, name), columns=cols, primary_key=pk,
                foreign_keys=[ForeignKey(tuple(f[2]), f[0], f[1], tuple(f[3])) for f in fks.get(name, {}).values()],
                row_estimate=int(tables[name]) if tables[name] is not None else None)
            self._tables[info.stream] = info
            infos.append(info)
        return infos

    # --- errors -------------------------------------------------------------------------------

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        errno = getattr(exc, "errno", None)
        errno = errno if isinstance(errno, int) and errno > 0 else None
        code = f"{errno:06d}" if errno is not None else None
        text = str(getattr(exc, "raw_msg", None) or getattr(exc, "msg", None) or exc)
        if self.spec.password:
            text = text.replace(self.spec.password, "***")
        low = text.lower()
        account, user = self._account, self.spec.option("username")
        if errno in _AUTH or "incorrect username or password" in low or "jwt token is invalid" in low:
            how = "key pair" if self.spec.option("private_key_path") else "password"
            return AuthenticationFailed(f"{what}: Snowflake account {account} refused the user '{user}' "
                                        f"({how} authentication failed).", code=code)
        if errno in _NO_WAREHOUSE or "no active warehouse" in low or ("warehouse" in low and "does not exist" in low):
            wh = self.spec.option("warehouse")
            return ConfigError(f"{what}: no usable warehouse" + (f": '{wh}' does not exist or the role may not use it."
                                                                  if wh else ": set the warehouse option."),
                               hint="Set a warehouse the role may use (Edit connector), or grant USAGE on it.",
                               code=code)
        if errno in _PERMISSION or "insufficient privileges" in low or ("role" in low and "not authorized" in low):
            return PermissionDenied(f"{what}: the user '{user}' lacks permission ({first_line(text)}).", code=code)
        if errno in _MISSING or "does not exist" in low:
            if "database" in low:
                return DatabaseMissing(f"{what}: the database does not exist or the role may not use it "
                                       f"({first_line(text)}).", code=code)
            if "schema" in low and "table" not in low:
                return DatabaseMissing(f"{what}: the schema does not exist or the role may not use it "
                                       f"({first_line(text)}).", code=code)
            return TableMissing(f"{what}: the table no longer exists in the source ({first_line(text)}).", code=code)
        if errno in _DRIFT or "invalid identifier" in low:
            return SchemaDrift(f"{what}: the table's columns changed in the source ({first_line(text)}).", code=code)
        if errno in _UNREACHABLE or "could not connect to snowflake backend" in low:
            return SourceUnreachable(f"{what}: Snowflake account {account} cannot be reached "
                                     f"({first_line(text)}).", code=code)
        if errno in _TRANSIENT or isinstance(exc, (ConnectionError, TimeoutError)):
            return TransientSourceError(f"{what}: the connection to Snowflake was lost ({first_line(text)}).",
                                        code=code)
        return SourceError(f"{what} failed: {first_line(text)}", code=code)


def _match(wanted: str, names: list[str]) -> str | None:
    """Snowflake folds unquoted names to upper case: exact first, then unambiguous any-case."""
    if wanted in names:
        return wanted
    folded = [n for n in names if n.upper() == str(wanted).upper()]
    return folded[0] if len(folded) == 1 else None


def _type_name(data_type: str, precision: Any, scale: Any) -> str:
    if data_type in ("NUMBER", "DECIMAL", "NUMERIC") and precision is not None:
        return f"NUMBER({precision},{scale or 0})"
    return data_type


def _family(data_type: str, scale: Any) -> str:
    family = _FAMILIES.get(str(data_type).upper().split("(")[0], "other")
    if family == "decimal" and not scale:
        return "integer"
    return family
