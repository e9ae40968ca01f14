"""Snowflake against fakesnow in server mode, through the real sync engine."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

pytest.importorskip("snowflake.connector")

from esg_workbench.connectors.registry import create_connector  # noqa: E402
from esg_workbench.core import errors  # noqa: E402
from esg_workbench.core.specs import ConnectorSpec, SyncStatus  # noqa: E402
from esg_workbench.sync import operations  # noqa: E402
from esg_workbench.sync.engine import SyncEngine, SyncRequest  # noqa: E402
from esg_workbench.workspace import open_workspace  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.warehouse_emulators import fakesnow_server  # noqa: E402,F401

FAST = (0.01, 0.02, 0.04)
PASSWORD = "sf-test-secret-Pw1"


@pytest.fixture
def ws(workspace_url):
    workspace = open_workspace(workspace_url)
    yield workspace
    workspace.close()


@pytest.fixture
def sf(fakesnow_server):
    """A fresh database in fakesnow: (options, a cursor for arranging data)."""
    import snowflake.connector

    database = f"ESG_TEST_{uuid.uuid4().hex[:8].upper()}"
    conn = snowflake.connector.connect(user="esg", password=PASSWORD, account="fakesnow", host="127.0.0.1",
                                       port=fakesnow_server.port, protocol="http")
    cur = conn.cursor()
    cur.execute(f'CREATE DATABASE "{database}"')
    cur.execute(f'CREATE SCHEMA "{database}"."ERP"')
    cur.execute(f'USE SCHEMA "{database}"."ERP"')
    options = {"account": "fakesnow", "username": "esg", "warehouse": "COMPUTE_WH", "role": "ANALYST",
               "database": database.lower(), "schema": "erp",  # Snowflake folds unquoted names: found any-case
               "host": "127.0.0.1", "port": fakesnow_server.port, "protocol": "http", "login_timeout": 10}
    yield options, cur
    conn.close()  # fakesnow cannot drop a database; the server's in-memory data goes with it


def engine(ws, **kw):
    return SyncEngine(ws, retry_delays=FAST, secret_for=lambda _id: PASSWORD, **kw)


def add(ws, options, name="sf", **extra):
    # the secret is handed to the engine by secret_for (no keyring needed in these tests)
    record = operations.add_connector(ws, name, "snowflake", {**options, **extra})
    operations.update_connector(ws, name, {**record.config, "password_in_keyring": True})
    return record


def sync(ws, name="sf", **kw):
    return engine(ws).run(SyncRequest(connector=name, **kw))


def raw_rows(ws, raw_table, columns):
    prep = ws.engine.dialect.identifier_preparer
    with ws.read() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            f"SELECT {', '.join(prep.quote(c) for c in columns)} FROM {prep.quote(raw_table)} ORDER BY 1")).all()]


def source_rows(cur, table_sql, columns):
    cur.execute(f"SELECT {', '.join(columns)} FROM {table_sql} ORDER BY 1")
    return [tuple(r) for r in cur.fetchall()]


def spec(options, password=PASSWORD, **extra):
    return ConnectorSpec("snowflake", "sf", {**options, **extra}, password=password)


def test_validate_and_discover(sf):
    options, cur = sf
    cur.execute("CREATE TABLE readings (id NUMBER(38,0) PRIMARY KEY, site TEXT NOT NULL, kwh NUMBER(12,3), "
                "updated_at TIMESTAMP_NTZ)")
    cur.execute("CREATE TABLE sites (code TEXT PRIMARY KEY, name TEXT)")
    cur.execute("INSERT INTO readings VALUES (1, 'A', 1.5, '2024-01-01 10:00:00'), (2, 'B', NULL, '2024-01-02')")
    connector = create_connector(spec(options))
    try:
        message = connector.validate()
        assert "2 tables readable in" in message and "ERP" in message
        infos = {i.stream.table: i for i in connector.describe()}
        readings = infos["READINGS"]
        assert readings.primary_key == ["ID"] and infos["SITES"].primary_key == ["CODE"]
        assert [(c.name, c.type, c.family, c.nullable) for c in readings.columns] == [
            ("ID", "NUMBER(38,0)", "integer", False), ("SITE", "TEXT", "text", False),
            ("KWH", "NUMBER(12,3)", "decimal", True), ("UPDATED_AT", "TIMESTAMP_NTZ", "timestamp", True)]
        assert readings.row_estimate == 2
        sample = connector.sample(readings.stream, 10)
        assert sample[0] == {"ID": 1, "SITE": "A", "KWH": "1.500", "UPDATED_AT": "2024-01-01T10:00:00"}
    finally:
        connector.close()


def test_full_then_delta_lands_exactly_the_source(ws, sf):
    options, cur = sf
    cur.execute("CREATE TABLE readings (id NUMBER(38,0) PRIMARY KEY, site TEXT, kwh NUMBER(12,3), "
                "updated_at TIMESTAMP_NTZ NOT NULL)")
    cur.execute("INSERT INTO readings SELECT SEQ4() + 1, 'S' || MOD(SEQ4(), 7), (SEQ4() + 1) * 1.125, "
                "DATEADD(minute, SEQ4() + 1, '2024-01-01'::TIMESTAMP_NTZ) FROM TABLE(GENERATOR(ROWCOUNT => 3000))")
    add(ws, options, cursor_field="UPDATED_AT", chunk_size=700)
    first = sync(ws)
    assert first.status is SyncStatus.SUCCESS, first.error
    stream = first.streams[0]
    assert stream.rows_written == 3000 and stream.chunks_planned == 5  # id ranges of 700
    cols = ["ID", "SITE", "KWH", "UPDATED_AT"]
    assert raw_rows(ws, stream.raw_table, cols) == source_rows(cur, "readings", cols)

    cur.execute("UPDATE readings SET kwh = kwh + 1, updated_at = '2030-01-01'::TIMESTAMP_NTZ WHERE MOD(id, 1000) = 1")
    cur.execute("INSERT INTO readings VALUES (5000, 'NEW', 1, '2030-01-01')")
    delta = sync(ws, load_type="delta")
    assert delta.status is SyncStatus.SUCCESS, delta.error
    # 3 changed rows, 1 new, and the tie group at the full load's upper bound (id 3000) re-read
    assert delta.streams[0].rows_written == 3 + 1 + 1
    assert raw_rows(ws, stream.raw_table, cols) == source_rows(cur, "readings", cols)

    nothing = sync(ws, load_type="delta")
    assert nothing.status is SyncStatus.SUCCESS and nothing.streams[0].rows_written == 0


def test_delta_chunks_by_time_window_keep_ties(ws, sf):
    options, cur = sf
    # 40 rows share each timestamp: chunks of 25 split tie groups, which must not lose or repeat rows
    cur.execute("CREATE TABLE ticks (id NUMBER(38,0) PRIMARY KEY, v NUMBER(10,0), ts TIMESTAMP_NTZ NOT NULL)")
    cur.execute("INSERT INTO ticks SELECT SEQ4() + 1, SEQ4(), DATEADD(hour, FLOOR(SEQ4() / 40) * 7, "
                "'2024-03-01 00:00:00.123456'::TIMESTAMP_NTZ) FROM TABLE(GENERATOR(ROWCOUNT => 400))")
    add(ws, options, cursor_field="TS", chunk_size=25, window="day", load_type="delta")
    result = sync(ws)
    assert result.status is SyncStatus.SUCCESS, result.error
    assert result.streams[0].rows_written == 400 and result.streams[0].chunks_planned >= 16
    assert raw_rows(ws, result.streams[0].raw_table, ["ID", "V", "TS"]) == source_rows(cur, "ticks", ["ID", "V", "TS"])
    cur.execute("UPDATE ticks SET v = -1, ts = '2024-03-20 00:00:00.5'::TIMESTAMP_NTZ WHERE id IN (7, 8, 9)")
    again = sync(ws)
    assert again.status is SyncStatus.SUCCESS and again.streams[0].rows_written == 3
    assert raw_rows(ws, result.streams[0].raw_table, ["ID", "V", "TS"]) == source_rows(cur, "ticks", ["ID", "V", "TS"])


def test_hostile_identifiers_land(ws, sf):
    options, cur = sf
    # (fakesnow cannot create a schema whose name holds a quote or a dot; the table can)
    cur.execute('CREATE SCHEMA "odd schema ü"')
    cur.execute('CREATE TABLE "odd schema ü"."we""ird tab ünï" ("select" NUMBER(38,0) PRIMARY KEY, '
                '"my col" TEXT, "ünïcödé" NUMBER(5,2), "Order" TIMESTAMP_NTZ NOT NULL, "drop table x;--" TEXT)')
    cur.execute('INSERT INTO "odd schema ü"."we""ird tab ünï" SELECT SEQ4() + 1, '
                "'O''Brien\\\\' || SEQ4(), (SEQ4() + 1) / 3, DATEADD(hour, SEQ4() + 1, '2024-02-01'::TIMESTAMP_NTZ), "
                "'x' FROM TABLE(GENERATOR(ROWCOUNT => 300))")
    add(ws, options, schema="odd schema ü", chunk_size=64, chunk_strategy="time", cursor_field="Order", window="day")
    result = sync(ws)
    assert result.status is SyncStatus.SUCCESS, result.error
    cols = ['"select"', '"my col"', '"ünïcödé"', '"Order"', '"drop table x;--"']
    landed = raw_rows(ws, result.streams[0].raw_table, ["select", "my col", "ünïcödé", "Order", "drop table x;--"])
    assert landed == source_rows(cur, '"odd schema ü"."we""ird tab ünï"', cols)
    assert landed[0][1] == "O'Brien\\0"
    assert result.streams[0].chunks_planned >= 13
    # a string key with quotes and backslashes pages correctly too
    add(ws, options, name="by-text", schema="odd schema ü", chunk_size=50, load_type="delta", cursor_field="my col",
        chunk_strategy="id")
    by_text = sync(ws, name="by-text")
    assert by_text.status is SyncStatus.SUCCESS, by_text.error
    assert by_text.streams[0].rows_written == 300


class _Flaky:
    """Wraps a connector: the read of chosen chunks fails (transiently) a number of times."""

    def __init__(self, inner, failures):
        self.inner, self.failures = inner, failures

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self, stream, scope, chunk, cancel=None):
        key = chunk.lower
        if self.failures.get(key, 0) > 0:
            self.failures[key] -= 1
            raise errors.TransientSourceError("the connection to Snowflake was lost (test)", code="250003")
        return self.inner.read(stream, scope, chunk, cancel)


def test_failing_chunks_lose_nothing(ws, sf):
    options, cur = sf
    cur.execute("CREATE TABLE t (id NUMBER(38,0) PRIMARY KEY, v TEXT)")
    cur.execute("INSERT INTO t SELECT SEQ4() + 1, 'v' || SEQ4() FROM TABLE(GENERATOR(ROWCOUNT => 100))")
    cur.execute("CREATE TABLE other (id NUMBER(38,0) PRIMARY KEY)")
    cur.execute("INSERT INTO other VALUES (1), (2)")
    add(ws, options, chunk_size=30)
    failures = {(31,): 2, (61,): 99}  # the second chunk heals on retry, the third keeps failing
    flaky = lambda s: _Flaky(create_connector(s), failures)  # noqa: E731
    result = engine(ws, connector_factory=flaky).run(SyncRequest(connector="sf", tables=["T", "OTHER"]))
    assert result.status is SyncStatus.PARTIAL_SUCCESS
    by_name = {s.stream: s for s in result.streams}
    assert by_name["ERP.T"].chunks_failed == 1 and by_name["ERP.T"].rows_written == 70
    assert by_name["ERP.OTHER"].rows_written == 2
    failures.clear()
    retried = engine(ws).run(SyncRequest(connector="sf", retry_failed=True))
    assert retried.status is SyncStatus.SUCCESS, retried.error
    assert raw_rows(ws, by_name["ERP.T"].raw_table, ["ID", "V"]) == source_rows(cur, "t", ["id", "v"])


def test_table_dropped_after_discovery_fails_clearly(ws, sf):
    options, cur = sf
    cur.execute("CREATE TABLE keep (id NUMBER(38,0) PRIMARY KEY)")
    cur.execute("INSERT INTO keep VALUES (1), (2)")
    cur.execute("CREATE TABLE gone (id NUMBER(38,0) PRIMARY KEY)")
    add(ws, options)
    operations.discover_connector(ws, "sf", engine=engine(ws))
    cur.execute("DROP TABLE gone")
    result = sync(ws)
    assert result.status is SyncStatus.PARTIAL_SUCCESS
    by_name = {s.stream: s for s in result.streams}
    assert "does not exist" in by_name["ERP.GONE"].error and by_name["ERP.KEEP"].rows_written == 2


def test_validate_says_what_is_wrong(sf):
    options, _ = sf

    def fails(kind, words, code=None, password=PASSWORD, **extra):
        connector = create_connector(spec(options, password=password, **extra))
        try:
            with pytest.raises(kind) as err:
                connector.validate()
        finally:
            connector.close()
        assert words in err.value.message and err.value.hint, err.value.describe()
        assert code is None or err.value.code == code
        assert PASSWORD not in err.value.describe()
        return err.value

    # fakesnow creates a database named at connect time, so the listing is stood in for here
    missing = create_connector(spec(options, database="no_such_db"))
    missing._plain_rows = lambda sql, what: [{"name": "ERP_PROD"}, {"name": "SANDBOX"}]
    with pytest.raises(errors.DatabaseMissing) as err:
        missing._resolved()
    assert "database 'no_such_db' does not exist" in err.value.message
    fails(errors.DatabaseMissing, "schema 'nope' does not exist", schema="nope")
    fails(errors.SourceUnreachable, "cannot be reached", code="250001", port=free_port())
    fails(errors.ConfigError, "needs a password", password=None)
    fails(errors.ConfigError, "cannot be read", private_key_path="/nonexistent/key.p8")


def test_key_pair_authentication(sf, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    options, _ = sf
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "rsa_key.p8"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"key-pass")))
    ok = create_connector(spec(options, password="key-pass", private_key_path=str(path)))
    try:
        assert ok.connect_args()["authenticator"] == "SNOWFLAKE_JWT" and "password" not in ok.connect_args()
        assert "Connected to Snowflake" in ok.validate()
    finally:
        ok.close()
    for password, words in (("wrong-pass", "cannot be decrypted"), (None, "is encrypted")):
        bad = create_connector(spec(options, password=password, private_key_path=str(path)))
        with pytest.raises(errors.AuthenticationFailed) as err:
            bad.validate()
        assert words in err.value.message


@pytest.mark.parametrize("errno, sqlstate, msg, kind, words", [
    (390100, "08004", "Incorrect username or password was specified.", errors.AuthenticationFailed, "refused the user"),
    (390144, "08004", "JWT token is invalid.", errors.AuthenticationFailed, "refused the user"),
    (606, "57P03", "No active warehouse selected in the current session.  Select an active warehouse with the "
                   "'use warehouse' command.", errors.ConfigError, "no usable warehouse"),
    (2003, "02000", "SQL compilation error:\nDatabase 'ERP' does not exist or not authorized.",
     errors.DatabaseMissing, "database does not exist"),
    (2003, "42S02", "SQL compilation error:\nObject 'ERP.PUBLIC.READINGS' does not exist or not authorized.",
     errors.TableMissing, "no longer exists"),
    (3001, "42501", "SQL access control error:\nInsufficient privileges to operate on table 'READINGS'",
     errors.PermissionDenied, "lacks permission"),
    (904, "42000", "SQL compilation error: error line 1 at position 7\ninvalid identifier 'KWH'",
     errors.SchemaDrift, "columns changed"),
    (250001, "08001", "Could not connect to Snowflake backend after 2 attempt(s).Aborting",
     errors.SourceUnreachable, "cannot be reached"),
    (630, "57014", "Statement reached its statement or warehouse timeout of 3,600 second(s) and was canceled.",
     errors.TransientSourceError, "lost"),
])
def test_snowflake_errors_are_translated_with_their_codes(errno, sqlstate, msg, kind, words):
    from snowflake.connector.errors import DatabaseError

    connector = create_connector(spec({"account": "acme-prod", "username": "esg", "database": "ERP"}))
    translated = connector.translate_error(DatabaseError(msg=msg, errno=errno, sqlstate=sqlstate), "Reading")
    assert type(translated) is kind, translated.describe()
    assert words in translated.message and translated.code == f"{errno:06d}"


def test_rendered_sql_quotes_and_escapes():
    from esg_workbench.core.specs import ChunkRange, ReadScope, StreamRef

    connector = create_connector(spec({"account": "a", "username": "u", "database": "D"}))
    connector._names = ("D", "S")
    scope = ReadScope(columns=('we"ird', "v"), key=('we"ird', "id"), after=("it's \\ fine", 3),
                      cursor_field='we"ird', cursor_max=dt.datetime(2024, 1, 1, 12, 0, 0, 999999))
    sql = connector.read_sql(StreamRef("S", 'ta"ble'), scope, ChunkRange(upper=(dt.date(2024, 2, 1),)))
    assert 'FROM "D"."S"."ta""ble"' in sql
    assert """("we""ird" > 'it''s \\\\ fine' OR ("we""ird" = 'it''s \\\\ fine' AND ("id" > 3)))""" in sql
    assert """"we""ird" < '2024-01-01 12:00:01.000000'::TIMESTAMP_NTZ""" in sql
    assert """("we""ird" < '2024-02-01'::DATE)""" in sql
