"""MySqlConnector against a real MariaDB (fixtures in tests/conftest.py): validate and its
errors, discovery, samples, planning queries and chunk reads through ConnectorX."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import uuid
from decimal import Decimal

import pyarrow as pa
import pymysql
import pytest

from esg_workbench.connectors.mysql import MySqlConnector
from esg_workbench.connectors.registry import create_connector
from esg_workbench.core.errors import (
    AuthenticationFailed,
    Cancelled,
    DatabaseMissing,
    PermissionDenied,
    SchemaDrift,
    SourceError,
    SourceUnreachable,
    TableMissing,
    TransientSourceError,
)
from esg_workbench.core.specs import (
    CancelToken,
    ChunkRange,
    ColumnInfo,
    ConnectorSpec,
    ForeignKey,
    ReadScope,
    StreamRef,
)
from tests.conftest import MYSQL_HOST, MYSQL_PORT, MYSQL_USER, free_port

PW_USER, PW_PASSWORD = "esg_pw_user", "esg-test-pw"
NOPERM_USER = "esg_noperm_user"


# --- helpers -------------------------------------------------------------------------------


def run(conn, *statements, args=None):
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, args)


def rows_of(batches) -> list[dict]:
    return [row for batch in batches for row in batch.to_pylist()]


def read_all(connector, stream, scope, chunk=ChunkRange(), cancel=None) -> list[dict]:
    return rows_of(connector.read(stream, scope, chunk, cancel))


@pytest.fixture
def my(mysql_spec):
    connector = create_connector(mysql_spec)
    yield connector
    connector.close()


def stream_of(my, table):
    return StreamRef(my.schema, table)


def with_options(spec: ConnectorSpec, password=None, **options) -> ConnectorSpec:
    return dataclasses.replace(spec, options={**spec.options, **options}, password=password)


def _ensure_user(admin, user: str, password: str, database_pattern: str | None):
    """The test accounts of scripts/setup-test-servers.sh, made here if that has not run."""
    with admin.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM mysql.user WHERE user = %s AND host = '127.0.0.1'", (user,))
        exists = cur.fetchone()[0]
        if not exists:
            cur.execute("CREATE USER IF NOT EXISTS %s@'127.0.0.1' IDENTIFIED BY %s", (user, password))
            if database_pattern:
                cur.execute(f"GRANT ALL ON `{database_pattern}`.* TO %s@'127.0.0.1'", (user,))


@pytest.fixture
def pw_user(mysql_conn, mysql_database):
    """esg_pw_user / esg-test-pw with rights on the test databases."""
    _ensure_user(mysql_conn, PW_USER, PW_PASSWORD, "esg\\_test\\_%")
    return PW_USER


@pytest.fixture
def noperm_user(mysql_conn):
    _ensure_user(mysql_conn, NOPERM_USER, "", None)
    return NOPERM_USER


# --- validate and errors ------------------------------------------------------------------


def test_validate_ok_counts_tables_and_checks_the_read_path(mysql_conn, mysql_spec, my):
    run(mysql_conn, "CREATE TABLE a (id INT PRIMARY KEY)", "CREATE TABLE b (id INT PRIMARY KEY)",
        "CREATE VIEW v AS SELECT id FROM a")
    assert isinstance(my, MySqlConnector)
    assert my.schema == mysql_spec.options["database"]
    assert my.validate() == f"Connected. 2 tables readable in schema {mysql_spec.options['database']}."


def test_password_user_validates_and_a_wrong_password_is_refused(mysql_spec, pw_user):
    good = MySqlConnector(with_options(mysql_spec, password=PW_PASSWORD, username=pw_user))
    assert good.validate().startswith("Connected. 0 tables")
    bad = MySqlConnector(with_options(mysql_spec, password="not-the-password", username=pw_user))
    with pytest.raises(AuthenticationFailed) as err:
        bad.validate()
    e = err.value
    assert e.code == "1045" and not e.transient
    assert e.message == (f"Connecting: the MySQL server at {MYSQL_HOST}:{MYSQL_PORT} refused the user "
                         f"'{pw_user}' (wrong user name or password).")
    assert "not-the-password" not in e.describe()


def test_special_characters_in_password_and_database_name_reach_both_drivers(mysql_conn, mysql_spec):
    """The ConnectorX URL is percent-encoded: '@', ':', '/', '?', '#', '%', quotes, spaces."""
    user = f"esg_t_{uuid.uuid4().hex[:8]}"
    password = "p@ss:w/rd?#%'\\ &+="
    database = f"esg_test_{uuid.uuid4().hex[:6]} we%ird"
    run(mysql_conn, f"CREATE DATABASE `{database}`")
    try:
        run(mysql_conn, "CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", args=(user, password))
        run(mysql_conn, f"GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1'")
        run(mysql_conn, f"CREATE TABLE `{database}`.t (id INT PRIMARY KEY, v VARCHAR(5))",
            f"INSERT INTO `{database}`.t VALUES (1, 'one')")
        my = MySqlConnector(with_options(mysql_spec, password=password, username=user, database=database))
        assert my.validate() == f"Connected. 1 tables readable in schema {database}."
        stream = StreamRef(database, "t")
        assert read_all(my, stream, ReadScope(("id", "v"), ("id",))) == [{"id": 1, "v": "one"}]
        assert password not in repr(my.spec) and password not in my.read_sql(stream, ReadScope(("id",), ("id",)), ChunkRange())
        # a driver message echoing the password, in either form, is scrubbed
        from urllib.parse import quote
        leaked = RuntimeError(f"bad url mysql://{user}:{quote(password, safe='')}@h/ and {password}")
        assert password not in my.translate_error(leaked, "Reading").describe()
        assert quote(password, safe="") not in my.translate_error(leaked, "Reading").describe()
        my.close()
    finally:
        run(mysql_conn, "DROP USER IF EXISTS %s@'127.0.0.1'", args=(user,))
        run(mysql_conn, f"DROP DATABASE IF EXISTS `{database}`")


def test_connectorx_url_quotes_and_brackets():
    spec = ConnectorSpec("mysql", "m", {"host": "::1", "port": 3307, "database": "d b", "username": "u@x"},
                         password="p/w@")
    assert MySqlConnector(spec)._cx_url() == "mysql://u%40x:p%2Fw%40@[::1]:3307/d%20b?tcp_connect_timeout_ms=10000&tcp_keepalive_time_ms=30000"
    nopw = ConnectorSpec("mysql", "m", {"host": "db.example", "database": "d", "username": "u"})
    assert MySqlConnector(nopw)._cx_url() == "mysql://u@db.example:3306/d?tcp_connect_timeout_ms=10000&tcp_keepalive_time_ms=30000"
    assert MySqlConnector(nopw).sqlalchemy_url().render_as_string() == "mysql+pymysql://u@db.example:3306/d?charset=utf8mb4"


def test_unreachable_port_is_source_unreachable(mysql_spec):
    port = free_port()
    my = MySqlConnector(with_options(mysql_spec, port=port))
    with pytest.raises(SourceUnreachable) as err:
        my.validate()
    assert err.value.code == "2003" and err.value.transient
    assert err.value.message == (f"Connecting: the MySQL server at {MYSQL_HOST}:{port} cannot be reached "
                                 f"(user '{MYSQL_USER}', database '{mysql_spec.options['database']}').")


def test_unknown_database_is_database_missing(mysql_spec):
    my = MySqlConnector(with_options(mysql_spec, database="esg_test_no_such_db"))
    with pytest.raises(DatabaseMissing) as err:
        my.validate()
    assert err.value.code == "1049" and not err.value.transient
    assert err.value.message == (f"Connecting: the database 'esg_test_no_such_db' does not exist on "
                                 f"{MYSQL_HOST}:{MYSQL_PORT}.")


def test_user_without_grants_is_permission_denied(mysql_spec, noperm_user):
    my = MySqlConnector(with_options(mysql_spec, username=noperm_user))
    with pytest.raises(PermissionDenied) as err:
        my.validate()
    assert err.value.code == "1044"
    database = mysql_spec.options["database"]
    assert err.value.message == (
        f"Connecting: the user '{noperm_user}' lacks permission on database '{database}' at "
        f"{MYSQL_HOST}:{MYSQL_PORT} (Access denied for user '{noperm_user}'@'127.0.0.1' to database '{database}')."
    )


def test_select_denied_on_one_table_is_permission_denied_on_read(mysql_conn, mysql_database, mysql_spec):
    """A user who may read the database but not one table (errno 1142, through ConnectorX)."""
    user = f"esg_t_{uuid.uuid4().hex[:8]}"
    run(mysql_conn, "CREATE TABLE open_t (id INT PRIMARY KEY)", "CREATE TABLE closed_t (id INT PRIMARY KEY)",
        "INSERT INTO open_t VALUES (1)")
    try:
        run(mysql_conn, "CREATE USER %s@'127.0.0.1' IDENTIFIED BY 'pw'", args=(user,))
        run(mysql_conn, f"GRANT SELECT ON `{mysql_database}`.open_t TO %s@'127.0.0.1'", args=(user,))
        my = MySqlConnector(with_options(mysql_spec, password="pw", username=user))
        assert [s.table for s in my.list_streams()] == ["open_t"]
        assert read_all(my, stream_of(my, "open_t"), ReadScope(("id",), ("id",))) == [{"id": 1}]
        with pytest.raises(PermissionDenied) as err:
            read_all(my, stream_of(my, "closed_t"), ReadScope(("id",), ("id",)))
        assert err.value.code == "1142"
        assert err.value.message.startswith(f"Reading {mysql_database}.closed_t [start .. end): the user '{user}' lacks permission")
        my.close()
    finally:
        run(mysql_conn, "DROP USER IF EXISTS %s@'127.0.0.1'", args=(user,))


# --- error translation of messages seen from the drivers -------------------------------------


@pytest.mark.parametrize("text, kind, code", [
    # ConnectorX (RuntimeError, text only), as raised by connectorx 0.4 against MariaDB 10.11
    ("timed out waiting for connection: MySqlError { ERROR 1045 (28000): Access denied for user 'root'@'127.0.0.1' (using password: YES) }", AuthenticationFailed, "1045"),
    ("timed out waiting for connection: MySqlError { ERROR 1049 (42000): Unknown database 'nosuchdb_x' }", DatabaseMissing, "1049"),
    ("MySqlError { ERROR 1146 (42S02): Table 'esg_scratch.nosuch' doesn't exist }", TableMissing, "1146"),
    ("MySqlError { ERROR 1054 (42S22): Unknown column 'nosuch' in 'SELECT' }", SchemaDrift, "1054"),
    ("MySqlError { ERROR 1142 (42000): SELECT command denied to user 'u'@'localhost' for table `d`.`t` }", PermissionDenied, "1142"),
    ("timed out waiting for connection: DriverError { Could not connect to address `127.0.0.1:1': Connection refused (os error 111) }", SourceUnreachable, "2003"),
    ("timed out waiting for connection: DriverError { Could not connect to address `nosuchhost.invalid:3306': failed to lookup address information: Name or service not known }", SourceUnreachable, "2005"),
    ("MySqlError { ERROR 1927 (70100): Connection was killed }", TransientSourceError, "1927"),
    ("IoError { Connection reset by peer (os error 104) }", TransientSourceError, "2013"),
    ("MySqlError { ERROR 1064 (42000): You have an error in your SQL syntax }", SourceError, "1064"),
])
def test_connectorx_messages_map_to_errors(my, text, kind, code):
    err = my.translate_error(RuntimeError(text), "Reading x")
    assert type(err) is kind and err.code == code
    assert err.transient is (kind in (SourceUnreachable, TransientSourceError))


def test_connectorx_panics_map_to_errors(my):
    from esg_workbench.connectors.mysql import _ConnectorXPanic

    lost = my.translate_error(_ConnectorXPanic(
        "cx writer failed: Source(MySQLError(CodecError { IO error: `bytes remaining on stream' }))"), "Reading t")
    assert type(lost) is TransientSourceError and lost.code == "2013"
    value = my.translate_error(_ConnectorXPanic(
        "Could not retrieve `core::option::Option<chrono::naive::date::NaiveDate>`: Couldn't convert the value "
        "`Date(\"'0000-00-00'\")` to a desired type"), "Reading t")
    assert type(value) is SourceError and not value.transient
    assert value.message == (f"Reading t: ConnectorX cannot read a value of the MySQL server at {MYSQL_HOST}:{MYSQL_PORT} "
                             "(Could not retrieve `core::option::Option<chrono::naive::date::NaiveDate>`: Couldn't "
                             "convert the value `Date(\"'0000-00-00'\")` to a desired type).")
    unknown = my.translate_error(_ConnectorXPanic("not implemented: MYSQL_TYPE_GEOMETRY"), "Reading t")
    assert type(unknown) is SourceError and "MYSQL_TYPE_GEOMETRY" in unknown.message


@pytest.mark.parametrize("errno, kind", [
    (1045, AuthenticationFailed), (1049, DatabaseMissing), (1044, PermissionDenied), (1142, PermissionDenied),
    (1143, PermissionDenied), (1227, PermissionDenied), (1146, TableMissing), (1054, SchemaDrift),
    (2003, SourceUnreachable), (2005, SourceUnreachable), (2006, TransientSourceError),
    (2013, TransientSourceError), (2055, TransientSourceError), (1205, TransientSourceError),
    (1213, TransientSourceError),
])
def test_pymysql_errnos_map_to_errors(my, errno, kind):
    err = my.translate_error(pymysql.err.OperationalError(errno, "server words"), "Counting rows of x")
    assert type(err) is kind and err.code == str(errno)


def test_real_lock_wait_timeout_and_deadlock_are_transient(mysql_conn, mysql_database, my):
    run(mysql_conn, "CREATE TABLE acc (id INT PRIMARY KEY, v INT) ENGINE=InnoDB", "INSERT INTO acc VALUES (1, 0), (2, 0)")

    def session():
        conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, database=mysql_database)
        run(conn, "SET SESSION innodb_lock_wait_timeout = 1")
        return conn

    a, b = session(), session()
    try:
        run(a, "BEGIN", "UPDATE acc SET v = 1 WHERE id = 1")
        with pytest.raises(pymysql.err.OperationalError) as lock_wait:
            run(b, "UPDATE acc SET v = 2 WHERE id = 1")
        err = my.translate_error(lock_wait.value, "Reading acc")
        assert type(err) is TransientSourceError and err.code == "1205" and err.transient
        assert err.message == (f"Reading acc: the table is locked by another session on the MySQL server at "
                               f"{MYSQL_HOST}:{MYSQL_PORT} (waited 60 s, the connector's lock_timeout).")
        run(a, "ROLLBACK")

        run(b, "SET SESSION innodb_lock_wait_timeout = 20")
        run(a, "BEGIN", "UPDATE acc SET v = 1 WHERE id = 1")
        run(b, "BEGIN", "UPDATE acc SET v = 2 WHERE id = 2")
        failures = []

        def cross():
            try:
                run(b, "UPDATE acc SET v = 2 WHERE id = 1")
            except pymysql.err.MySQLError as exc:
                failures.append(exc)

        waiter = threading.Thread(target=cross)
        waiter.start()
        import time
        time.sleep(0.5)
        try:
            run(a, "UPDATE acc SET v = 1 WHERE id = 2")
        except pymysql.err.MySQLError as exc:
            failures.append(exc)
        waiter.join(30)
        assert len(failures) == 1
        err = my.translate_error(failures[0], "Reading acc")
        assert type(err) is TransientSourceError and err.code == "1213"
    finally:
        a.close()
        b.close()


def test_connection_killed_during_a_read_is_transient(mysql_conn, mysql_database, my, monkeypatch):
    """ConnectorX panics when its connection dies mid-stream; that is a lost connection."""
    from esg_workbench.connectors import mysql as module

    monkeypatch.setattr(module, "BATCH_ROWS", 200)
    run(mysql_conn, "CREATE TABLE victim_t (id INT PRIMARY KEY, pad CHAR(200) NOT NULL DEFAULT 'x')",
        "INSERT INTO victim_t (id) SELECT seq FROM seq_1_to_200000")
    stream = stream_of(my, "victim_t")
    killed = []
    with pytest.raises(TransientSourceError) as err:
        for _ in my.read(stream, ReadScope(("id", "pad"), ("id",)), ChunkRange()):
            if not killed:
                with mysql_conn.cursor() as cur:
                    cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND info LIKE %s "
                                "AND id <> CONNECTION_ID()", (mysql_database, "%victim_t%"))
                    killed = [row[0] for row in cur.fetchall()]
                    assert len(killed) == 1
                    cur.execute(f"KILL {killed[0]}")
    assert err.value.transient and err.value.code == "2013"
    assert err.value.message.startswith(f"Reading {mysql_database}.victim_t [start .. end): the connection to the "
                                        f"MySQL server at {MYSQL_HOST}:{MYSQL_PORT} was lost during the read")


def test_killed_connection_is_transient(mysql_conn, mysql_database, my):
    victim = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, database=mysql_database)
    try:
        run(mysql_conn, f"KILL {victim.thread_id()}")
        with pytest.raises(pymysql.err.OperationalError) as lost:
            run(victim, "SELECT 1")
        err = my.translate_error(lost.value, "Counting rows of t")
        assert type(err) is TransientSourceError and err.transient
        assert err.code in ("2013", "2006", "1927")
    finally:
        try:
            victim.close()
        except Exception:
            pass


# --- discovery and samples -----------------------------------------------------------------


def test_describe_columns_types_keys_foreign_keys_and_estimates(mysql_conn, my):
    run(mysql_conn,
        "CREATE TABLE sites (org INT NOT NULL, code VARCHAR(10) NOT NULL, name VARCHAR(100), PRIMARY KEY (org, code))",
        """CREATE TABLE readings (
               id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
               org INT NOT NULL, site VARCHAR(10) NOT NULL,
               kwh DECIMAL(12,3), co2 DOUBLE, ok TINYINT(1) NOT NULL DEFAULT 1,
               read_at DATETIME(6) NOT NULL, updated_at TIMESTAMP(3) NULL, day DATE,
               note TEXT, payload BLOB, kind ENUM('meter','invoice'), doc JSON, loc POINT,
               CONSTRAINT fk_site FOREIGN KEY (org, site) REFERENCES sites (org, code))""",
        "INSERT INTO sites VALUES (1, 'A', 'Plant A'), (1, 'B', 'Plant B'), (2, 'A', NULL)",
        "INSERT INTO readings (org, site, kwh, read_at) VALUES (1, 'A', 1.5, '2024-01-01'), (1, 'B', 2.5, '2024-01-02')",
        "ANALYZE TABLE sites, readings")
    assert [s.table for s in my.list_streams()] == ["readings", "sites"]
    infos = {i.stream.table: i for i in my.describe()}
    readings, sites = infos["readings"], infos["sites"]
    assert readings.stream == StreamRef(my.schema, "readings")
    assert sites.primary_key == ["org", "code"] and readings.primary_key == ["id"]
    assert readings.foreign_keys == [ForeignKey(("org", "site"), my.schema, "sites", ("org", "code"))]
    assert (sites.row_estimate, readings.row_estimate) == (3, 2)
    assert readings.columns == [
        ColumnInfo("id", "BIGINT(20) UNSIGNED", False, True, "integer"),
        ColumnInfo("org", "INTEGER(11)", False, False, "integer"),
        ColumnInfo("site", "VARCHAR(10)", False, False, "text"),
        ColumnInfo("kwh", "DECIMAL(12, 3)", True, False, "decimal"),
        ColumnInfo("co2", "DOUBLE", True, False, "float"),
        ColumnInfo("ok", "TINYINT(1)", False, False, "integer"),
        ColumnInfo("read_at", "DATETIME(6)", False, False, "timestamp"),
        ColumnInfo("updated_at", "TIMESTAMP(3)", True, False, "timestamp"),
        ColumnInfo("day", "DATE", True, False, "date"),
        ColumnInfo("note", "TEXT", True, False, "text"),
        ColumnInfo("payload", "BLOB", True, False, "binary"),
        ColumnInfo("kind", "ENUM('meter','invoice')", True, False, "text"),
        ColumnInfo("doc", "LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", True, False, "text"),
        ColumnInfo("loc", "POINT", True, False, "binary"),
    ]
    # describe of one stream; a missing one is simply absent
    assert [i.stream.table for i in my.describe([stream_of(my, "sites"), stream_of(my, "nope")])] == ["sites"]


def test_samples_with_odd_values(mysql_conn, my):
    run(mysql_conn,
        """CREATE TABLE odd (id INT PRIMARY KEY, txt VARCHAR(40), raw BLOB, amount DECIMAL(30,15),
                             big DECIMAL(65,2), d DATE, ts DATETIME(6), flag BOOLEAN, doc JSON, tag ENUM('a','ü'))""")
    run(mysql_conn, "INSERT INTO odd VALUES (1, 'emoji 😀 ünï', x'00ff', 123456789012345.123456789012345, "
                    "12345678901234567890123456789012345678901234567890.12, '2024-02-29', '2024-02-29 23:59:59.999999', "
                    "TRUE, '{\"a\": [1, 2]}', 'ü')",
        "INSERT INTO odd VALUES (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        "INSERT INTO odd VALUES (3, '', x'', -0.000000000000001, 0, '0000-00-00', '0000-00-00 00:00:00', FALSE, 'null', 'a')")
    rows = my.sample(stream_of(my, "odd"), 10)
    assert rows == [
        {"id": 1, "txt": "emoji 😀 ünï", "raw": "0x00ff", "amount": "123456789012345.123456789012345",
         "big": "12345678901234567890123456789012345678901234567890.12", "d": "2024-02-29",
         "ts": "2024-02-29T23:59:59.999999", "flag": 1, "doc": '{"a": [1, 2]}', "tag": "ü"},
        {"id": 2, "txt": None, "raw": None, "amount": None, "big": None, "d": None, "ts": None, "flag": None,
         "doc": None, "tag": None},
        {"id": 3, "txt": "", "raw": "0x", "amount": "-1E-15", "big": "0.00", "d": "0000-00-00",
         "ts": "0000-00-00 00:00:00.000000", "flag": 0, "doc": "null", "tag": "a"},
    ]
    assert my.sample(stream_of(my, "odd"), 1) == rows[:1]


# --- reading: types -------------------------------------------------------------------------


def test_read_keeps_values_and_declared_types(mysql_conn, my):
    run(mysql_conn, """CREATE TABLE vals (
            id INT PRIMARY KEY, d12 DECIMAL(12,3), d30 DECIMAL(30,15), d65 DECIMAL(65,2), d29 DECIMAL(29,0),
            dt6 DATETIME(6), dt0 DATETIME, ts3 TIMESTAMP(3) NULL, d DATE, tm TIME(6), s VARCHAR(50), b BLOB,
            bo BOOLEAN, j JSON, e ENUM('a','b','ü'), `select` INT, `sp ace` TEXT, f DOUBLE,
            bi BIGINT UNSIGNED, yr YEAR, pt POINT, u UUID)""")
    run(mysql_conn,
        "INSERT INTO vals VALUES (1, 123456789.123, 123456789012345.123456789012345, "
        "12345678901234567890123456789012345678901234567890.12, 99999999999999999999999999999, "
        "'2024-03-01 12:34:56.123456', '2024-03-01 12:34:56', '2024-03-01 12:34:56.789', '2024-03-01', "
        "'12:34:56.654321', 'emoji 😀 ünï', x'00ff10', TRUE, '{\"a\": [1, 2]}', 'ü', 7, 'hello world', 2.25, "
        "18446744073709551615, 2024, POINT(1, 2), '123e4567-e89b-12d3-a456-426614174000')",
        "INSERT INTO vals (id) VALUES (2)",
        "INSERT INTO vals VALUES (3, -0.001, -0.000000000000001, 0, -1, '1000-01-01 00:00:00.000001', "
        "'9999-12-31 23:59:59', '1970-01-01 00:00:01', '1000-01-01', '23:59:59.999999', '', x'', FALSE, 'null', "
        "'a', 0, '', -0.5, 0, 1901, NULL, NULL)")
    stream = stream_of(my, "vals")
    columns = tuple(c.name for c in my._table(stream).columns)
    batches = list(my.read(stream, ReadScope(columns, ("id",)), ChunkRange()))
    schema = batches[0].schema
    assert dict(zip(schema.names, schema.types)) == {
        "id": pa.int32(), "d12": pa.decimal128(12, 3), "d30": pa.decimal128(30, 15), "d65": pa.decimal256(65, 2),
        "d29": pa.decimal128(29, 0), "dt6": pa.timestamp("us"), "dt0": pa.timestamp("us"),
        "ts3": pa.timestamp("us"), "d": pa.date32(), "tm": pa.duration("us"), "s": pa.string(),
        "b": pa.large_binary(), "bo": pa.int8(), "j": pa.string(), "e": pa.string(), "select": pa.int32(),
        "sp ace": pa.string(), "f": pa.float64(), "bi": pa.uint64(), "yr": pa.int16(), "pt": pa.large_binary(),
        "u": pa.string(),
    }
    rows = rows_of(batches)
    assert rows[0] == {
        "id": 1, "d12": Decimal("123456789.123"), "d30": Decimal("123456789012345.123456789012345"),
        "d65": Decimal("12345678901234567890123456789012345678901234567890.12"),
        "d29": Decimal("99999999999999999999999999999"),
        "dt6": dt.datetime(2024, 3, 1, 12, 34, 56, 123456), "dt0": dt.datetime(2024, 3, 1, 12, 34, 56),
        "ts3": dt.datetime(2024, 3, 1, 12, 34, 56, 789000), "d": dt.date(2024, 3, 1),
        "tm": dt.timedelta(hours=12, minutes=34, seconds=56, microseconds=654321), "s": "emoji 😀 ünï", "b": b"\x00\xff\x10", "bo": 1,
        "j": '{"a": [1, 2]}', "e": "ü", "select": 7, "sp ace": "hello world", "f": 2.25,
        "bi": 18446744073709551615, "yr": 2024,
        "pt": bytes.fromhex("0101000000000000000000f03f0000000000000040"),
        "u": "123e4567-e89b-12d3-a456-426614174000",
    }
    assert rows[1] == {name: (2 if name == "id" else None) for name in columns}
    assert rows[2]["d30"] == Decimal("-0.000000000000001")  # ConnectorX alone reads 0 here
    assert rows[2]["dt6"] == dt.datetime(1000, 1, 1, 0, 0, 0, 1)
    assert rows[2]["tm"] == dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)
    assert (rows[2]["bo"], rows[2]["d29"], rows[2]["f"]) == (0, Decimal(-1), -0.5)


def test_zero_dates_read_as_null(mysql_conn, my):
    run(mysql_conn, "SET SESSION sql_mode = ''",
        "CREATE TABLE z (id INT PRIMARY KEY, d DATE, dt DATETIME(6), ts TIMESTAMP NULL)",
        "INSERT INTO z VALUES (1, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00'), "
        "(2, '2024-00-00', '2024-02-00 10:00:00', NULL), (3, '2024-01-02', '2024-01-02 03:04:05.5', '2024-01-02 03:04:05')")
    rows = read_all(my, stream_of(my, "z"), ReadScope(("id", "d", "dt", "ts"), ("id",)))
    assert rows == [
        {"id": 1, "d": None, "dt": None, "ts": None},
        {"id": 2, "d": None, "dt": None, "ts": None},
        {"id": 3, "d": dt.date(2024, 1, 2), "dt": dt.datetime(2024, 1, 2, 3, 4, 5, 500000),
         "ts": dt.datetime(2024, 1, 2, 3, 4, 5)},
    ]


def test_time_outside_a_day_and_negative_reads_as_an_interval(mysql_conn, my):
    """MySQL's TIME is a signed duration up to +-838:59:59.999999: every value is read."""
    run(mysql_conn, "CREATE TABLE dur (id INT PRIMARY KEY, spent TIME(6))",
        "INSERT INTO dur VALUES (1, '-838:59:59.999999'), (2, '838:59:59.999999'), (3, '-00:00:00.000001'), "
        "(4, '24:00:00'), (5, NULL)")
    rows = read_all(my, stream_of(my, "dur"), ReadScope(("id", "spent"), ("id",)))
    hours = dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999)
    assert [r["spent"] for r in rows] == [-hours, hours, dt.timedelta(microseconds=-1), dt.timedelta(hours=24), None]


def test_timestamps_are_utc_in_planning_and_reading(mysql_conn, my):
    run(mysql_conn, "SET SESSION time_zone = '+02:00'",
        "CREATE TABLE tz (id INT PRIMARY KEY, at TIMESTAMP(6) NULL)",
        "INSERT INTO tz VALUES (1, '2024-03-01 01:30:00.000001'), (2, '2024-03-01 02:30:00')")
    stream = stream_of(my, "tz")
    expected = [dt.datetime(2024, 2, 29, 23, 30, 0, 1), dt.datetime(2024, 3, 1, 0, 30)]
    scope = ReadScope(("id", "at"), ("at", "id"), cursor_field="at")
    assert [r["at"] for r in read_all(my, stream, scope)] == expected
    assert my.cursor_max(stream, "at") == expected[1]
    assert my.window_counts(stream, scope, "day") == [(dt.datetime(2024, 2, 29), 1), (dt.datetime(2024, 3, 1), 1)]
    # a bound read back from planning selects exactly the row it names, to the microsecond
    assert [r["id"] for r in read_all(my, stream, scope, ChunkRange((expected[0],), (expected[1],)))] == [1]


def test_cancel_between_batches(mysql_conn, my, monkeypatch):
    from esg_workbench.connectors import mysql as module

    monkeypatch.setattr(module, "BATCH_ROWS", 100)
    run(mysql_conn, "CREATE TABLE n (id INT PRIMARY KEY)",
        "INSERT INTO n SELECT seq FROM seq_1_to_1000")
    token = CancelToken()
    seen = 0
    with pytest.raises(Cancelled):
        for batch in my.read(stream_of(my, "n"), ReadScope(("id",), ("id",)), ChunkRange(), token):
            seen += batch.num_rows
            token.cancel()
    assert seen == 100
    # the connector still reads afterwards
    assert len(read_all(my, stream_of(my, "n"), ReadScope(("id",), ("id",)), ChunkRange((1,), (11,)))) == 10


# --- reading: chunks --------------------------------------------------------------------------


def chunk_ids(my, stream, scope, bounds, key_of):
    """Read every [lower, upper) chunk between consecutive bounds; check each row lies in its chunk."""
    edges = [None, *bounds, None]
    chunks = []
    for lower, upper in zip(edges, edges[1:]):
        rows = read_all(my, stream, scope, ChunkRange(lower, upper))
        for row in rows:
            key = key_of(row)
            assert lower is None or key[: len(lower)] >= lower
            assert upper is None or key[: len(upper)] < upper
        chunks.append([key_of(r) for r in rows])
    return chunks


def test_composite_text_key_chunks_have_no_gap_or_overlap(mysql_conn, my):
    """A VARCHAR key with quotes and backslashes, used as rendered chunk bounds."""
    names = ["O'Brien\\", "O'Brien", "O''Brien", "a\\'b", "back\\\\slash", "ünï", "😀", "Z", "z", "%_", "\"q\""]
    run(mysql_conn, "CREATE TABLE people (name VARCHAR(40) COLLATE utf8mb4_bin NOT NULL, n INT NOT NULL, "
                    "v INT, PRIMARY KEY (name, n))")
    with mysql_conn.cursor() as cur:
        cur.executemany("INSERT INTO people VALUES (%s, %s, %s)",
                        [(name, n, i * 10 + n) for i, name in enumerate(names) for n in range(4)])
    stream = stream_of(my, "people")
    scope = ReadScope(("name", "n", "v"), ("name", "n"))
    everything = [(r["name"], r["n"]) for r in read_all(my, stream, scope)]
    assert sorted(everything, key=lambda k: (k[0].encode(), k[1])) == everything and len(everything) == 44
    assert my.count(stream, scope) == 44
    for every in (1, 3, 4, 7, 43, 44, 100):
        bounds = my.boundaries(stream, scope, every)
        assert bounds == everything[every::every]
        chunks = chunk_ids(my, stream, scope, bounds, lambda r: (r["name"], r["n"]))
        assert [k for chunk in chunks for k in chunk] == everything
        assert [len(c) for c in chunks[:-1]] == [every] * len(bounds)
    # the bound naming O'Brien\ exactly
    start = everything.index(("O'Brien\\", 0))
    rows = read_all(my, stream, scope, ChunkRange(("O'Brien\\",), ("O'Brien\\", 2)))
    assert [(r["name"], r["n"]) for r in rows] == everything[start:start + 2]
    # a prefix bound and counts within a chunk
    assert my.count(stream, scope, ChunkRange(("O'Brien\\",), ("O'Brien\\", 3))) == 3


def test_cursor_and_id_key_with_ties_nulls_checkpoint_and_upper_bound(mysql_conn, my):
    run(mysql_conn, "CREATE TABLE ev (id INT PRIMARY KEY, updated_at DATETIME(6) NULL, v INT, KEY (updated_at, id))")
    base = dt.datetime(2024, 3, 1, 10, 0, 0)
    values = []
    for i in range(1, 121):
        if i % 10 == 0:
            at = None
        else:
            at = base + dt.timedelta(microseconds=(i // 7))  # runs of 7 tied cursor values, 1 µs apart
        values.append((i, at, i * 2))
    with mysql_conn.cursor() as cur:
        cur.executemany("INSERT INTO ev VALUES (%s, %s, %s)", values)
    stream = stream_of(my, "ev")
    scope = ReadScope(("id", "updated_at", "v"), ("updated_at", "id"), cursor_field="updated_at")
    ordered = sorted((at, i) for i, at, _ in values if at is not None)
    key = lambda r: (r["updated_at"], r["id"])  # noqa: E731
    assert my.count(stream, scope) == 108
    assert my.null_cursor_count(stream, "updated_at") == 12
    assert my.cursor_max(stream, "updated_at") == base + dt.timedelta(microseconds=17)
    for every in (1, 5, 7, 13):
        bounds = my.boundaries(stream, scope, every)
        assert bounds == ordered[every::every]
        chunks = chunk_ids(my, stream, scope, bounds, key)
        assert [k for chunk in chunks for k in chunk] == ordered
    # a bound in the middle of a tie group splits it exactly
    tie = base + dt.timedelta(microseconds=3)
    assert [r["id"] for r in read_all(my, stream, scope, ChunkRange((tie, 24), (tie, 27)))] == [24, 25, 26]
    # a cursor-only (window) bound takes the whole tie group
    assert [r["id"] for r in read_all(my, stream, scope, ChunkRange((tie,), (tie + dt.timedelta(microseconds=1),)))] == [21, 22, 23, 24, 25, 26, 27]
    # rows without a cursor, chunked by id
    null_chunk = ChunkRange(null_cursor=True)
    assert [r["id"] for r in read_all(my, stream, scope, null_chunk)] == list(range(10, 121, 10))
    assert my.boundaries(stream, scope, 5, within=null_chunk) == [(60,), (110,)]
    assert [r["id"] for r in read_all(my, stream, scope, ChunkRange((60,), (110,), null_cursor=True))] == [60, 70, 80, 90, 100]
    # a checkpoint inside a tie group and an upper cursor bound fixed at sync start
    resumed = dataclasses.replace(scope, after=(tie, 24), cursor_max=base + dt.timedelta(microseconds=4))
    assert [r["id"] for r in read_all(my, stream, resumed)] == [25, 26, 27, 28, 29, 31, 32, 33, 34]
    assert my.count(stream, resumed) == 9
    assert my.key_range(stream, resumed) == (tie, base + dt.timedelta(microseconds=4), 9)


def test_leading_key_bound_lets_mariadb_range_scan(mysql_conn, my):
    run(mysql_conn, "CREATE TABLE big (id INT PRIMARY KEY, at DATETIME NOT NULL, KEY (at, id))",
        "INSERT INTO big SELECT seq, '2024-01-01' + INTERVAL seq MINUTE FROM seq_1_to_5000", "ANALYZE TABLE big")
    stream = stream_of(my, "big")
    scope = ReadScope(("id",), ("at", "id"), cursor_field="at")
    chunk = ChunkRange((dt.datetime(2024, 1, 2), 1440), (dt.datetime(2024, 1, 2, 1), 1500))
    sql = my.read_sql(stream, scope, chunk)
    with mysql_conn.cursor() as cur:
        cur.execute("EXPLAIN " + sql)
        plan = cur.fetchone()
        columns = [d[0] for d in cur.description]
    plan = dict(zip(columns, plan))
    assert plan["type"] == "range" and plan["key"] == "at"
    assert [r["id"] for r in read_all(my, stream, scope, chunk)] == list(range(1440, 1500))


def test_binary_key_bounds(mysql_conn, my):
    run(mysql_conn, "CREATE TABLE bk (k VARBINARY(4) NOT NULL, n INT NOT NULL, PRIMARY KEY (k, n))",
        "INSERT INTO bk VALUES (x'00', 1), (x'27', 1), (x'5c', 1), (x'ff10', 1), (x'ff10', 2), (x'ffff', 1)")
    stream = stream_of(my, "bk")
    scope = ReadScope(("k", "n"), ("k", "n"))
    assert my.boundaries(stream, scope, 2) == [(b"\\", 1), (b"\xff\x10", 2)]
    rows = read_all(my, stream, scope, ChunkRange((b"'",), (b"\xff\x10", 2)))
    assert [(r["k"], r["n"]) for r in rows] == [(b"'", 1), (b"\\", 1), (b"\xff\x10", 1)]
    assert my.count(stream, scope, ChunkRange((b"'",), (b"\xff\x10", 2))) == 3


def test_decimal_key_orders_as_a_number(mysql_conn, my):
    """Wide decimals are selected as text; ordering and bounds still use the column."""
    run(mysql_conn, "CREATE TABLE dk (k DECIMAL(40,0) PRIMARY KEY)",
        "INSERT INTO dk VALUES (9), (10), (100), (-1), (1234567890123456789012345678901234567890)")
    stream = stream_of(my, "dk")
    scope = ReadScope(("k",), ("k",))
    ks = [r["k"] for r in read_all(my, stream, scope)]
    assert ks == [Decimal(-1), Decimal(9), Decimal(10), Decimal(100), Decimal("1234567890123456789012345678901234567890")]
    assert [r["k"] for r in read_all(my, stream, scope, ChunkRange((Decimal(9),), (Decimal(100),)))] == [9, 10]


def test_window_counts_day_week_month(mysql_conn, my):
    run(mysql_conn, "CREATE TABLE w (id INT PRIMARY KEY, at DATETIME(6), day DATE)")
    stamps = ["2024-02-29 23:59:59.999999", "2024-03-01 00:00:00", "2024-03-03 12:00:00",  # Thu, Fri, Sun
              "2024-03-04 00:00:00", "2024-03-10 23:00:00", "2024-03-11 08:00:00", "2024-12-31 10:00:00",
              "2025-01-01 00:00:00"]
    with mysql_conn.cursor() as cur:
        cur.executemany("INSERT INTO w VALUES (%s, %s, DATE(%s))", [(i, s, s) for i, s in enumerate(stamps, 1)])
        cur.execute("INSERT INTO w VALUES (99, NULL, NULL)")
    stream = stream_of(my, "w")
    D = dt.datetime
    scope = ReadScope(("id", "at"), ("at", "id"), cursor_field="at")
    assert my.window_counts(stream, scope, "day") == [
        (D(2024, 2, 29), 1), (D(2024, 3, 1), 1), (D(2024, 3, 3), 1), (D(2024, 3, 4), 1),
        (D(2024, 3, 10), 1), (D(2024, 3, 11), 1), (D(2024, 12, 31), 1), (D(2025, 1, 1), 1)]
    assert my.window_counts(stream, scope, "week") == [
        (D(2024, 2, 26), 3), (D(2024, 3, 4), 2), (D(2024, 3, 11), 1), (D(2024, 12, 30), 2)]
    assert my.window_counts(stream, scope, "month") == [
        (D(2024, 2, 1), 1), (D(2024, 3, 1), 5), (D(2024, 12, 1), 1), (D(2025, 1, 1), 1)]
    # a DATE cursor gives the same DATETIME window starts
    day_scope = ReadScope(("id", "day"), ("day", "id"), cursor_field="day")
    assert my.window_counts(stream, day_scope, "week") == my.window_counts(stream, scope, "week")
    # window starts used as chunk bounds select each window's rows exactly
    starts = [s for s, _ in my.window_counts(stream, scope, "week")]
    chunks = chunk_ids(my, stream, scope, [(s,) for s in starts[1:]], lambda r: (r["at"], r["id"]))
    assert [len(c) for c in chunks] == [3, 2, 1, 2]
    day_chunks = chunk_ids(my, stream, day_scope, [(s,) for s in starts[1:]],
                           lambda r: (dt.datetime.combine(r["day"], dt.time()), r["id"]))
    assert [[i for _, i in c] for c in day_chunks] == [[1, 2, 3], [4, 5], [6], [7, 8]]


def test_hostile_identifiers_end_to_end(mysql_conn, my):
    table = 'we"ird `tab` ünï'
    quoted = "`" + table.replace("`", "``") + "`"
    run(mysql_conn, f"CREATE TABLE {quoted} (`select` INT NOT NULL, `a col` VARCHAR(10), `o'q` DATE, "
                    f"`50%` DECIMAL(5,2), PRIMARY KEY (`select`))",
        f"INSERT INTO {quoted} VALUES (1, 'x', '2024-01-01', 1), (2, NULL, NULL, NULL), "
        f"(3, 'z''', '2024-01-03', 3), (4, '\\\\', '2024-01-04', 4.5)")
    assert [s.table for s in my.list_streams()] == [table]
    (info,) = my.describe()
    assert info.stream.table == table and info.primary_key == ["select"]
    assert [c.name for c in info.columns] == ["select", "a col", "o'q", "50%"]
    assert info.row_estimate is not None
    stream = info.stream
    scope = ReadScope(("select", "a col", "o'q", "50%"), ("select",))
    assert my.sample(stream, 2) == [{"select": 1, "a col": "x", "o'q": "2024-01-01", "50%": "1.00"},
                                    {"select": 2, "a col": None, "o'q": None, "50%": None}]
    assert my.count(stream, scope) == 4 and my.key_range(stream, scope) == (1, 4, 4)
    assert my.boundaries(stream, scope, 2) == [(3,)]
    batches = list(my.read(stream, scope, ChunkRange((2,), None)))
    assert batches[0].schema.names == ["select", "a col", "o'q", "50%"]
    assert rows_of(batches) == [
        {"select": 2, "a col": None, "o'q": None, "50%": None},
        {"select": 3, "a col": "z'", "o'q": dt.date(2024, 1, 3), "50%": Decimal("3.00")},
        {"select": 4, "a col": "\\", "o'q": dt.date(2024, 1, 4), "50%": Decimal("4.50")},
    ]
    cursor_scope = ReadScope(("select", "o'q"), ("o'q", "select"), cursor_field="o'q")
    assert my.window_counts(stream, cursor_scope, "month") == [(dt.datetime(2024, 1, 1), 3)]
    assert my.cursor_max(stream, "o'q") == dt.date(2024, 1, 4)


def test_table_dropped_after_discovery_is_table_missing(mysql_conn, mysql_database, my):
    run(mysql_conn, "CREATE TABLE gone (id INT PRIMARY KEY)", "INSERT INTO gone VALUES (1)")
    stream = stream_of(my, "gone")
    scope = ReadScope(("id",), ("id",))
    assert my.describe([stream])[0].primary_key == ["id"]
    run(mysql_conn, "DROP TABLE gone")
    with pytest.raises(TableMissing) as err:
        read_all(my, stream, scope)
    assert err.value.code == "1146"
    assert err.value.message == (f"Reading {mysql_database}.gone [start .. end): the table no longer exists in "
                                 f"database '{mysql_database}' at {MYSQL_HOST}:{MYSQL_PORT}.")
    with pytest.raises(TableMissing):
        my.count(stream, scope)
    # a fresh connector (nothing cached) says the same
    fresh = MySqlConnector(my.spec)
    with pytest.raises(TableMissing):
        read_all(fresh, stream, scope)


def test_column_dropped_after_discovery_is_schema_drift(mysql_conn, my):
    run(mysql_conn, "CREATE TABLE shrink (id INT PRIMARY KEY, kwh DECIMAL(10,2))", "INSERT INTO shrink VALUES (1, 2.5)")
    stream = stream_of(my, "shrink")
    my.describe([stream])
    run(mysql_conn, "ALTER TABLE shrink DROP COLUMN kwh")
    with pytest.raises(SchemaDrift) as err:
        read_all(my, stream, ReadScope(("id", "kwh"), ("id",)))
    assert err.value.code == "1054"


def test_widened_decimal_after_discovery_is_read_as_it_is_now_not_rounded(mysql_conn, my):
    """Reads take each column's type from information_schema when they start (and again
    after a re-discovery), so a column widened since discovery is read whole."""
    run(mysql_conn, "CREATE TABLE widen (id INT PRIMARY KEY, kwh DECIMAL(10,2))", "INSERT INTO widen VALUES (1, 2.5)")
    stream = stream_of(my, "widen")
    my.describe([stream])
    assert read_all(my, stream, ReadScope(("id", "kwh"), ("id",))) == [{"id": 1, "kwh": Decimal("2.50")}]
    run(mysql_conn, "ALTER TABLE widen MODIFY kwh DECIMAL(12,4)", "UPDATE widen SET kwh = 2.5001")
    my.describe([stream])  # re-discovery (every sync does one) reads it
    batches = list(my.read(stream, ReadScope(("id", "kwh"), ("id",)), ChunkRange()))
    assert batches[0].schema.field("kwh").type == pa.decimal128(12, 4)
    assert rows_of(batches) == [{"id": 1, "kwh": Decimal("2.5001")}]


def test_empty_chunk_reads_no_rows(mysql_conn, my):
    run(mysql_conn, "CREATE TABLE e (id INT PRIMARY KEY, v DECIMAL(40,2))", "INSERT INTO e VALUES (1, 1.5)")
    assert read_all(my, stream_of(my, "e"), ReadScope(("id", "v"), ("id",)), ChunkRange((5,), None)) == []


# --- the sync engine end to end -----------------------------------------------------------------


def test_engine_full_and_delta_from_mariadb(mysql_conn, mysql_spec, workspace_url):
    import sqlalchemy as sa

    from esg_workbench.core.specs import SyncStatus
    from esg_workbench.sync import operations
    from esg_workbench.sync.engine import SyncEngine, SyncRequest
    from esg_workbench.workspace import open_workspace

    run(mysql_conn, "CREATE TABLE readings (id INT PRIMARY KEY, site VARCHAR(10), kwh DECIMAL(12,3), "
                    "updated_at DATETIME(6) NOT NULL)",
        "INSERT INTO readings SELECT seq, CONCAT('S', seq % 7), seq * 1.125, "
        "'2024-01-01' + INTERVAL seq MINUTE + INTERVAL (seq % 3) MICROSECOND FROM seq_1_to_3000")
    ws = open_workspace(workspace_url)
    try:
        operations.add_connector(ws, "my", "mysql", {**mysql_spec.options, "cursor_field": "updated_at",
                                                       "chunk_size": 700})
        engine = SyncEngine(ws, retry_delays=(0.01, 0.02, 0.04))
        first = engine.run(SyncRequest(connector="my"))
        assert first.status is SyncStatus.SUCCESS
        stream = first.streams[0]
        assert stream.rows_written == 3000 and stream.chunks_planned == 5
        run(mysql_conn, "UPDATE readings SET kwh = kwh + 1, updated_at = '2030-01-01' WHERE id % 1000 = 1")
        delta = engine.run(SyncRequest(connector="my", load_type="delta"))
        assert delta.status is SyncStatus.SUCCESS
        prep = ws.engine.dialect.identifier_preparer
        with ws.read() as conn:
            landed = conn.execute(sa.text(
                f"SELECT id, site, kwh, updated_at FROM {prep.quote(stream.raw_table)} ORDER BY id")).all()
        with mysql_conn.cursor() as cur:
            cur.execute("SELECT id, site, kwh, updated_at FROM readings ORDER BY id")
            source = [tuple(r) for r in cur.fetchall()]
        assert [tuple(r) for r in landed] == source
    finally:
        ws.close()


# --- tables without a primary key ------------------------------------------------------------------


def test_a_keyless_table_is_chunked_along_a_unique_index_and_resumes_exactly_once(mysql_conn, mysql_spec, workspace_url):
    from collections import Counter

    import sqlalchemy as sa

    from esg_workbench.core.specs import SyncStatus
    from esg_workbench.sync import operations
    from esg_workbench.sync.engine import SyncEngine, SyncRequest
    from esg_workbench.workspace import open_workspace

    run(mysql_conn, "CREATE TABLE nokey (code VARCHAR(20) NOT NULL, part INT NOT NULL, note TEXT, "
                    "UNIQUE KEY a_nullable (note(10)), UNIQUE KEY by_code (code, part))",
        "INSERT INTO nokey SELECT CONCAT('c', seq % 7), seq, IF(seq % 3 = 0, NULL, CONCAT('n', seq)) FROM seq_1_to_5000")
    run(mysql_conn, "CREATE TABLE heap (v INT)", "INSERT INTO heap SELECT seq FROM seq_1_to_3000")
    my = create_connector(mysql_spec)
    try:
        assert my.unique_key(stream_of(my, "nokey")) == ("code", "part")  # a_nullable is a prefix index
        assert my.unique_key(stream_of(my, "heap")) == ()
        assert my.keyless_chunks(stream_of(my, "heap"), ReadScope(("v",), ()), 3000, 1000) == [ChunkRange()]
    finally:
        my.close()
    ws = open_workspace(workspace_url)
    try:
        operations.add_connector(ws, "my", "mysql", {**mysql_spec.options, "chunk_size": 1000})
        engine = SyncEngine(ws, retry_delays=(0.01,))
        engine.on_progress = lambda e: engine.cancel.cancel() if e.stream.endswith("nokey") and e.chunks_done >= 2 else None
        first = engine.run(SyncRequest(connector="my", tables=["nokey"]))
        assert first.status is SyncStatus.CANCELLED
        assert first.streams[0].chunks_planned == 5
        resumed = SyncEngine(ws, retry_delays=(0.01,)).run(SyncRequest(connector="my", resume=True))
        assert resumed.status is SyncStatus.SUCCESS, resumed.error
        with ws.read() as conn:
            landed = Counter(tuple(r) for r in conn.execute(sa.text(
                f'SELECT code, part, note FROM "{resumed.streams[0].raw_table}"')))
        with mysql_conn.cursor() as cur:
            cur.execute("SELECT code, part, note FROM nokey")
            assert landed == Counter(tuple(r) for r in cur.fetchall())  # no row lost, none twice
    finally:
        ws.close()


def test_random_samples(mysql_conn, my):
    run(mysql_conn, "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO big SELECT seq, CONCAT('v', seq) FROM seq_1_to_20000", "ANALYZE TABLE big")
    stream = stream_of(my, "big")
    assert [r["id"] for r in my.sample(stream, 30)] == list(range(1, 31))
    one, two = my.sample(stream, 30, random=True), my.sample(stream, 30, random=True)
    for rows in (one, two):
        assert len({r["id"] for r in rows}) == 30 and all(r["v"] == f"v{r['id']}" for r in rows)
        assert max(r["id"] for r in rows) > 30
    assert {r["id"] for r in one} != {r["id"] for r in two}
    t = my.table_clause(stream, ["id"])
    sql = str(my.random_sample_query(t, ["id"], 30, 20000).compile(dialect=my.engine.dialect,
                                                                    compile_kwargs={"literal_binds": True}))
    assert "rand() < 0.006" in sql and "ORDER BY rand()" in sql


def test_samples_show_zero_dates_and_long_times_as_mysql_writes_them(mysql_conn, my):
    run(mysql_conn, "SET SESSION sql_mode = ''",
        "CREATE TABLE z (id INT PRIMARY KEY, d DATE, t TIME(6))",
        "INSERT INTO z VALUES (1, '0000-00-00', '-838:59:59'), (2, '2024-00-00', '100:00:00.5'), (3, NULL, NULL)")
    assert my.sample(stream_of(my, "z"), 10) == [
        {"id": 1, "d": "0000-00-00", "t": "-838:59:59"}, {"id": 2, "d": "2024-00-00", "t": "100:00:00.500000"},
        {"id": 3, "d": None, "t": None}]
