"""Keyless-table benchmark: peak memory of a sync of 1,000,000 rows without a primary key
(read in ctid page ranges) beside the same rows with one.

Run with `scripts/bench.sh -k bench_keyless`. Figures are printed, never asserted; the
assertions are about correctness (every row landed once). The source is the database
ESG_BENCH_KEYLESS_DB (default esg_bench_keyless): pgbench_accounts (pgbench -i -s 10,
keyed by aid) and accounts_keyless, a copy of it without a key, built once and reused.

Measured on the development machine (2 shared cores), `esg-workbench sync` as a whole
process: keyed 241 MB, keyless 246 MB in 20 chunks of 50,000 rows; before ctid chunking
the keyless table was one chunk: 332 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.test_bench_sync import PG_HOST, PG_PORT, PG_USER, run_measured

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(3600)]

DB = os.environ.get("ESG_BENCH_KEYLESS_DB", "esg_bench_keyless")
ROWS = 1_000_000


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
        ready = conn.execute("SELECT to_regclass('accounts_keyless') IS NOT NULL").fetchone()[0]
        if not ready or conn.execute("SELECT count(*) FROM accounts_keyless").fetchone()[0] != ROWS:
            subprocess.run(["pgbench", "-i", "-s", "10", "-q", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, DB],
                           check=True, capture_output=True)
            conn.execute("DROP TABLE IF EXISTS accounts_keyless")
            conn.execute("CREATE TABLE accounts_keyless AS SELECT * FROM pgbench_accounts")
            conn.execute("ANALYZE accounts_keyless")
    return DB


def _cli(workspace: Path, *args: str):
    run = run_measured([sys.executable, "-m", "esg_workbench", "--workspace", str(workspace), *args])
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_keyless_sync_memory(source, tmp_path):
    workspace = tmp_path / "ws.duckdb"
    options = [f"host={PG_HOST}", f"port={PG_PORT}", f"database={source}", f"username={PG_USER}", "schema=public"]
    _cli(workspace, "connector", "add", "src", "--type", "postgres", *[a for o in options for a in ("--option", o)])
    lines = []
    for table in ("pgbench_accounts", "accounts_keyless"):
        run = _cli(workspace, "sync", "src", "--table", table, "--json")
        stream = json.loads(run.stdout)["streams"][0]
        assert stream["rows_written"] == ROWS
        lines.append(f"  {table:18} {stream['chunks_planned']:4} chunks  {run.seconds:6.1f} s  "
                     f"peak RSS {run.peak_rss_mb:5.0f} MB")
    print("\nsync of 1,000,000 rows, keyed and keyless (ctid page ranges):\n" + "\n".join(lines))
