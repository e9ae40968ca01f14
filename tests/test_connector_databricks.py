"""Databricks (SQL Statement Execution API) against minilake, through the real sync engine."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

pytest.importorskip("databricks.sdk")

from esg_workbench.connectors.registry import create_connector  # noqa: E402
from esg_workbench.core import errors  # noqa: E402
from esg_workbench.core.specs import ChunkRange, ConnectorSpec, ReadScope, StreamRef, SyncStatus  # noqa: E402
from esg_workbench.sync import operations  # noqa: E402
from esg_workbench.sync.engine import SyncEngine, SyncRequest  # noqa: E402
from esg_workbench.workspace import open_workspace  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.warehouse_emulators import minilake_server  # noqa: E402,F401

FAST = (0.01, 0.02, 0.04)
TOKEN = "dapi-test-token-0123456789"


@pytest.fixture(scope="module")
def lake(minilake_server):
    """A warehouse and a catalog in minilake: (host, warehouse id, catalog, client)."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    client = WorkspaceClient(config=Config(host=minilake_server.url, token=TOKEN, auth_type="pat"))
    warehouse = client.api_client.do("POST", "/api/2.0/sql/warehouses", body={"name": "esg", "cluster_size": "2X-Small"})
    catalog = f"esg_{uuid.uuid4().hex[:6]}"
    client.catalogs.create(name=catalog)
    return minilake_server.url, warehouse["id"], catalog, client


@pytest.fixture
def dbx(lake):
    """A fresh schema: (options, run(sql) for arranging data)."""
    host, warehouse, catalog, client = lake
    schema = f"erp_{uuid.uuid4().hex[:6]}"
    client.schemas.create(name=schema, catalog_name=catalog)

    def run(sql):
        result = client.statement_execution.execute_statement(statement=sql, warehouse_id=warehouse, catalog=catalog,
                                                              schema=schema)
        return result.result.data_array if result.result else None

    options = {"host": host, "warehouse_id": warehouse, "catalog": catalog, "schema": schema}
    return options, run


@pytest.fixture
def ws(workspace_url):
    workspace = open_workspace(workspace_url)
    yield workspace
    workspace.close()


def engine(ws, **kw):
    return SyncEngine(ws, retry_delays=FAST, secret_for=lambda _id: TOKEN, **kw)


def add(ws, options, name="dbx", **extra):
    record = operations.add_connector(ws, name, "databricks", {**options, **extra})
    operations.update_connector(ws, name, {**record.config, "password_in_keyring": True})


def sync(ws, name="dbx", **kw):
    return engine(ws).run(SyncRequest(connector=name, **kw))


def raw_rows(ws, raw_table, columns):
    prep = ws.engine.dialect.identifier_preparer
    with ws.read() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            f"SELECT {', '.join(prep.quote(c) for c in columns)} FROM {prep.quote(raw_table)} ORDER BY 1")).all()]


def source_rows(run, table, columns):
    """The source's rows as minilake's JSON gives them (text), for comparison as text."""
    return [tuple(r) for r in run(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1")]


def as_text(rows):
    return [tuple(None if v is None else (v.isoformat(sep=" ") if hasattr(v, "isoformat") else str(v)) for v in r)
            for r in rows]


def spec(options, token=TOKEN, **extra):
    return ConnectorSpec("databricks", "dbx", {**options, **extra}, password=token)


def test_validate_discover_and_sample(dbx):
    options, run = dbx
    run("CREATE TABLE readings (id BIGINT NOT NULL, site VARCHAR NOT NULL, kwh DECIMAL(12,3), updated_at TIMESTAMP)")
    run("INSERT INTO readings VALUES (1, 'A', 1.5, '2024-01-01 10:00:00.123456'), (2, 'B', NULL, NULL)")
    connector = create_connector(spec(options, primary_key="id"))
    message = connector.validate()
    assert "Connected to Databricks warehouse esg" in message and "1 tables readable" in message
    (info,) = connector.describe()
    assert info.primary_key == ["id"]  # minilake declares no constraints: the primary_key option names it
    assert [(c.name, c.family, c.nullable) for c in info.columns] == [
        ("id", "integer", False), ("site", "text", False), ("kwh", "decimal", True), ("updated_at", "timestamptz", True)]
    assert connector.sample(info.stream, 5) == [
        {"id": 1, "site": "A", "kwh": "1.500", "updated_at": "2024-01-01T10:00:00.123456"},
        {"id": 2, "site": "B", "kwh": None, "updated_at": None}]
    # the JSON fallback gives the same typed batches as the Arrow path
    scope = ReadScope(columns=("id", "site", "kwh", "updated_at"), key=("id",))
    arrow = list(connector.read(info.stream, scope, ChunkRange()))
    connector._format = "JSON_ARRAY"
    json = list(connector.read(info.stream, scope, ChunkRange()))
    assert arrow[0].schema == json[0].schema and arrow[0].to_pylist() == json[0].to_pylist()
    assert str(arrow[0].schema.field("kwh").type) == "decimal128(12, 3)"


def test_full_then_delta_lands_exactly_the_source(ws, dbx):
    options, run = dbx
    run("CREATE TABLE readings (id BIGINT PRIMARY KEY, site VARCHAR, kwh DECIMAL(12,3), updated_at TIMESTAMP NOT NULL)")
    run("INSERT INTO readings SELECT i, 'S' || (i % 7), i * 1.125, TIMESTAMP '2024-01-01' + to_minutes(i) "
        "FROM range(1, 3001) r(i)")
    add(ws, options, primary_key="id", cursor_field="updated_at", chunk_size=700)
    first = sync(ws)
    assert first.status is SyncStatus.SUCCESS, first.error
    stream = first.streams[0]
    assert stream.rows_written == 3000 and stream.chunks_planned == 5
    cols = ["id", "site", "kwh", "updated_at"]
    assert as_text(raw_rows(ws, stream.raw_table, cols)) == as_text(source_rows(run, "readings", cols))

    run("UPDATE readings SET kwh = kwh + 1, updated_at = TIMESTAMP '2030-01-01' WHERE id % 1000 = 1")
    run("INSERT INTO readings VALUES (5000, 'NEW', 1, TIMESTAMP '2030-01-01')")
    delta = sync(ws, load_type="delta")
    assert delta.status is SyncStatus.SUCCESS, delta.error
    assert delta.streams[0].rows_written == 3 + 1 + 1  # changed, new, and the re-read tie group (id 3000)
    assert as_text(raw_rows(ws, stream.raw_table, cols)) == as_text(source_rows(run, "readings", cols))
    nothing = sync(ws, load_type="delta")
    assert nothing.status is SyncStatus.SUCCESS and nothing.streams[0].rows_written == 0


def test_hostile_identifiers_and_time_windows(ws, dbx):
    options, run = dbx
    table = '"we""ird tab ünï"'
    run(f'CREATE TABLE {table} ("select" BIGINT PRIMARY KEY, "my col" VARCHAR, "ünïcödé" DECIMAL(5,2), '
        '"Order" TIMESTAMP NOT NULL, "drop table x;--" VARCHAR)')
    run(f"INSERT INTO {table} SELECT i, 'O''Brien\\' || i, i / 3, TIMESTAMP '2024-02-01' + to_hours(i), 'x' "
        "FROM range(1, 301) r(i)")
    add(ws, options, primary_key="select", chunk_size=64, chunk_strategy="time", cursor_field="Order", window="day")
    result = sync(ws)
    assert result.status is SyncStatus.SUCCESS, result.error
    cols = ["select", "my col", "ünïcödé", "Order", "drop table x;--"]
    landed = raw_rows(ws, result.streams[0].raw_table, cols)
    assert as_text(landed) == as_text(source_rows(run, table, [f'"{c}"' for c in cols]))
    assert landed[0][1] == "O'Brien\\1" and result.streams[0].chunks_planned >= 13
    # text keys holding quotes and backslashes page correctly
    add(ws, options, name="by-text", primary_key="select", chunk_size=50, load_type="delta", cursor_field="my col",
        chunk_strategy="id")
    by_text = sync(ws, name="by-text")
    assert by_text.status is SyncStatus.SUCCESS, by_text.error
    assert by_text.streams[0].rows_written == 300 and by_text.streams[0].chunks_planned == 6


class _Flaky:
    def __init__(self, inner, failures):
        self.inner, self.failures = inner, failures

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self, stream, scope, chunk, cancel=None):
        if self.failures.get(chunk.lower, 0) > 0:
            self.failures[chunk.lower] -= 1
            raise errors.TransientSourceError("the connection to Databricks was interrupted (test)",
                                              code="TEMPORARILY_UNAVAILABLE")
        return self.inner.read(stream, scope, chunk, cancel)


def test_failing_chunks_lose_nothing(ws, dbx):
    options, run = dbx
    run("CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR)")
    run("INSERT INTO t SELECT i, 'v' || i FROM range(1, 101) r(i)")
    add(ws, options, primary_key="id", chunk_size=30)
    failures = {(31,): 2, (61,): 99}
    result = engine(ws, connector_factory=lambda s: _Flaky(create_connector(s), failures)).run(SyncRequest(connector="dbx"))
    assert result.status is SyncStatus.PARTIAL_SUCCESS
    assert result.streams[0].chunks_failed == 1 and result.streams[0].rows_written == 70
    failures.clear()
    retried = engine(ws).run(SyncRequest(connector="dbx", retry_failed=True))
    assert retried.status is SyncStatus.SUCCESS, retried.error
    assert as_text(raw_rows(ws, result.streams[0].raw_table, ["id", "v"])) == as_text(source_rows(run, "t", ["id", "v"]))


def test_validate_says_what_is_wrong(dbx):
    options, _ = dbx

    def fails(kind, words, code=None, token=TOKEN, **extra):
        connector = create_connector(spec(options, token=token, **extra))
        with pytest.raises(kind) as err:
            connector.validate()
        assert words in err.value.message and err.value.hint, err.value.describe()
        assert code is None or err.value.code == code, err.value.code
        assert TOKEN not in err.value.describe()

    fails(errors.SourceUnreachable, "cannot be reached", "ECONNREFUSED", host=f"http://127.0.0.1:{free_port()}")
    fails(errors.ConfigError, "warehouse 'nope' does not exist", "NOT_FOUND", warehouse_id="nope")
    fails(errors.DatabaseMissing, "does not exist", schema="no_such_schema")
    fails(errors.ConfigError, "personal access token", token=None)
    fails(errors.ConfigError, "needs a catalog", catalog="")


def test_missing_table_and_column_are_named(dbx):
    options, run = dbx
    run("CREATE TABLE t (id BIGINT, v VARCHAR)")
    connector = create_connector(spec(options))
    connector.describe()
    scope = ReadScope(columns=("id", "gone"), key=("id",))
    with pytest.raises(errors.SchemaDrift):
        list(connector.read(StreamRef(options["schema"], "t"), scope, ChunkRange()))
    with pytest.raises(errors.TableMissing):
        list(connector.read(StreamRef(options["schema"], "nope"), ReadScope(columns=("id",), key=("id",)), ChunkRange()))


@pytest.mark.parametrize("make, kind, code", [
    (lambda E: E.Unauthenticated("Invalid access token.", error_code="UNAUTHENTICATED"), errors.AuthenticationFailed,
     "UNAUTHENTICATED"),
    (lambda E: E.PermissionDenied("User does not have USE SCHEMA on Schema 'main.erp'.", error_code="PERMISSION_DENIED"),
     errors.PermissionDenied, "PERMISSION_DENIED"),
    (lambda E: E.NotFound("Schema 'main.erp' does not exist.", error_code="SCHEMA_DOES_NOT_EXIST"),
     errors.DatabaseMissing, "SCHEMA_DOES_NOT_EXIST"),
    (lambda E: E.TooManyRequests("Too many requests", error_code="TOO_MANY_REQUESTS"), errors.TransientSourceError,
     "TOO_MANY_REQUESTS"),
])
def test_sdk_errors_are_translated(make, kind, code):
    from databricks.sdk import errors as sdk_errors

    connector = create_connector(spec({"host": "https://adb-1.azuredatabricks.net", "warehouse_id": "w", "catalog": "c"}))
    translated = connector.translate_error(make(sdk_errors), "Reading")
    assert type(translated) is kind and translated.code == code, translated.describe()


def test_failed_statements_are_translated_by_error_class():
    from esg_workbench.connectors.databricks import StatementFailed

    connector = create_connector(spec({"host": "https://adb-1.azuredatabricks.net", "warehouse_id": "w", "catalog": "c"}))
    missing = StatementFailed("BAD_REQUEST", "[TABLE_OR_VIEW_NOT_FOUND] The table or view `main`.`erp`.`readings` "
                                             "cannot be found.", "42P01")
    assert isinstance(connector.translate_error(missing, "Reading"), errors.TableMissing)
    drift = StatementFailed("BAD_REQUEST", "[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column with name `kwh` cannot be "
                                           "resolved.", "42703")
    assert isinstance(connector.translate_error(drift, "Reading"), errors.SchemaDrift)


def test_string_literals_need_no_escape_character():
    connector = create_connector(spec({"host": "h", "warehouse_id": "w", "catalog": "c"}))
    assert connector.literal("plain") == "'plain'"
    assert connector.literal("O'Brien\\x") == "('O' || chr(39) || 'Brien' || chr(92) || 'x')"
    assert connector.literal("'") == "chr(39)" and connector.literal("") == "''"
    assert connector.quote("a`b") == "`a``b`"
