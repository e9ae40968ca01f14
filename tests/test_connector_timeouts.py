"""The connector options connect_timeout, statement_timeout, lock_timeout and read_timeout
reach each source's client. Where a server runs here (PostgreSQL, MariaDB) the session
shows them; for the HTTP clients (S3, Azure Blob, SAP OData) a silent server (accepts,
never answers) must end the call after read_timeout, with a transient error; for the
rest (SQL Server, Snowflake, SAP HANA) the arguments handed to the driver. (Databricks'
SDK looks its host up when its client is made, which takes a minute without a server:
its http_timeout_seconds comes from read_timeout the same way, untested here.)"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError, EsgError
from esg_workbench.core.specs import ConnectorSpec, Timeouts
from esg_workbench.connectors.registry import create_connector

TIMEOUTS = {"connect_timeout": "3", "statement_timeout": "2m", "lock_timeout": 7, "read_timeout": 1}


def test_defaults_and_bad_values():
    assert Timeouts.from_options({}) == Timeouts(connect=10, statement=900, lock=60, read=300, keepalive=30)
    assert Timeouts.from_options(TIMEOUTS) == Timeouts(connect=3, statement=120, lock=7, read=1)
    for bad in ({"read_timeout": "soon"}, {"lock_timeout": 0}, {"connect_timeout": "-3"}):
        with pytest.raises(ConfigError, match="_timeout must be a positive duration"):
            Timeouts.from_options(bad)
    assert Timeouts.given({}, "read", 60) == 60 and Timeouts.given({"read_timeout": "5"}, "read", 60) == 5


def test_postgres_sessions_carry_the_timeouts(pg_spec):
    connector = create_connector(ConnectorSpec("postgres", "pg", {**pg_spec.options, **TIMEOUTS}))
    try:
        with connector.engine.connect() as conn:  # discovery and planning (psycopg)
            shown = conn.execute(sa.text("SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                                         "current_setting('TimeZone')")).one()
        assert tuple(shown) == ("2min", "7s", "UTC")
        with connector._connection().query(  # reads (ADBC)
                "SELECT current_setting('statement_timeout') AS s, current_setting('lock_timeout') AS l") as reader:
            assert reader.read_all().to_pylist() == [{"s": "2min", "l": "7s"}]
        params = connector._session_parameters()
        assert params["connect_timeout"] == 3 and params["keepalives"] == 1 and params["keepalives_idle"] == 30
    finally:
        connector.close()


def test_mariadb_sessions_carry_the_timeouts(mysql_spec):
    connector = create_connector(ConnectorSpec("mysql", "my", {**mysql_spec.options, **TIMEOUTS}))
    try:
        with connector.engine.connect() as conn:
            shown = conn.execute(sa.text("SELECT @@lock_wait_timeout, @@innodb_lock_wait_timeout, "
                                         "@@max_statement_time, @@time_zone")).one()
        assert (int(shown[0]), int(shown[1]), float(shown[2]), shown[3]) == (7, 7, 120.0, "+00:00")
        args = connector.engine_options()["connect_args"]
        assert args["connect_timeout"] == 3 and args["read_timeout"] == 1
        assert "tcp_connect_timeout_ms=3000&tcp_keepalive_time_ms=30000" in connector._cx_url()
    finally:
        connector.close()


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for s in held:
        s.close()
    listener.close()


def ends_within(seconds: float, call) -> EsgError:
    started = time.monotonic()
    with pytest.raises(EsgError) as caught:
        call()
    took = time.monotonic() - started
    print(f"a silent server ended the call after {took:.1f} s: {caught.value.describe()[:160]}")
    assert took < seconds, took
    return caught.value


def test_s3_read_timeout_ends_a_call_to_a_silent_endpoint(silent_server):
    connector = create_connector(ConnectorSpec("s3", "s3", {
        "bucket": "b", "endpoint_url": f"http://127.0.0.1:{silent_server}", "auth": "anonymous", **TIMEOUTS}))
    config = connector.store.client()._client_config if hasattr(connector, "store") else None
    if config is not None:
        assert (config.connect_timeout, config.read_timeout) == (3, 1)
    error = ends_within(30, connector.list_streams)  # botocore tries twice: about 2 x read_timeout
    assert error.transient


def test_azure_read_timeout_ends_a_call_to_a_silent_endpoint(silent_server):
    account = "devstoreaccount1"
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    connection = (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
                  f"BlobEndpoint=http://127.0.0.1:{silent_server}/{account};")
    connector = create_connector(ConnectorSpec("azure_blob", "az", {"container": "c", **TIMEOUTS},
                                               password=connection))
    error = ends_within(30, connector.list_streams)  # 1 + 2 quick retries of 1 s
    assert error.transient


def test_sap_odata_read_timeout_ends_a_call_to_a_silent_service(silent_server):
    connector = create_connector(ConnectorSpec("sap_odata", "sap", {
        "service_url": f"http://127.0.0.1:{silent_server}/sap/opu/odata/sap/ZESG_SRV/", **TIMEOUTS}))
    error = ends_within(15, connector.validate)
    assert error.transient and "timeout" in (error.code or "") and "did not answer within 1 s" in error.message


def test_drivers_without_a_server_here_get_the_timeouts():
    sqlserver = create_connector(ConnectorSpec("sqlserver", "ms", {"host": "h", "database": "d", **TIMEOUTS}))
    assert sqlserver.engine_options()["connect_args"]["timeout"] == 3
    snowflake = create_connector(ConnectorSpec("snowflake", "sf", {"account": "a", "username": "u", **TIMEOUTS},
                                               password="p"))
    args = snowflake.connect_args()
    assert (args["login_timeout"], args["network_timeout"]) == (3, 1)
    hana = create_connector(ConnectorSpec("sap_hana", "hana", {"host": "h", "port": 30015, **TIMEOUTS}))
    assert hana.engine_options()["connect_args"]["connectTimeout"] == 3000
    # the connectors' own, older option names still win over the general ones
    assert create_connector(ConnectorSpec("snowflake", "sf", {"account": "a", "username": "u", "login_timeout": 9,
                                                               **TIMEOUTS}, password="p")).connect_args()["login_timeout"] == 9
