"""Deletes-pass benchmark: peak memory of `esg-workbench sync --detect-deletes` (a no-op
delta followed by the keys-only pass) over 1,000,000 keys, beside the same no-op delta
without the pass.

Run with `scripts/bench.sh -k bench_deletes`. Figures are printed, never asserted; the
assertions are about correctness (nothing is marked when nothing was deleted; the rows
deleted are marked). The source is the database ESG_BENCH_DELETES_DB (default
data_bench_deletes), built once and reused: `accounts` keyed by an integer (1M rows),
`meters` keyed by 40-character text (1M rows). ESG_BENCH_DELETES_CODE: a checkout of
another version of the code to compare with (its PYTHONPATH), measured in the same
interleaved rounds. ESG_BENCH_DELETES_WORKSPACE=postgres: the workspace is the PostgreSQL
database data_bench_deletes_ws (recreated), else a DuckDB file. Results are in the README
("What a sync guarantees").
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import pytest

from tests.benchmarks.test_bench_sync import PG_HOST, PG_PORT, PG_USER, child_env, run_measured

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(3600)]

DB = os.environ.get("ESG_BENCH_DELETES_DB", "data_bench_deletes")
ROWS = int(os.environ.get("ESG_BENCH_DELETES_ROWS", "1000000"))  # another count rebuilds the tables
TABLES = os.environ.get("ESG_BENCH_DELETES_TABLES", "accounts,meters").split(",")
ROUNDS = int(os.environ.get("ESG_BENCH_ROUNDS", "3"))
REPO = Path(__file__).resolve().parents[2]


def _connect(dbname: str):
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True)


@pytest.fixture(scope="module")
def source():
    try:
        admin = _connect("postgres")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL on {PG_HOST}:{PG_PORT}: {exc}")
    with admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone():
            admin.execute(f'CREATE DATABASE "{DB}"')
    with _connect(DB) as conn:
        for table, key in (("accounts", "g"), ("meters", "'meter-' || md5(g::text) || '-' || lpad(g::text, 7, '0')")):
            ready = conn.execute(f"SELECT to_regclass('{table}') IS NOT NULL").fetchone()[0]
            if table in TABLES and (not ready or conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] != ROWS):
                kind = "int" if key == "g" else "text"
                conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute(f"CREATE TABLE {table} (id {kind} PRIMARY KEY, kwh int NOT NULL, "
                             "updated_at timestamptz NOT NULL)")
                conn.execute(f"INSERT INTO {table} SELECT {key}, g, '2024-01-01'::timestamptz + g * interval '1 s' "
                             f"FROM generate_series(1, {ROWS}) g")
                conn.execute(f"ANALYZE {table}")
    return DB


def _cli(workspace: Path | str, code: Path, *args: str):
    env = child_env(PYTHONPATH=str(code))
    run = run_measured([sys.executable, "-P", "-m", "esg_workbench", "--workspace", str(workspace), *args], env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_deletes_pass_memory(source, tmp_path):
    codes = {"this": REPO}
    if os.environ.get("ESG_BENCH_DELETES_CODE"):
        codes["compared"] = Path(os.environ["ESG_BENCH_DELETES_CODE"])
    workspace: Path | str = tmp_path / "ws.duckdb"
    if os.environ.get("ESG_BENCH_DELETES_WORKSPACE") == "postgres":
        with _connect("postgres") as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DB}_ws"')
            admin.execute(f'CREATE DATABASE "{DB}_ws"')
        workspace = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{DB}_ws"
    options = [f"host={PG_HOST}", f"port={PG_PORT}", f"database={source}", f"username={PG_USER}", "schema=public",
               "load_type=delta", "cursor_field=updated_at"]
    _cli(workspace, REPO, "connector", "add", "src", "--type", "postgres", *[a for o in options for a in ("--option", o)])
    figures: dict[tuple, list] = {}
    for table in TABLES:
        first = json.loads(_cli(workspace, REPO, "sync", "src", "--table", table, "--json").stdout)
        assert first["rows_written"] == ROWS
        for _ in range(ROUNDS):  # interleaved: every version in every round
            for name, code in codes.items():
                for detect in (False, True):
                    run = _cli(workspace, code, "sync", "src", "--table", table, "--json",
                               *(["--detect-deletes"] if detect else []))
                    shown = json.loads(run.stdout)
                    assert shown["status"] == "success" and shown["rows_deleted"] == 0, shown
                    figures.setdefault((table, name, detect), []).append((run.peak_rss_mb, run.seconds))
    load = Path("/proc/loadavg").read_text().split()[:3]
    kind = "PostgreSQL" if isinstance(workspace, str) else "DuckDB"
    lines = [f"no-op delta of {ROWS:,} rows with and without the deletes pass, {kind} workspace (medians of "
             f"{ROUNDS} rounds, load {' '.join(load)}):"]
    for (table, name, detect), runs in sorted(figures.items()):
        rss = statistics.median(r[0] for r in runs)
        seconds = statistics.median(r[1] for r in runs)
        lines.append(f"  {table:9} {name:9} {'pass' if detect else 'no pass':8} peak RSS {rss:5.0f} MB  "
                     f"{seconds:5.1f} s  (RSS {', '.join(f'{r[0]:.0f}' for r in runs)})")
    print("\n" + "\n".join(lines))
