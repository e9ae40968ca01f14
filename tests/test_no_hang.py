"""Nothing hangs (DESIGN.md section 4): a connection that stalls (accepted, then silent)
is abandoned after the connector's read_timeout and retried like any transient error,
then its chunk fails and the run ends partial_success; Cancel stops a stalled read at
once; a table locked in the source gives a clear message after lock_timeout. Real
PostgreSQL and MariaDB behind tests/fault_proxy.py, DuckDB workspace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from esg_workbench.core.specs import CancelToken, SyncStatus
from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace
from tests.conftest import MYSQL_HOST, MYSQL_PORT, MYSQL_USER, PG_HOST, PG_PORT, PG_USER
from tests.fault_proxy import FaultProxy

REPO = Path(__file__).resolve().parent.parent
FAST = (0.05, 0.1, 0.2)
ROWS, CHUNK = 10_000, 2000


@pytest.fixture
def ws(tmp_path):
    workspace = open_workspace(str(tmp_path / "ws.duckdb"))
    yield workspace
    workspace.close()


@pytest.fixture
def pg_source(pg_conn):
    pg_conn.execute(f"CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);"
                    f"INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g")
    return pg_conn


@pytest.fixture
def mysql_source(mysql_conn):
    with mysql_conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40) NOT NULL) ENGINE=InnoDB")
        cur.execute("SET SESSION max_recursive_iterations = 100000")
        cur.execute(f"INSERT INTO t WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {ROWS}) "
                    "SELECT n, md5(n) FROM g")
    return mysql_conn


@pytest.fixture
def pg_proxy():
    with FaultProxy((PG_HOST, PG_PORT)) as proxy:
        yield proxy


@pytest.fixture
def mysql_proxy():
    with FaultProxy((MYSQL_HOST, MYSQL_PORT)) as proxy:
        yield proxy


def add_pg(ws, database, port=PG_PORT, **options):
    return operations.add_connector(ws, "src", "postgres", {
        "host": PG_HOST, "port": port, "database": database, "username": PG_USER, "schema": "public",
        "chunk_size": CHUNK, "chunk_strategy": "id", **options})


def add_mysql(ws, database, port=MYSQL_PORT, **options):
    return operations.add_connector(ws, "src", "mysql", {
        "host": MYSQL_HOST, "port": port, "database": database, "username": MYSQL_USER,
        "chunk_size": CHUNK, "chunk_strategy": "id", **options})


def stall_after(proxy: FaultProxy, chunks: int):
    def on_progress(event):
        if event.chunks_done >= chunks and not proxy.is_stalled:
            proxy.stall()
    return on_progress


def _source_threads_end_within(seconds: float) -> list[str]:
    """The names of the watched source calls' threads still alive after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("esg-source-") and t.is_alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def landed_ids(ws, result):
    with ws.read() as conn:
        return [r[0] for r in conn.execute(sa.text(f'SELECT id FROM "{result.streams[0].raw_table}" ORDER BY id'))]


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_stalled_read_is_abandoned_retried_then_fails_its_chunk(ws, kind, request):
    if kind == "postgres":
        request.getfixturevalue("pg_source")
        proxy = request.getfixturevalue("pg_proxy")
        add_pg(ws, request.getfixturevalue("pg_database"), port=proxy.port, read_timeout=1, connect_timeout=2)
    else:
        request.getfixturevalue("mysql_source")
        proxy = request.getfixturevalue("mysql_proxy")
        add_mysql(ws, request.getfixturevalue("mysql_database"), port=proxy.port, read_timeout=1,
                           connect_timeout=2)
    started = time.monotonic()
    result = SyncEngine(ws, retry_delays=FAST, on_progress=stall_after(proxy, 2)).run(SyncRequest("src"))
    seconds = time.monotonic() - started
    print(f"{kind}: stalled sync ended {result.status.value} after {seconds:.1f} s")
    assert result.status is SyncStatus.PARTIAL_SUCCESS, (result.status, result.error)
    stream_result = result.streams[0]
    assert stream_result.chunks_done >= 2 and stream_result.chunks_failed >= 1
    from esg_workbench.workspace import sync_records

    with ws.read() as conn:
        failed = [c for c in sync_records.ledger(conn, result.run_id) if c.status == "failed"]
    assert len(failed) == stream_result.chunks_failed
    for chunk in failed:
        assert chunk.attempts == 4, chunk.attempts  # 1 attempt + 3 retries, each abandoned
        assert "the source sent nothing for" in chunk.error and "abandoned" in chunk.error, chunk.error

    proxy.unstall()
    retry = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("src", retry_failed=True))
    assert retry.status is SyncStatus.SUCCESS, retry.error
    assert landed_ids(ws, result) == list(range(1, ROWS + 1))


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_cancel_stops_a_stalled_read_at_once_and_resume_finishes(ws, kind, request):
    if kind == "postgres":
        request.getfixturevalue("pg_source")
        proxy = request.getfixturevalue("pg_proxy")
        add_pg(ws, request.getfixturevalue("pg_database"), port=proxy.port)  # default read_timeout: 300 s
    else:
        request.getfixturevalue("mysql_source")
        proxy = request.getfixturevalue("mysql_proxy")
        add_mysql(ws, request.getfixturevalue("mysql_database"), port=proxy.port)
    cancel = CancelToken()
    cancelled_at: list[float] = []

    def on_progress(event):
        if event.chunks_done >= 1 and not proxy.is_stalled:
            proxy.stall()

            def press_cancel():
                cancelled_at.append(time.monotonic())
                cancel.cancel()
            threading.Timer(0.5, press_cancel).start()

    result = SyncEngine(ws, retry_delays=FAST, cancel=cancel, on_progress=on_progress).run(SyncRequest("src"))
    waited = time.monotonic() - cancelled_at[0]
    print(f"{kind}: Cancel during a stalled read took {waited:.2f} s")
    assert result.status is SyncStatus.CANCELLED
    assert waited < 30  # not the 300 s read timeout: the stalled read was abandoned (see the printed figure)
    # the abandoned read's thread ends too, while the proxy still stalls: its socket was
    # shut down (postgres) or its helper process killed (mysql), not left to TCP keepalives
    assert _source_threads_end_within(5.0) == []

    proxy.unstall()
    resumed = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("src", resume=True))
    assert resumed.status is SyncStatus.SUCCESS, resumed.error
    assert landed_ids(ws, result) == list(range(1, ROWS + 1))


def test_cli_ctrl_c_during_a_stalled_read_exits_promptly(tmp_path, pg_source, pg_database, pg_proxy):
    ws_path = str(tmp_path / "cli.duckdb")
    ws = open_workspace(ws_path)
    add_pg(ws, pg_database, port=pg_proxy.port)
    ws.close()
    sync = subprocess.Popen([sys.executable, "-m", "esg_workbench", "sync", "src"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "ESG_WORKBENCH_WORKSPACE": ws_path})
    try:
        line = sync.stderr.readline()
        while "chunks 1/" not in line:
            assert line, "the sync ended before its first chunk"
            line = sync.stderr.readline()
        pg_proxy.stall()
        time.sleep(0.5)
        started = time.monotonic()
        sync.send_signal(signal.SIGINT)
        out, err = sync.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        sync.kill()
    print(f"Ctrl+C during a stalled read: the CLI exited after {waited:.2f} s")
    assert sync.returncode == 4, out + err  # cancelled, not waiting for the 300 s read timeout
    assert "cancelled" in out


def test_table_locked_in_postgres_gives_a_clear_message(ws, pg_source, pg_database):
    import psycopg

    add_pg(ws, pg_database, lock_timeout=1)
    holder = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=pg_database)
    try:
        holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("src"))
        assert time.monotonic() - started < 60
    finally:
        holder.rollback()
        holder.close()
    assert result.status is SyncStatus.FAILED
    error = result.streams[0].error
    assert "public.t" in error and "the table is locked by another session in PostgreSQL" in error, error
    assert "lock_timeout" in error and "LOCK TABLE" in error  # the hint says who may hold it
    again = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("src"))
    assert again.status is SyncStatus.SUCCESS, again.error


def test_table_locked_during_the_reads_fails_those_chunks_clearly(ws, pg_source, pg_database):
    import psycopg

    add_pg(ws, pg_database, lock_timeout=1)
    holder = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=pg_database)

    def lock_when_planned(event):
        if event.message == "planned":
            holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    try:
        result = SyncEngine(ws, retry_delays=FAST, on_progress=lock_when_planned).run(SyncRequest("src"))
    finally:
        holder.rollback()
        holder.close()
    assert result.status is SyncStatus.FAILED and result.streams[0].chunks_failed == ROWS // CHUNK
    assert "locked by another session" in result.error, result.error


def test_table_locked_in_mariadb_gives_a_clear_message(ws, mysql_source, mysql_database):
    import pymysql

    add_mysql(ws, mysql_database, lock_timeout=1)
    holder = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, database=mysql_database)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLES t WRITE")
        result = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("src"))
    finally:
        with holder.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        holder.close()
    assert result.status is SyncStatus.FAILED
    error = result.streams[0].error
    assert "the table is locked by another session on the MySQL server" in error and "lock_timeout" in error, error
    again = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("src"))
    assert again.status is SyncStatus.SUCCESS, again.error


def test_bad_timeout_options_are_refused(ws, pg_database):
    from esg_workbench.core.errors import ConfigError

    for bad in ({"read_timeout": "soon"}, {"lock_timeout": 0}, {"connect_timeout": "-3"}):
        with pytest.raises(ConfigError, match="timeout"):
            add_pg(ws, pg_database, **bad)
    assert operations.list_connectors(ws) == []


def test_discovery_of_a_stalled_source_fails_after_the_read_timeout(ws, pg_source, pg_database, pg_proxy):
    from esg_workbench.core.errors import TransientSourceError

    add_pg(ws, pg_database, port=pg_proxy.port, read_timeout=1, statement_timeout=1)  # discovery: statement's
    pg_proxy.stall()
    started = time.monotonic()
    with pytest.raises(TransientSourceError, match="the source sent nothing for"):
        operations.discover_connector(ws, "src")
    assert time.monotonic() - started < 30
    pg_proxy.unstall()
    assert [t.stream.table for t in operations.discover_connector(ws, "src").tables] == ["t"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds sockets in /proc (Linux)")
def test_a_readers_socket_is_found_only_when_it_is_the_one_new_socket_to_the_server():
    """PostgresConnector.abort() shuts down the socket its connection opened; it must never
    pick another connection's socket (two opened at the same moment: it picks none)."""
    import socket

    from esg_workbench.connectors.postgres import _own_socket, _server_sockets

    with socket.create_server(("127.0.0.1", 0)) as server:
        address = ("127.0.0.1", server.getsockname()[1])
        before = _server_sockets(address)
        first = socket.create_connection(address)
        own = _own_socket(address, before)
        try:
            assert own is not None and own.getsockname() == first.getsockname()
            before = _server_sockets(address)
            second, third = socket.create_connection(address), socket.create_connection(address)
            assert _own_socket(address, before) is None
            second.close()
            third.close()
        finally:
            if own is not None:
                own.close()
            first.close()
