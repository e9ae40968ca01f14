"""Resume continues the whole interrupted run (DESIGN.md section 4): every table it was
asked for, started or not, with its load type and options; a resume with nothing to
continue says so and records no run. Real PostgreSQL source, DuckDB workspace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from esg_workbench.core.errors import NothingToResume
from esg_workbench.core.specs import CancelToken, SyncStatus
from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.sync.health import connector_health
from esg_workbench.workspace import open_workspace, sync_records
from esg_workbench.workspace.raw_tables import raw_table_name
from tests.conftest import PG_HOST, PG_PORT, PG_USER

REPO = Path(__file__).resolve().parent.parent
FAST = (0.01, 0.02, 0.04)
TABLES = {"a": 3000, "b": 1200, "c": 700}


@pytest.fixture
def source(pg_conn):
    for table, rows in TABLES.items():
        pg_conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text NOT NULL, updated_at timestamptz NOT NULL);"
                        f"INSERT INTO {table} SELECT g, md5(g::text), timestamptz '2024-01-01+00' + g * interval '1 min' "
                        f"FROM generate_series(1, {rows}) g")


@pytest.fixture
def ws(tmp_path):
    workspace = open_workspace(str(tmp_path / "ws.duckdb"))
    yield workspace
    workspace.close()


def add_pg(ws, pg_database, **options):
    return operations.add_connector(ws, "pg", "postgres", {
        "host": PG_HOST, "port": PG_PORT, "database": pg_database, "username": PG_USER, "schema": "public",
        "cursor_field": "updated_at", **options})


def source_rows(pg_conn, table):
    return [tuple(r) for r in pg_conn.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()]


def landed(ws, connector_id, table):
    with ws.read() as conn:
        rows = conn.execute(sa.text(f'SELECT id, v FROM "{raw_table_name(connector_id, "public." + table)}" ORDER BY id')).all()
    return [tuple(r) for r in rows]


def cancel_during(table: str, cancel: CancelToken, after_chunks: int = 1):
    def on_progress(event):
        if event.stream == f"public.{table}" and event.chunks_done >= after_chunks:
            cancel.cancel()
    return on_progress


def runs(ws):
    with ws.read() as conn:
        return sync_records.runs(ws, conn)


def test_resume_lands_every_table_of_the_cancelled_run_with_its_options(ws, pg_conn, pg_database, source):
    record = add_pg(ws, pg_database)  # the connector says full load, chunks chosen automatically
    cancel = CancelToken()
    first = SyncEngine(ws, retry_delays=FAST, cancel=cancel, on_progress=cancel_during("a", cancel)).run(
        SyncRequest("pg", tables=["a", "b", "c"], load_type="delta", chunk_size=500))
    assert first.status is SyncStatus.CANCELLED
    assert [s.stream for s in first.streams] == ["public.a"] and 1 <= first.streams[0].chunks_done < 6
    landed_first = first.rows_written
    status = operations.connector_status(ws, "pg")
    assert status["resumable"] and status["resume_streams"] == ["public.a", "public.b", "public.c"]

    resumed = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", resume=True))
    assert resumed.status is SyncStatus.SUCCESS, resumed.error
    assert [s.stream for s in resumed.streams] == ["public.a", "public.b", "public.c"]
    # each row landed once over both runs; b and c with the cancelled run's delta load and chunk size
    assert landed_first + resumed.rows_written == sum(TABLES.values())
    assert [s.chunks_planned for s in resumed.streams] == [6, 3, 2]
    for table in TABLES:
        assert landed(ws, record.id, table) == source_rows(pg_conn, table), table
    log = runs(ws)[0]
    assert log["mode"] == "resume" and log["load_type"] == "delta"
    assert json.loads(log["request"])["resumes"] == first.run_id
    with ws.read() as conn:  # a delta leaves a checkpoint on every table it landed
        assert all(s.last_cursor is not None for s in sync_records.states(ws, conn, record.id))

    # all of it done: nothing to resume, no run recorded, the last success stays
    assert not operations.connector_status(ws, "pg")["resumable"]
    before = runs(ws)
    with pytest.raises(NothingToResume, match="Nothing to resume for pg"):
        SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", resume=True))
    assert runs(ws) == before
    health = [h for h in connector_health(ws) if h.name == "pg"][0]
    assert health.last_run_status == "success" and health.last_success_at == before[0]["finished_at"]


def test_a_resume_cancelled_again_still_covers_the_first_request(ws, pg_conn, pg_database, source):
    record = add_pg(ws, pg_database, chunk_size=400)
    cancel = CancelToken()
    SyncEngine(ws, retry_delays=FAST, cancel=cancel, on_progress=cancel_during("a", cancel)).run(
        SyncRequest("pg", tables=["a", "b", "c"]))
    cancel = CancelToken()
    second = SyncEngine(ws, retry_delays=FAST, cancel=cancel, on_progress=cancel_during("b", cancel)).run(
        SyncRequest("pg", resume=True))
    assert second.status is SyncStatus.CANCELLED
    assert [s.stream for s in second.streams] == ["public.a", "public.b"]
    assert operations.connector_status(ws, "pg")["resume_streams"] == ["public.b", "public.c"]
    third = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", resume=True))
    assert third.status is SyncStatus.SUCCESS and [s.stream for s in third.streams] == ["public.b", "public.c"]
    for table in TABLES:
        assert landed(ws, record.id, table) == source_rows(pg_conn, table), table


class Killed(BaseException):
    """Stands for the process dying: nothing in the engine catches it."""


def test_a_run_killed_before_it_planned_resumes_the_whole_request(ws, pg_conn, pg_database, source):
    record = add_pg(ws, pg_database)
    operations.discover_connector(ws, "pg")  # "every discovered table" is the request

    def die(spec):
        raise Killed()

    with pytest.raises(Killed):  # the run row is committed, then the process dies before planning
        SyncEngine(ws, connector_factory=die).run(SyncRequest("pg"))
    assert runs(ws)[0]["status"] == "running"
    sync_records.mark_dead_runs(ws)  # what opening the workspace again does
    assert runs(ws)[0]["status"] == "failed"
    status = operations.connector_status(ws, "pg")
    assert status["resumable"]
    assert status["status"] != "sync_success"

    resumed = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", resume=True))
    assert resumed.status is SyncStatus.SUCCESS, resumed.error
    assert sorted(s.stream for s in resumed.streams) == ["public.a", "public.b", "public.c"]
    assert resumed.rows_written == sum(TABLES.values())
    for table in TABLES:
        assert landed(ws, record.id, table) == source_rows(pg_conn, table), table


def test_nothing_to_resume_on_a_new_connector_records_nothing(ws, pg_database, source):
    add_pg(ws, pg_database)
    with pytest.raises(NothingToResume):
        SyncEngine(ws).run(SyncRequest("pg", resume=True))
    assert runs(ws) == []
    assert operations.connector_status(ws, "pg")["status"] == "new"


def cli(ws_path, *args):
    env = {**os.environ, "ESG_WORKBENCH_RETRY_DELAYS": "0.01,0.02,0.04", "ESG_WORKBENCH_WORKSPACE": ws_path}
    return subprocess.run([sys.executable, "-m", "esg_workbench", *args], capture_output=True, text=True,
                          env=env, timeout=180, cwd=REPO)


def test_cli_ctrl_c_during_the_first_table_then_resume_lands_all_once(tmp_path, pg_conn, pg_database, source):
    ws_path = str(tmp_path / "cli.duckdb")
    ws = open_workspace(ws_path)
    record = add_pg(ws, pg_database, chunk_size=100, chunk_strategy="id")
    ws.close()
    sync = subprocess.Popen([sys.executable, "-m", "esg_workbench", "sync", "pg", "--table", "a", "--table", "b",
                             "--table", "c"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "ESG_WORKBENCH_WORKSPACE": ws_path})
    try:
        line = sync.stderr.readline()
        while "public.a: chunks 1/" not in line:  # the first chunk of a landed
            assert line, "the sync ended before its first chunk"
            line = sync.stderr.readline()
        sync.send_signal(signal.SIGINT)
        out, err = sync.communicate(timeout=60)
    finally:
        sync.kill()
    assert sync.returncode == 4, out + err  # cancelled

    resumed = cli(ws_path, "sync", "pg", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert [s["stream"] for s in json.loads(resumed.stdout)["streams"]] == ["public.a", "public.b", "public.c"]
    logs = json.loads(cli(ws_path, "logs", "--json").stdout)
    assert [r["status"] for r in logs] == ["success", "cancelled"]
    assert sum(r["items_written"] for r in logs) == sum(TABLES.values())  # each row once over both runs
    ws = open_workspace(ws_path)
    try:
        for table in TABLES:
            assert landed(ws, record.id, table) == source_rows(pg_conn, table), table
    finally:
        ws.close()

    again = cli(ws_path, "sync", "pg", "--resume")
    assert again.returncode == 1 and "Nothing to resume for pg" in again.stderr, again.stderr
    assert len(json.loads(cli(ws_path, "logs", "--json").stdout)) == 2


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_a_version_2_workspace_gets_the_request_and_deletes_columns(kind, tmp_path, request):
    from esg_workbench.workspace import schema

    url = str(tmp_path / "v2.duckdb") if kind == "duckdb" else \
        f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{request.getfixturevalue('pg_database')}"
    ws = open_workspace(url)
    with ws.transaction() as conn:  # back to version 2: without this feature's columns
        # (DuckDB drops no column of an indexed table: the index goes and comes back)
        conn.exec_driver_sql("DROP INDEX ix_connector_sync_logs_connector")
        conn.exec_driver_sql("ALTER TABLE connector_sync_logs DROP COLUMN request")
        conn.exec_driver_sql("ALTER TABLE connector_sync_logs DROP COLUMN items_deleted")
        conn.exec_driver_sql("ALTER TABLE connector_sync_state DROP COLUMN syncs_since_deletes_check")
        conn.exec_driver_sql("CREATE INDEX ix_connector_sync_logs_connector ON connector_sync_logs "
                             "(connector_id, started_at)")
        conn.execute(sa.update(schema.workspace_meta).where(schema.workspace_meta.c.key == "schema_version")
                     .values(value="2"))
    ws.close()
    ws = open_workspace(url)
    try:
        with ws.read() as conn:
            logs = conn.exec_driver_sql("SELECT * FROM connector_sync_logs LIMIT 0").keys()
            state = conn.exec_driver_sql("SELECT * FROM connector_sync_state LIMIT 0").keys()
        assert {"request", "items_deleted"} <= set(logs) and "syncs_since_deletes_check" in state
    finally:
        ws.close()


def test_cli_sync_killed_before_it_planned_then_resumed_lands_the_whole_request(tmp_path, pg_conn, pg_database,
                                                                                 source):
    import time

    from tests.fault_proxy import FaultProxy

    ws_path = str(tmp_path / "killed.duckdb")
    with FaultProxy((PG_HOST, PG_PORT)) as proxy:
        ws = open_workspace(ws_path)
        record = operations.add_connector(ws, "pg", "postgres", {
            "host": PG_HOST, "port": proxy.port, "database": pg_database, "username": PG_USER, "schema": "public"})
        ws.close()
        proxy.stall()  # the sync starts, records its run, then waits on the source: killed there
        sync = subprocess.Popen([sys.executable, "-m", "esg_workbench", "sync", "pg", "--table", "a", "--table", "b",
                                 "--table", "c"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                                env={**os.environ, "ESG_WORKBENCH_WORKSPACE": ws_path})
        try:
            deadline = time.monotonic() + 120
            while proxy.forwarded == 0 and sync.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.forwarded >= 1 and sync.poll() is None, "the sync never reached the source"
        finally:
            sync.kill()
            sync.wait()
        proxy.unstall()
        resumed = cli(ws_path, "sync", "pg", "--resume", "--json")
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout
        out = json.loads(resumed.stdout)
        assert [s["stream"] for s in out["streams"]] == ["public.a", "public.b", "public.c"]
        assert out["rows_written"] == sum(TABLES.values())
    logs = json.loads(cli(ws_path, "logs", "--json").stdout)
    assert [(r["status"], r["mode"]) for r in logs] == [("success", "resume"), ("failed", "sync")]
    assert "Interrupted" in logs[1]["error"]
    ws = open_workspace(ws_path)
    try:
        for table in TABLES:
            assert landed(ws, record.id, table) == source_rows(pg_conn, table), table
    finally:
        ws.close()
