"""The headless CLI, as a script or a scheduler runs it: JSON out, exit codes."""

from __future__ import annotations

import json
import os
import re
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
    assert secret_option.returncode == 2 and "--password-stdin" in secret_option.stderr
    assert "hunter2" not in secret_option.stderr

    bad_type = cli(ws_path, "connector", "add", "x", "--type", "oracle")
    assert bad_type.returncode == 2 and "Known types" in bad_type.stderr

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


def test_connector_add_refuses_bad_values_with_the_valid_keys(ws_path):
    def add(type_, *options):
        return cli(ws_path, "connector", "add", "x", "--type", type_, *[a for o in options for a in ("--option", o)])

    refusals = {
        "unknown type": (add("oracle"), "Known types: postgres"),
        "unknown key": (add("postgres", "host=h", "database=d", "prot=5"), "'prot' is not an option of a postgres"),
        "port not a number": (add("postgres", "host=h", "database=d", "port=abc"), "port must be a whole number"),
        "chunk size too big": (add("postgres", "host=h", "database=d", "chunk_size=1e20"), "chunk_size must be"),
        "files without path": (add("files"), "A files connector needs 'path'"),
        "load type": (add("postgres", "host=h", "database=d", "load_type=sometimes"), "load_type must be one of"),
        "delta without cursor": (add("mysql", "host=h", "database=d", "load_type=delta"), "cursor_field"),
        "not key=value": (add("postgres", "host"), "is not key=value"),
    }
    for case, (proc, words) in refusals.items():
        assert proc.returncode == 2, (case, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr, (case, proc.stderr)
    # the valid keys of the type are listed (required ones starred)
    assert "host*, port, database*, schema, username" in refusals["unknown key"][0].stderr
    # a value typed into the wrong option is not repeated (it may be a password)
    wrong_field = add("postgres", "host=h", "database=d", "lookback=hunter2")
    assert wrong_field.returncode == 2 and "lookback must be a duration" in wrong_field.stderr
    assert "hunter2" not in wrong_field.stderr
    as_json = cli(ws_path, "--json", "connector", "add", "x", "--type", "files")
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["kind"] == "UsageError"
    assert ok_json(cli(ws_path, "--json", "connector", "list")) == []  # nothing was stored
    # the tuning keys a type reads are accepted; files take their own cursor (no cursor_field for delta)
    ok_json(cli(ws_path, "--json", "connector", "add", "f", "--type", "files", "--option", "path=/data",
                "--option", "load_type=delta", "--option", "header_row=2"))


def test_option_help_lists_the_keys_of_every_type(ws_path):
    from esg_workbench.connectors.options import REQUIRED_OPTIONS
    from esg_workbench.connectors.registry import TYPE_OPTIONS, connector_types

    text = cli(ws_path, "connector", "add", "--help").stdout
    for type_ in connector_types():
        line = next(x for x in text.splitlines() if x.strip().startswith(type_ + " "))
        for key in TYPE_OPTIONS[type_]:
            assert (key + "*" if key in REQUIRED_OPTIONS[type_] else key) in line, (type_, key)


def test_workspace_in_a_missing_folder_is_refused_unless_create(tmp_path):
    typo = tmp_path / "Reprots" / "esg.duckdb"
    refused = cli(str(typo), "connector", "list")
    assert refused.returncode == 2 and "There is no folder" in refused.stderr and "--create" in refused.stderr
    assert not typo.parent.exists()  # nothing was made
    made = subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", str(typo), "--create",
                           "connector", "list"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert typo.exists()
    assert cli(str(typo), "connector", "list").returncode == 0  # it exists now: no --create needed


def test_missing_files_and_malformed_periods_get_plain_messages(ws_path, tmp_path):
    missing = cli(ws_path, "factors", "import", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1, missing.stderr
    assert "nope.csv: no such file or folder" in missing.stderr and "Unexpected" not in missing.stderr
    folder = cli(ws_path, "factors", "import", str(tmp_path))
    assert folder.returncode == 1 and "Unexpected" not in folder.stderr, folder.stderr
    for bad in ("2024-13", "March", "2024-Q5"):
        proc = cli(ws_path, "kpi", "report", "--period", bad)
        assert proc.returncode == 2 and "is not a period" in proc.stderr and "No KPI values" not in proc.stdout
    assert cli(ws_path, "kpi", "show", "energy_total", "--period", "24-03").returncode == 2
    assert cli(ws_path, "kpi", "report", "--period", "2024-Q1").returncode == 0


def _all_parsers(parser):
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _all_parsers(child)


def test_every_option_and_argument_has_a_help_text():
    import argparse

    from esg_workbench.cli.entry import build_parser

    missing = [f"{p.prog} {a.dest}" for p in _all_parsers(build_parser()) for a in p._actions
               if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert missing == []


def test_readme_and_cron_help_name_what_the_code_takes():
    import pathlib
    import re

    from esg_workbench.cli.entry import build_parser
    from esg_workbench.connectors.registry import connector_types
    from esg_workbench.sync import cron

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    listed = re.search(r"# TYPE: (.*)", readme).group(1).split()
    assert sorted(listed) == sorted(connector_types())
    schedule_add = next(p for p in _all_parsers(build_parser()) if p.prog.endswith("schedule add"))
    cron_help = next(a.help for a in schedule_add._actions if a.dest == "cron")
    for shorthand in cron._SHORTHANDS:
        assert shorthand in cron_help


def test_alerts_show_without_a_keyring(ws_path):
    no_keyring = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    shown = cli(ws_path, "alerts", "show", env=no_keyring)
    assert shown.returncode == 0 and "No webhook set" in shown.stdout, shown.stderr
    assert ok_json(cli(ws_path, "--json", "alerts", "show", env=no_keyring))["webhook"] is None

    assert cli(ws_path, "alerts", "set-webhook", "https://hooks.example.com/T0/secret-token").returncode == 0
    unreadable = cli(ws_path, "alerts", "show", env=no_keyring)
    assert unreadable.returncode == 1 and "A webhook was set" in unreadable.stderr
    assert "run the command again" in unreadable.stderr and "secret-token" not in unreadable.stderr
    assert "hooks.example.com" in cli(ws_path, "alerts", "show").stdout


def test_demo_and_human_output_read_as_text(ws_path):
    demo = cli(ws_path, "demo")  # stderr is a pipe here, not a terminal
    assert demo.returncode == 0, demo.stderr
    assert len(demo.stderr.splitlines()) <= 8 and "chunk" not in demo.stderr
    assert "Demo sync success" in demo.stdout and "KPIs by site and month" in demo.stdout

    status = cli(ws_path, "status", "sample-erp").stdout
    assert re.search(r"checkpoint cursor \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, key \d+", status), status
    assert "(" not in "".join(x for x in status.splitlines() if "checkpoint" in x)  # no tuples

    aggregated = cli(ws_path, "kpi", "aggregate").stdout
    assert "Flags: " in aggregated and "{" not in aggregated and "'" not in aggregated

    shown = cli(ws_path, "kpi", "show", "energy_total", "--period", "2024-03").stdout
    value = re.match(r"energy_total 2024-03 \(all sites\): ([\d,.]+) MWh", shown).group(1)
    assert re.fullmatch(r"[\d,]+\.\d", value), value  # MWh to one decimal
    kpis = cli(ws_path, "kpi", "list").stdout
    assert re.search(r"energy_total\s+Total energy consumption\s+MWh\s+E1-5 §37\s+302-1\(e\)", kpis), kpis
    assert cli(ws_path, "kpi", "report").stdout.startswith("period")


def test_mapping_export_and_import(ws_path, tmp_path):
    path = tmp_path / "sample.esgmap.json"
    exported = ok_json(cli(ws_path, "--json", "mapping", "export", "sample_erp", str(path)))
    assert exported["file"] == str(path)
    data = json.loads(path.read_text())
    assert data["format"] == 1 and data["exported"]["version"] == 1
    imported = ok_json(cli(ws_path, "--json", "mapping", "import", str(path), "--name", "shared"))
    assert imported == {"mapping": "shared", "version": 1}
    again = ok_json(cli(ws_path, "--json", "mapping", "import", str(path), "--name", "shared"))
    assert again["version"] == 2
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    refused = cli(ws_path, "mapping", "import", str(bad))
    assert refused.returncode == 1 and "is JSON, but not an ESG Workbench mapping" in refused.stderr
    assert [r["name"] for r in ok_json(cli(ws_path, "--json", "mapping", "list"))].count("shared") == 1
