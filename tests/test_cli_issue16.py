"""The command line of issue 16, in process through cli.main: schedule dependencies,
retries, priorities and limits; `chunks list|retry|ignore`; `connector set-password`
and `rotation`; a CLI sync that fails alerts like the app; real PostgreSQL and MariaDB
sources, the real keyring of scripts/test.sh."""

from __future__ import annotations

import io
import json
import sys
import uuid

import pymysql
import pytest

from tests.conftest import MYSQL_HOST, MYSQL_PORT, MYSQL_USER, PG_HOST, PG_PORT, PG_USER, free_port
from fault_proxy import FaultProxy
from webhook_receiver import WebhookReceiver

from esg_workbench import credentials
from esg_workbench.sync import operations, review
from esg_workbench.workspace import open_workspace


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    from esg_workbench.cli import main

    path = str(tmp_path / "cli.duckdb")
    monkeypatch.setenv("ESG_WORKBENCH_RETRY_DELAYS", "0.01,0.02")
    monkeypatch.setenv("ESG_WORKBENCH_ALERT_RETRY_DELAYS", "0.01")

    def call(*args: str, stdin: str = ""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            rc = main(["--workspace", path, *args])
        except SystemExit as exc:
            rc = exc.code
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    call.path = path
    return call


def pg_options(database, port=PG_PORT):
    return ["--type", "postgres", "--option", f"host={PG_HOST}", "--option", f"port={port}",
            "--option", f"database={database}", "--option", f"username={PG_USER}", "--option", "schema=src"]


def test_schedule_dependencies_retries_priorities_and_limits(run, pg_database):
    assert run("connector", "add", "erp", *pg_options(pg_database))[0] == 0
    assert run("schedule", "add", "sites", "--connector", "erp", "--cron", "0 2 * * *", "--timezone", "UTC")[0] == 0
    rc, out, err = run("schedule", "add", "meters", "--connector", "erp", "--cron", "0 2 * * *", "--timezone", "UTC",
                       "--after", "sites", "--after-window", "90", "--accept-partial", "--priority", "5",
                       "--retries", "2", "--retry-backoff", "60", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert (data["runs_after"], data["priority"], data["retry_attempts"], data["dependency_window_minutes"],
            data["dependency_accepts_partial"]) == (["sites"], 5, 2, 90, True)
    rc, out, err = run("schedule", "edit", "sites", "--after", "meters")
    assert rc == 1 and "cycle: sites → meters → sites" in err and "Nothing was saved" in err
    rc, out, err = run("schedule", "show", "meters")
    assert "runs after: sites (their success or partial success, within 90 minutes" in out
    assert "retries: 2 after a failed or partial run, first after 60 s" in out
    rc, out, err = run("schedule", "list")
    assert "Chains: sites -> meters" in out and "Limits: no limit" in out
    rc, out, err = run("schedule", "limits", "--workspace-limit", "2", "--per-host", "1")
    assert rc == 0 and out.strip() == ("Limits: 2 syncs at once in this workspace; 1 per source host.")
    rc, out, err = run("schedule", "limits", "--per-host", "0", "--json")
    assert json.loads(out) == {"workspace": 2, "per_host": None}
    rc, out, err = run("schedule", "limits", "--workspace-limit", "99")
    assert rc == 1 and "from 1 to 64" in err
    rc, out, err = run("schedule", "edit", "meters", "--no-after", "--no-accept-partial", "--json")
    assert rc == 0 and json.loads(out)["runs_after"] == [] and json.loads(out)["dependency_accepts_partial"] is False
    assert run("schedule", "remove", "sites")[0] == 0


def test_a_failed_cli_sync_alerts_like_the_app(run, pg_database, keyring_ready):
    assert run("connector", "add", "down", *pg_options(pg_database, port=free_port()))[0] == 0
    with WebhookReceiver() as hook:
        assert run("alerts", "set-webhook", stdin=hook.url + "\n")[0] == 0
        rc, out, err = run("sync", "down")
        assert rc == 1
        [body] = hook.bodies
    assert body["event"] == "sync.failed" and body["connector"] == "down"
    rc, out, err = run("sync", "down")  # the receiver is gone: the sync says so and keeps its exit code
    assert rc == 1 and "The alert could not be sent" in err


def test_chunks_list_ignore_and_retry(run, pg_database, pg_conn):
    pg_conn.execute("""
        CREATE SCHEMA src;
        CREATE TABLE src.readings (id bigint PRIMARY KEY, kwh numeric(10,2), updated_at timestamptz NOT NULL);
        INSERT INTO src.readings SELECT g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour'
        FROM generate_series(1, 300) g;
    """)
    with FaultProxy((PG_HOST, PG_PORT)) as proxy:
        ws = open_workspace(run.path)
        operations.add_connector(ws, "erp", "postgres", {
            "host": PG_HOST, "port": proxy.port, "database": pg_database, "username": PG_USER, "schema": "src",
            "cursor_field": "updated_at", "chunk_size": 50, "load_type": "delta"})
        from esg_workbench.sync.engine import SyncEngine, SyncRequest

        def cut(event):
            if event.chunks_done >= 2 and not proxy.is_cut:
                proxy.cut()

        SyncEngine(ws, retry_delays=(0.01,), on_progress=cut).run(SyncRequest("erp"))
        proxy.restore()
        failed = sorted(c.id for c in review.list_failed(ws))
        ws.close()
        assert len(failed) >= 2
        rc, out, err = run("chunks", "list")
        assert rc == 0 and "unreviewed" in out and "src.readings" in out
        rc, out, err = run("chunks", "ignore", str(failed[0]), "--reason", "site closed")
        assert rc == 0 and "stay flagged incomplete" in out
        rc, out, err = run("chunks", "ignore", str(failed[1]), "--reason", " ")
        assert rc == 1 and "needs a reason" in err
        rc, out, err = run("chunks", "list", "--unreviewed", "--json")
        assert sorted(c["id"] for c in json.loads(out)) == failed[1:]
        rc, out, err = run("chunks", "retry", str(failed[1]), "--json")
        assert json.loads(out)["landed"] == [failed[1]] and rc == 0, err
        rc, out, err = run("chunks", "retry", "424242")
        assert rc == 1 and "No failed chunk with id 424242" in err
        rc, out, err = run("chunks", "list", "--json")
        left = json.loads(out)
    assert failed[1] not in [c["id"] for c in left]
    assert [c["review"] for c in left if c["id"] == failed[0]] == ["ignored"]


@pytest.fixture
def maria_account(mysql_database):
    user = f"esg_cli_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, autocommit=True)
    with admin.cursor() as cur:
        for host in ("127.0.0.1", "localhost"):
            cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, "first-Pw-1"))
            cur.execute(f"GRANT ALL ON `{mysql_database}`.* TO %s@%s", (user, host))
    try:
        yield user
    finally:
        with admin.cursor() as cur:
            for host in ("127.0.0.1", "localhost"):
                cur.execute("DROP USER IF EXISTS %s@%s", (user, host))
        admin.close()


def test_connector_set_password_and_rotation(run, mysql_database, maria_account, keyring_ready):
    args = ["--type", "mysql", "--option", f"host={MYSQL_HOST}", "--option", f"port={MYSQL_PORT}",
            "--option", f"database={mysql_database}", "--option", f"username={maria_account}"]
    assert run("connector", "add", "erp", *args, "--password-stdin", stdin="first-Pw-1\n")[0] == 0
    rc, out, err = run("connector", "set-password", "erp", "--password-stdin", stdin="not-it-2\n")
    assert rc == 1 and "old one is kept" in err and "not-it-2" not in out + err
    ws = open_workspace(run.path)
    connector_id = operations.get_connector(ws, "erp").id
    ws.close()
    assert credentials.load_secret(connector_id) == "first-Pw-1"
    rc, out, err = run("connector", "set-password", "erp")
    assert rc == 1 and "--password-stdin" in err
    rc, out, err = run("connector", "rotation", "erp", "--days", "90")
    assert rc == 0 and "older than 90 days" in out
    rc, out, err = run("health")
    assert "Secrets: erp set " in out and "rotate every 90 d" in out
    rc, out, err = run("connector", "set-password", "erp", "--password-stdin", stdin="first-Pw-1\n")
    assert rc == 0 and "accepted the new password" in out
