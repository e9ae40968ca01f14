"""Connector health from real runs against PostgreSQL (DuckDB and PostgreSQL workspaces),
the query count that keeps it cheap, and the `health` and `alerts` commands."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.fault_proxy import FaultProxy
from tests.webhook_receiver import WebhookReceiver

from esg_workbench.sync import operations
from esg_workbench.sync.health import connector_health, plain_duration

FAST = (0.02, 0.02, 0.02)


@pytest.fixture
def ws(tmp_path):
    from esg_workbench.workspace import open_workspace

    workspace = open_workspace(str(tmp_path / "ws.duckdb"))
    yield workspace
    workspace.close()


def make_table(pg_conn, table: str, rows: int) -> None:
    pg_conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, v text, updated_at timestamptz NOT NULL)")
    add_rows(pg_conn, table, 1, rows)


def add_rows(pg_conn, table: str, start: int, n: int) -> None:
    pg_conn.execute(f"INSERT INTO {table} SELECT g, md5(g::text), timestamptz '2024-01-01+00' + g * interval '1 s' "
                    f"FROM generate_series({start}, {start + n - 1}) g")


def add(ws, name: str, database: str, table: str, port: int = PG_PORT, **options):
    return operations.add_connector(ws, name, "postgres", {
        "host": PG_HOST, "port": port, "database": database, "username": PG_USER, "schema": "public",
        "load_type": "delta", "cursor_field": "updated_at", **options})


def sync(ws, name: str, table: str, on_progress=None, **request):
    from esg_workbench.sync.engine import SyncEngine, SyncRequest

    return SyncEngine(ws, retry_delays=FAST, on_progress=on_progress).run(
        SyncRequest(name, tables=[f"public.{table}"], **request))


def by_name(ws, now=None) -> dict:
    return {h.name: h for h in connector_health(ws, now=now)}


def test_plain_duration():
    assert [plain_duration(s) for s in (0, 45, 60, 12 * 60 + 5, 3 * 3600 + 12 * 60 + 30, 5 * 3600, 2 * 86400 + 5 * 3600,
                                        3 * 86400)] == \
        ["0 s", "45 s", "1 min", "12 min", "3 h 12 min", "5 h", "2 d 5 h", "3 d"]


def test_health_from_real_runs(ws, pg_conn, pg_database):
    make_table(pg_conn, "steady_t", 300)
    make_table(pg_conn, "broken_t", 100)
    add(ws, "steady", pg_database, "steady_t")
    add(ws, "broken", pg_database, "broken_t")
    add(ws, "never", pg_database, "steady_t")

    first = sync(ws, "steady", "steady_t")
    add_rows(pg_conn, "steady_t", 301, 40)
    second = sync(ws, "steady", "steady_t")
    assert (first.status.value, second.status.value) == ("success", "success")
    assert sync(ws, "broken", "broken_t").status.value == "success"
    pg_conn.execute("DROP TABLE broken_t")
    failures = [sync(ws, "broken", "broken_t") for _ in range(2)]
    assert [f.status.value for f in failures] == ["failed", "failed"]

    with ws.read() as conn:
        finished = conn.execute(sa.text("SELECT max(finished_at) FROM connector_sync_logs WHERE id = :i"),
                                {"i": second.run_id}).scalar()
    now = finished + dt.timedelta(hours=3, minutes=12, seconds=20)
    health = by_name(ws, now=now)
    assert list(health) == ["broken", "never", "steady"]

    steady = health["steady"]
    assert steady.last_success_at == finished and steady.last_run_status == "success"
    assert steady.lag_text == "3 h 12 min" and steady.lag_seconds == pytest.approx(3 * 3600 + 12 * 60 + 20)
    assert steady.failure_streak == 0 and steady.failed_chunks_waiting == 0 and not steady.needs_attention
    assert [(p.run_id, p.rows_written, p.status) for p in steady.rows_per_sync] == \
        [(first.run_id, 300, "success"), (second.run_id, 40, "success")]

    broken = health["broken"]
    assert broken.failure_streak == 2 and broken.last_run_status == "failed" and broken.needs_attention
    assert "broken_t" in broken.last_error
    assert broken.lag_seconds is not None and broken.lag_seconds > 3 * 3600
    assert [p.status for p in broken.rows_per_sync] == ["success", "failed", "failed"]

    never = health["never"]
    assert never.lag_seconds is None and never.lag_text == "never synced"
    assert never.last_success_at is None and never.last_run_status is None
    assert never.failure_streak == 0 and never.rows_per_sync == []

    # a success ends the streak
    pg_conn.execute("CREATE TABLE broken_t (id bigint PRIMARY KEY, v text, updated_at timestamptz NOT NULL)")
    add_rows(pg_conn, "broken_t", 1, 5)
    assert sync(ws, "broken", "broken_t").status.value == "success"
    assert by_name(ws)["broken"].failure_streak == 0


def test_failed_chunks_wait_until_retried(ws, pg_conn, pg_database):
    make_table(pg_conn, "t", 5000)
    with FaultProxy((PG_HOST, PG_PORT)) as proxy:
        add(ws, "flaky", pg_database, "t", port=proxy.port, chunk_size=1000)

        def cut_after_two(event):
            if event.chunks_done >= 2 and not proxy.is_cut:
                proxy.cut()

        partial = sync(ws, "flaky", "t", on_progress=cut_after_two)
        assert partial.status.value == "partial_success"
        flaky = by_name(ws)["flaky"]
        failed = partial.streams[0].chunks_failed
        assert failed >= 1 and flaky.failed_chunks_waiting == failed
        assert flaky.failure_streak == 1 and flaky.lag_text == "never synced"
        assert flaky.rows_per_sync[-1].status == "partial_success"
        assert flaky.rows_per_sync[-1].rows_written == partial.rows_written > 0

        proxy.restore()
        retry = sync(ws, "flaky", "t", retry_failed=True)
    assert retry.status.value == "success"
    flaky = by_name(ws)["flaky"]
    assert flaky.failed_chunks_waiting == 0 and flaky.failure_streak == 0 and flaky.lag_seconds is not None
    assert sum(p.rows_written for p in flaky.rows_per_sync) == 5000


def count_queries(ws) -> int:
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(ws.engine, "before_cursor_execute", record)
    try:
        connector_health(ws)
    finally:
        sa.event.remove(ws.engine, "before_cursor_execute", record)
    return len(statements)


def test_query_count_does_not_grow_with_connectors_or_runs(ws, pg_conn, pg_database):
    make_table(pg_conn, "t", 50)
    add(ws, "c0", pg_database, "t")
    sync(ws, "c0", "t")
    few = count_queries(ws)
    for i in range(1, 6):
        add(ws, f"c{i}", pg_database, "t")
        for _ in range(3):
            sync(ws, f"c{i}", "t")
    assert count_queries(ws) == few <= 8
    assert all(len(h.rows_per_sync) == 3 for h in connector_health(ws) if h.name != "c0")
    assert [len(h.rows_per_sync) for h in connector_health(ws, history=2)] == [1] + [2] * 5


def test_health_on_a_postgresql_workspace(pg_conn, pg_database):
    """The windowed and grouped queries on PostgreSQL too; the source lives in a second database."""
    import psycopg

    from esg_workbench.workspace import open_workspace

    source = f"esg_src_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{source}"')
    ws = open_workspace(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}")
    try:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=source, autocommit=True) as src:
            make_table(src, "t", 120)
            add(ws, "erp", source, "t")
            assert sync(ws, "erp", "t").status.value == "success"
            src.execute("DROP TABLE t")
            assert sync(ws, "erp", "t").status.value == "failed"
        [erp] = connector_health(ws)
        assert erp.failure_streak == 1 and erp.last_run_status == "failed"
        assert [(p.rows_written, p.status) for p in erp.rows_per_sync] == [(120, "success"), (0, "failed")]
        assert erp.lag_seconds is not None and 0 <= erp.lag_seconds < 600
    finally:
        ws.close()
        admin.execute(f'DROP DATABASE IF EXISTS "{source}" WITH (FORCE)')
        admin.close()


# --- the commands ----------------------------------------------------------------------------

def cli(workspace: str, *args: str, stdin: str | None = None):
    env = {**os.environ, "ESG_WORKBENCH_RETRY_DELAYS": "0.01,0.01,0.01",
           "ESG_WORKBENCH_ALERT_RETRY_DELAYS": "0.01,0.01,0.01"}
    return subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", workspace, *args],
                          input=stdin, capture_output=True, text=True, env=env, timeout=120)


def test_health_command(tmp_path, pg_conn, pg_database):
    path = str(tmp_path / "cli.duckdb")
    make_table(pg_conn, "t", 30)
    assert cli(path, "connector", "add", "erp", "--type", "postgres", "--option", f"host={PG_HOST}",
               "--option", f"port={PG_PORT}", "--option", f"database={pg_database}",
               "--option", f"username={PG_USER}").returncode == 0
    assert cli(path, "sync", "erp").returncode == 0
    pg_conn.execute("DROP TABLE t")
    assert cli(path, "sync", "erp").returncode != 0

    data = json.loads(cli(path, "health", "--json").stdout)
    [erp] = data
    assert erp["connector"] == "erp" and erp["failure_streak"] == 1 and erp["last_run_status"] == "failed"
    assert [p["rows_written"] for p in erp["rows_per_sync"]] == [30, 0]
    assert erp["lag_seconds"] >= 0 and erp["last_success_at"]

    text = cli(path, "health")
    assert text.returncode == 0
    assert "1 failed in a row" in text.stdout and "30 0!" in text.stdout
    assert "erp: " in text.stdout and "t" in text.stdout


def test_alerts_commands(tmp_path, keyring_ready, monkeypatch, capsys):
    """In process through cli.main (a subprocess per command costs a second each)."""
    import io

    from esg_workbench.cli import main

    monkeypatch.setenv("ESG_WORKBENCH_ALERT_RETRY_DELAYS", "0.01,0.01,0.01")
    path = str(tmp_path / "alerts.duckdb")

    def run(*args: str, stdin: str = ""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        rc = main(["--workspace", path, *args])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    assert "No webhook set" in run("alerts", "show")[1]
    rc, out, err = run("alerts", "set-webhook", "ftp://example.com/x")
    assert rc == 1 and "http:// or https://" in err
    with WebhookReceiver() as hook:
        # read from standard input: the token stays out of the shell history
        rc, out, err = run("alerts", "set-webhook", stdin=hook.url + "\n")
        assert rc == 0, err
        assert "T0KEN" not in out + err
        rc, out, err = run("alerts", "show")
        assert f"http://127.0.0.1:{hook.port}" in out and "T0KEN" not in out
        rc, out, err = run("alerts", "test", "--json")
        assert rc == 0, err
        assert json.loads(out)["delivered"] is True
        [body] = hook.bodies
        assert body["event"] == "sync.test" and body["title"] == "ESG Workbench test alert"
    # the receiver is gone: the test says so, with the retries made
    rc, out, err = run("alerts", "test")
    assert rc == 1
    assert "connection refused" in out and "after 4 attempt(s)" in out
    assert "T0KEN" not in out + err
    assert run("alerts", "clear-webhook")[0] == 0
    assert "No webhook set" in run("alerts", "show")[1]
    assert run("alerts", "test")[0] == 1
