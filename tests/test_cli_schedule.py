"""`esg-workbench schedule ...` as a user and an OS scheduler run it: real processes, a real
PostgreSQL source, DuckDB and PostgreSQL workspaces."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa

from tests.conftest import PG_HOST, PG_PORT, PG_USER, free_port

from esg_workbench.workspace import open_workspace
from esg_workbench.workspace.database import utcnow
from esg_workbench.workspace.schema import connector_sync_logs, scheduled_jobs


def cli(workspace, *args, env=None, timeout=120):
    full_env = {**os.environ, "ESG_WORKBENCH_RETRY_DELAYS": "0.01,0.02,0.04", **(env or {})}
    return subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", workspace, *args],
                          capture_output=True, text=True, env=full_env, timeout=timeout)


class Done:
    """What a command printed and returned, like subprocess.CompletedProcess."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli_here(capsys):
    """The same commands in this process (no interpreter start-up): for the tests that
    need no second process."""
    from esg_workbench.cli import main

    def run(workspace, *args):
        try:
            code = main(["--workspace", workspace, *args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        captured = capsys.readouterr()
        return Done(code, captured.out, captured.err)
    return run


def ok_json(proc):
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def connector_args(database, port=PG_PORT):
    return ["--type", "postgres", "--option", f"host={PG_HOST}", "--option", f"port={port}",
            "--option", f"database={database}", "--option", f"username={PG_USER}", "--option", "schema=src"]


def make_due(url, *names, ago=dt.timedelta(hours=3)):
    """Move the jobs' next slot into the past (as if the machine had been off)."""
    ws = open_workspace(url)
    try:
        with ws.transaction() as conn:
            conn.execute(sa.update(scheduled_jobs).where(scheduled_jobs.c.name.in_(names))
                         .values(next_run_at=(utcnow() - ago).replace(second=0, microsecond=0)))
    finally:
        ws.close()


def sync_runs(url):
    ws = open_workspace(url)
    try:
        with ws.read() as conn:
            return conn.execute(sa.select(connector_sync_logs.c.connector_id, connector_sync_logs.c.status)).all()
    finally:
        ws.close()


@pytest.fixture
def source(pg_conn):
    pg_conn.execute("""
        CREATE SCHEMA src;
        CREATE TABLE src.energy (id int PRIMARY KEY, site text, kwh numeric(10,2));
        INSERT INTO src.energy SELECT g, 'S' || g % 3, g FROM generate_series(1, 120) g;
    """)
    return pg_conn


@pytest.fixture
def ws_path(tmp_path):
    return str(tmp_path / "cli.duckdb")


def test_schedule_lifecycle(ws_path, pg_database, cli_here):
    assert cli_here(ws_path, "connector", "add", "erp", *connector_args(pg_database)).returncode == 0
    empty = cli_here(ws_path, "schedule", "list")
    assert empty.returncode == 0 and "No scheduled jobs yet" in empty.stdout

    added = ok_json(cli_here(ws_path, "schedule", "add", "nightly", "--connector", "erp", "--cron", "30 6 * * MON-FRI",
                        "--timezone", "Europe/Berlin", "--json"))
    assert added["description"] == "At 06:30 on Monday to Friday" and added["enabled"] is True
    assert dt.datetime.fromisoformat(added["next_run_at"]).strftime("%H:%M") == "06:30"
    text = cli_here(ws_path, "schedule", "add", "weekly", "--connector", "erp", "--cron", "@weekly",
               "--action", "discover", "--timezone", "UTC", "--disabled")
    assert text.returncode == 0 and "It is disabled." in text.stdout

    listed = cli_here(ws_path, "schedule", "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["name", "connector", "action", "schedule", "next", "run", "last", "run", "after",
                                "priority", "now"]
    assert "30 6 * * MON-FRI  (At 06:30 on Monday to Friday)" in lines[2] and ("CET" in lines[2] or "CEST" in lines[2])
    assert lines[3].startswith("weekly") and "disabled" in lines[3] and "never run" in lines[3]

    shown = ok_json(cli_here(ws_path, "schedule", "show", "nightly", "--json"))
    runs = [dt.datetime.fromisoformat(t) for t in shown["next_runs"]]
    assert len(runs) == 5 and all(r.strftime("%H:%M") == "06:30" and r.weekday() < 5 for r in runs)
    show_text = cli_here(ws_path, "schedule", "show", "nightly").stdout
    assert "next runs:" in show_text and show_text.count("06:30 CE") == 5 and "last run: never" in show_text

    edited = ok_json(cli_here(ws_path, "schedule", "edit", "nightly", "--cron", "*/15 * * * *", "--name", "often",
                         "--table", "src.energy", "--json"))
    assert (edited["name"], edited["description"], edited["options"]) == \
        ("often", "Every 15 minutes", {"tables": ["src.energy"]})
    assert ok_json(cli_here(ws_path, "schedule", "enable", "weekly", "--json"))["enabled"] is True
    disabled = cli_here(ws_path, "schedule", "disable", "often")
    assert disabled.returncode == 0 and "will not run until it is enabled again" in disabled.stdout
    assert [j["name"] for j in ok_json(cli_here(ws_path, "schedule", "list", "--json"))] == ["often", "weekly"]
    assert ok_json(cli_here(ws_path, "schedule", "remove", "often", "--json")) == {"removed": "often"}
    assert [j["name"] for j in ok_json(cli_here(ws_path, "schedule", "list", "--json"))] == ["weekly"]


def test_schedule_errors_are_plain(ws_path, pg_database, cli_here):
    assert cli_here(ws_path, "connector", "add", "erp", *connector_args(pg_database)).returncode == 0
    bad = cli_here(ws_path, "schedule", "add", "x", "--connector", "erp", "--cron", "61 * * * *")
    assert bad.returncode == 1 and "minute 61 is out of range 0-59" in bad.stderr and "Traceback" not in bad.stderr
    zone = cli_here(ws_path, "schedule", "add", "x", "--connector", "erp", "--cron", "0 2 * * *", "--timezone", "Mars/Olympus",
               "--json")
    assert zone.returncode == 1 and "not a known time zone" in json.loads(zone.stdout)["error"]
    missing = cli_here(ws_path, "schedule", "show", "nope")
    assert missing.returncode == 1 and "There is no scheduled job named 'nope'" in missing.stderr
    usage = cli_here(ws_path, "schedule", "add", "x", "--connector", "erp", "--cron", "0 2 * * *", "--action", "delete")
    assert usage.returncode == 2 and "invalid choice: 'delete'" in usage.stderr
    assert ok_json(cli_here(ws_path, "schedule", "list", "--json")) == []


def test_run_due_runs_what_is_due_and_exits(ws_path, pg_database, source, cli_here):
    assert cli_here(ws_path, "connector", "add", "erp", *connector_args(pg_database)).returncode == 0
    assert cli_here(ws_path, "connector", "add", "down", *connector_args(pg_database, port=free_port())).returncode == 0
    for name, connector in (("erp-nightly", "erp"), ("down-nightly", "down"), ("later", "erp")):
        assert cli_here(ws_path, "schedule", "add", name, "--connector", connector, "--cron", "0 2 * * *").returncode == 0
    nothing = cli(ws_path, "schedule", "run-due")
    assert nothing.returncode == 0 and nothing.stdout.strip() == "No job is due."

    make_due(ws_path, "erp-nightly")
    dry = cli(ws_path, "schedule", "run-due", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("due: erp-nightly (sync of 'erp')")
    assert sync_runs(ws_path) == []
    ran = cli(ws_path, "schedule", "run-due")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("erp-nightly (sync of 'erp'): success — Landed 120 rows from 1 table")
    assert cli(ws_path, "schedule", "run-due").stdout.strip() == "No job is due."

    make_due(ws_path, "down-nightly")
    failed = cli(ws_path, "schedule", "run-due", "--json")
    assert failed.returncode == 1
    [outcome] = json.loads(failed.stdout)["outcomes"]
    assert outcome["job"] == "down-nightly" and outcome["status"] == "failed" and outcome["run_id"]
    assert [r.status for r in sync_runs(ws_path)] == ["success", "failed"]
    shown = ok_json(cli_here(ws_path, "schedule", "show", "down-nightly", "--json"))
    assert shown["last_status"] == "failed" and shown["last_run_id"] == outcome["run_id"]


HOLD_WORKSPACE = textwrap.dedent("""
    import sys, time
    from esg_workbench.workspace import open_workspace
    ws = open_workspace(sys.argv[1])
    print("open", flush=True)
    sys.stdin.read()  # hold the file until the test closes our stdin
""")


def test_run_due_on_a_duckdb_workspace_the_app_holds_exits_quietly(ws_path, pg_database, source, cli_here):
    assert cli_here(ws_path, "connector", "add", "erp", *connector_args(pg_database)).returncode == 0
    assert cli_here(ws_path, "schedule", "add", "nightly", "--connector", "erp", "--cron", "0 2 * * *").returncode == 0
    make_due(ws_path, "nightly")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WORKSPACE, ws_path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        busy = cli(ws_path, "schedule", "run-due")
        assert busy.returncode == 0, busy.stderr
        assert "The workspace is open in ESG Workbench, which runs due jobs itself" in busy.stdout
        assert "Traceback" not in busy.stderr and busy.stderr == ""
        as_json = ok_json(cli(ws_path, "schedule", "run-due", "--json"))
        assert as_json["outcomes"] == [] and "runs due jobs itself" in as_json["skipped"]
        other = cli(ws_path, "schedule", "list")  # any other command still says the file is busy
        assert other.returncode == 1 and "open in another ESG Workbench process" in other.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    ran = cli(ws_path, "schedule", "run-due")  # once the app is closed, the job runs
    assert ran.returncode == 0 and "nightly (sync of 'erp'): success" in ran.stdout


def test_two_processes_running_due_jobs_at_once_run_each_job_once(pg_database, source, cli_here):
    url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}"
    jobs = {"erp-nightly": "erp", "hr-nightly": "hr", "fleet-nightly": "fleet"}
    for name, connector in jobs.items():
        assert cli_here(url, "connector", "add", connector, *connector_args(pg_database)).returncode == 0
        assert cli_here(url, "schedule", "add", name, "--connector", connector, "--cron", "*/5 * * * *").returncode == 0
    make_due(url, *jobs)

    env = {**os.environ, "ESG_WORKBENCH_RETRY_DELAYS": "0.01,0.02,0.04"}
    procs = [subprocess.Popen([sys.executable, "-m", "esg_workbench", "--workspace", url, "schedule", "run-due",
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    outcomes = [o for out, _ in results for o in json.loads(out)["outcomes"]]
    ran = sorted(o["job"] for o in outcomes if o["status"] == "success")
    assert ran == sorted(jobs)  # each due job ran once, in one of the two processes
    # the other process found it no longer due, or lost the claim and said so
    for o in outcomes:
        assert o["status"] == "success" or (
            o["status"] == "skipped" and o["message"] == "Another window or process started this run first."), o
    runs = sync_runs(url)
    assert len(runs) == 3 and len({r.connector_id for r in runs}) == 3 and {r.status for r in runs} == {"success"}
    listed = ok_json(cli_here(url, "schedule", "list", "--json"))
    assert [j["last_status"] for j in listed] == ["success"] * 3
    assert all(dt.datetime.fromisoformat(j["next_run_at_utc"]) > utcnow() for j in listed)
