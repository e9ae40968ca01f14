"""The headless CLI, as a script or a scheduler runs it: JSON out, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PG_HOST, PG_PORT, PG_USER


def cli(workspace, *args, stdin=None, env=None):
    full_env = {**os.environ, "ESG_WORKBENCH_RETRY_DELAYS": "0.01,0.02,0.04", **(env or {})}
    return subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", workspace, *args],
                          input=stdin, capture_output=True, text=True, env=full_env, timeout=120)


def ok_json(proc):
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


@pytest.fixture
def ws_path(tmp_path):
    return str(tmp_path / "cli.duckdb")


def test_connector_lifecycle_and_sync(ws_path, pg_conn, pg_database):
    pg_conn.execute("CREATE TABLE energy (id int PRIMARY KEY, site text, kwh numeric(10,2), updated_at timestamptz NOT NULL);"
                    "INSERT INTO energy SELECT g, 'S' || g % 3, g, '2024-01-01'::timestamptz + g * interval '1 day' FROM generate_series(1, 400) g")
    added = ok_json(cli(ws_path, "connector", "add", "erp", "--type", "postgres", "--json",
                        "--option", f"host={PG_HOST}", "--option", f"port={PG_PORT}", "--option", f"database={pg_database}",
                        "--option", f"username={PG_USER}", "--option", "cursor_field=updated_at", "--option", "chunk_size=150"))
    assert added["name"] == "erp" and added["config"]["cursor_field"] == "updated_at"
    assert [c["name"] for c in ok_json(cli(ws_path, "connector", "list", "--json"))] == ["erp"]
    assert ok_json(cli(ws_path, "connector", "validate", "erp", "--json"))["message"].startswith("Connected. 1 tables")

    found = ok_json(cli(ws_path, "connector", "discover", "erp", "--table", "energy", "--sample-rows", "5", "--json"))
    table = found["tables"][0]
    assert table["table"] == "energy" and table["primary_key"] == ["id"]
    assert [c["name"] for c in table["columns"]] == ["id", "site", "kwh", "updated_at"]
    assert len(table["sample_rows"]) == 5

    run = ok_json(cli(ws_path, "sync", "erp", "--json"))
    assert run["status"] == "success" and run["rows_written"] == 400
    delta = ok_json(cli(ws_path, "sync", "erp", "--load-type", "delta", "--json"))
    assert delta["status"] == "success" and delta["rows_written"] == 1  # the tie group at the bound

    status = ok_json(cli(ws_path, "status", "erp", "--json"))
    assert status["chunks"] == {"done": 4}  # 3 chunks of the full load, 1 of the delta
    assert status["streams"][0]["sync_under_way"] is None
    logs = ok_json(cli(ws_path, "logs", "--json"))
    assert [r["status"] for r in logs] == ["success", "success"]
    assert "intact" in cli(ws_path, "audit", "verify").stdout

    text = cli(ws_path, "sync", "erp")
    assert text.returncode == 0 and "success" in text.stdout and "public.energy" in text.stdout


def test_failures_exit_non_zero_with_a_readable_message(ws_path, pg_database):
    missing = cli(ws_path, "sync", "nope")
    assert missing.returncode == 1 and "There is no connector named 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr
    as_json = cli(ws_path, "status", "nope", "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["kind"] == "NotFound"

    secret_option = cli(ws_path, "connector", "add", "x", "--type", "postgres", "--option", "password=hunter2")
    assert secret_option.returncode == 1 and "--password-stdin" in secret_option.stderr
    assert "hunter2" not in secret_option.stderr

    bad_type = cli(ws_path, "connector", "add", "x", "--type", "oracle")
    assert bad_type.returncode == 1 and "Known types" in bad_type.stderr

    ok_json(cli(ws_path, "connector", "add", "gone", "--type", "postgres", "--json", "--option", f"host={PG_HOST}",
                "--option", f"port={PG_PORT}", "--option", "database=esg_missing_db", "--option", f"username={PG_USER}"))
    invalid = cli(ws_path, "connector", "validate", "gone")
    assert invalid.returncode == 1 and "does not exist" in invalid.stderr and "What to do" in invalid.stderr
    failed_sync = cli(ws_path, "sync", "gone", "--json")
    assert failed_sync.returncode == 1 and json.loads(failed_sync.stdout)["status"] == "failed"


def test_ctrl_c_cancels_after_the_current_chunk_and_resume_finishes(ws_path, pg_conn, pg_database):
    import signal

    pg_conn.execute("CREATE TABLE readings (id int PRIMARY KEY, kwh float8);"
                    "INSERT INTO readings SELECT g, g * 0.5 FROM generate_series(1, 200000) g")
    ok_json(cli(ws_path, "connector", "add", "erp", "--type", "postgres", "--json",
                "--option", f"host={PG_HOST}", "--option", f"port={PG_PORT}", "--option", f"database={pg_database}",
                "--option", f"username={PG_USER}", "--option", "chunk_strategy=id", "--option", "chunk_size=2000"))
    sync = subprocess.Popen([sys.executable, "-m", "esg_workbench", "--workspace", ws_path, "sync", "erp"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = sync.stderr.readline()
        while "chunks 0/" in line:  # the plan; then the first chunk's line: the sync is under way
            line = sync.stderr.readline()
        assert "chunks 1/100" in line, line
        sync.send_signal(signal.SIGINT)
        out, err = sync.communicate(timeout=60)
    finally:
        sync.kill()
    assert sync.returncode == 4, out + err  # cancelled
    assert "Cancelling after the current chunk" in err and "cancelled" in out

    resumed = ok_json(cli(ws_path, "sync", "erp", "--resume", "--json"))
    assert resumed["status"] == "success"
    logs = ok_json(cli(ws_path, "logs", "--json"))
    assert [r["status"] for r in logs] == ["success", "cancelled"]
    assert sum(r["items_written"] for r in logs) == 200000  # each row landed once over both runs


def test_json_is_a_global_option_before_or_after_the_command(ws_path):
    before = cli(ws_path, "--json", "connector", "list")
    after = cli(ws_path, "connector", "list", "--json")
    assert ok_json(before) == ok_json(after) == []
    assert not cli(ws_path, "connector", "list").stdout.startswith("[")  # without --json: text
    missing = cli(ws_path, "--json", "status", "nope")
    assert missing.returncode == 1 and json.loads(missing.stdout)["kind"] == "NotFound"


def test_command_modules_share_output_and_never_import_each_other():
    """cli/ is a package: command groups import output.py/runs.py, not one another (no cycle)."""
    import ast
    import pathlib

    import esg_workbench.cli as package

    shared = {"output", "runs"}
    folder = pathlib.Path(package.__file__).parent
    commands = [p for p in folder.glob("*.py") if p.stem not in shared | {"__init__", "__main__", "entry"}]
    assert {"connector", "sync", "schedule", "health", "workspace"} <= {p.stem for p in commands}
    for path in [*commands, *(folder / f"{name}.py" for name in shared)]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("esg_workbench.cli"):
                imported = node.module.split(".")[2:] or [a.name for a in node.names]
                assert set(imported) <= shared, f"{path.name} imports {node.module} {[a.name for a in node.names]}"
