"""Sync benchmark: PostgreSQL -> DuckDB workspace, side by side with the raw source speed.

Run with `scripts/bench.sh` (pyproject's addopts deselect the `benchmark` marker, so a
plain `pytest` never runs this). Figures are measured and printed, never asserted; the
only assertions are about correctness (every row landed, none twice).

Per source table (1,000,000 rows each, in the PostgreSQL database `esg_bench`), in
ESG_BENCH_ROUNDS interleaved rounds (default 5), each round measuring in turn:
* the COPY floor: `COPY (SELECT * FROM t) TO STDOUT (FORMAT binary)` into /dev/null by
  psql, a whole process: the source's own speed on this machine at that moment;
* a full sync: `esg-workbench --workspace W sync NAME --table t` as a whole process into
  a fresh DuckDB workspace (connector added through the CLI first; full load, default
  `auto` chunking, a checkpoint per chunk): seconds, its ratio to the floor of the same
  round, the CPU seconds of the process (PostgreSQL's own work not included), its peak
  RSS and its chunk count; also the engine's own seconds (SyncEngine.run, no start-up);
* a no-op delta: a delta connector (cursor_field set, its first sync made once before the
  rounds) synced again when nothing is new at the source;
* a 1% delta: 10,000 new rows appended at the source (copies of existing rows under new
  keys and, for meter_readings, later cursor values), then the delta sync that lands them.
The appended rows are deleted at the source after each round (and before the test starts).
The summary shows the medians of the rounds and the load average of each round next to
them: the machine is shared, so single figures mean little.

The measured processes run with Python bytecode compiled first (`python -m compileall -q
esg_workbench` into PYTHONPYCACHEPREFIX in the temp directory, PYTHONDONTWRITEBYTECODE
removed) and after a warm-up sync, as an installed app runs; the start-up section also
shows the cost of imports without bytecode and the heaviest imports of `--help`.

The source tables are built once and reused while they hold the right rows
(ESG_BENCH_REBUILD=1 rebuilds them; ESG_BENCH_DB names another database).
ESG_BENCH_SYNC_ARGS adds arguments to the measured full syncs; ESG_BENCH_COMPARE_ARGS adds
a second full sync to every round with other arguments, to compare a setting with the
default in the same rounds: ESG_BENCH_COMPARE_ARGS="--chunk-size 50000" scripts/bench.sh -k bench_sync

ESG_BENCH_BASELINE=/path/to/another/checkout measures that version's code too, in the same
rounds, right after this one's (full sync, no-op delta and 1% delta, each a whole process
with PYTHONPATH at that checkout; its delta connector has a workspace of its own), for
before/after figures taken under the same load: ESG_BENCH_BASELINE=../main scripts/bench.sh -k bench_sync

ESG_BENCH_10M=1 adds test_ten_million_rows: a full sync of a 10,000,000-row meter_readings
(the table `meter_readings_10m`, built once like the others, about 2.5 GB in PostgreSQL)
into a fresh workspace, as a whole process (time, ratio to the COPY floor, CPU, peak RSS,
chunks), then of the baseline's code when ESG_BENCH_BASELINE is set; ESG_BENCH_10M_ROUNDS
rounds (default 1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(3600)]

PG_HOST = os.environ.get("ESG_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ESG_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("ESG_TEST_PG_USER", "postgres")
BENCH_DB = os.environ.get("ESG_BENCH_DB", "esg_bench")
# ESG_BENCH_REPEAT: the former name of the setting
ROUNDS = max(1, int(os.environ.get("ESG_BENCH_ROUNDS", os.environ.get("ESG_BENCH_REPEAT", "5"))))
REPEAT = 3  # start-up figures: best of 3
PYCACHE = os.environ.get("ESG_BENCH_PYCACHE", os.path.join(tempfile.gettempdir(), "esg-bench-pycache"))
SYNC_ARGS = tuple(os.environ.get("ESG_BENCH_SYNC_ARGS", "").split())
# a second full sync in every round with these arguments, side by side with the default
COMPARE_ARGS = tuple(os.environ.get("ESG_BENCH_COMPARE_ARGS", "").split())
ROWS = 1_000_000
BASELINE = os.environ.get("ESG_BENCH_BASELINE")  # another checkout, measured in the same rounds
BIG_ROWS = 10_000_000  # ESG_BENCH_10M=1
BIG_TABLE = "meter_readings_10m"

DELTA_ROWS = ROWS // 100  # the 1% delta

# issue 14's targets (printed, never asserted)
TARGET_RATIO = 2.0
TARGET_RSS_MB = 256
TARGET_NOOP_DELTA_S = 0.6

# Bump when the definition below changes: a populated table of another version is rebuilt.
METER_VERSION = "esg-bench meter_readings v2"
METER_DDL = """
CREATE TABLE {table} (
    reading_id     bigint PRIMARY KEY,
    meter_id       integer NOT NULL,
    site_code      text NOT NULL,
    site_name      text,                      -- nullable, non-ASCII
    energy_carrier text NOT NULL,
    reading_value  numeric(14,3) NOT NULL,
    unit           text NOT NULL,
    cost_eur       numeric(14,3),
    co2e_kg        numeric(14,3),
    quality_flag   text,
    operator_note  text,                      -- nullable, non-ASCII, longer
    reading_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL       -- the delta cursor; pairs of rows share a value
)
"""
# Deterministic, generated in SQL. updated_at spans about two years (about 42,000 rows a
# month) with ties: rows 2k and 2k+1 share one updated_at.
METER_FILL = """
INSERT INTO {table}
SELECT i,
       1 + i % 5000,
       'SITE-' || lpad((i % 250)::text, 4, '0'),
       CASE WHEN i % 7 = 0 THEN NULL
            ELSE (ARRAY['Zürich Süd', 'Malmö Hamn', 'São Paulo Centro', 'Kraków Nowa Huta',
                        '東京 品川', 'Düsseldorf Nord'])[1 + i % 6] END,
       (ARRAY['electricity', 'natural_gas', 'diesel', 'district_heat', 'water'])[1 + i % 5],
       ((i::bigint * 7919) % 100000000) / 1000.0,
       (ARRAY['kWh', 'm3', 'l', 'MWh', 'm3'])[1 + i % 5],
       CASE WHEN i % 11 = 0 THEN NULL ELSE ((i::bigint * 104729) % 1000000000) / 1000.0 END,
       CASE WHEN i % 13 = 0 THEN NULL ELSE ((i::bigint * 1299709) % 10000000000) / 1000.0 END,
       CASE WHEN i % 3 = 0 THEN 'estimated' WHEN i % 3 = 1 THEN 'measured' ELSE NULL END,
       CASE WHEN i % 5 = 0 THEN NULL
            ELSE 'Ablesung ' || i || ' – Zähler geprüft, Verbrauch plausibel (°C-bereinigt) ✓' END,
       timestamptz '2023-01-01 00:00:00+00' + (i / 2) * interval '126 seconds' - interval '1 hour',
       timestamptz '2023-01-01 00:00:00+00' + (i / 2) * interval '126 seconds',
       timestamptz '2023-01-01 00:00:00+00' + (i / 2) * interval '126 seconds'
FROM generate_series(1, {rows}) AS i
"""
# An ERP table synced by delta has its change timestamp indexed (with the key, the order
# delta pages in); without it every delta plans with full scans of the table.
METER_INDEX = "CREATE INDEX {table}_updated_at ON {table} (updated_at, reading_id)"


@dataclass
class Table:
    name: str  # the source table
    key: str  # its primary key (an integer, 1..ROWS when built)
    cursor_field: str  # the delta cursor
    # appends DELTA_ROWS ({rows}) new rows: copies of the first ones, keys shifted by {offset},
    # with cursor values beyond every earlier round's ({round})
    append_sql: str
    delta_options: tuple[str, ...] = ()  # extra options of the delta connector
    figures: dict = field(default_factory=dict)


TABLES = [
    # pgbench_accounts has no timestamp: its delta runs on the dense integer key as an
    # append-only cursor, chunked by id (time windows need a timestamp).
    Table("pgbench_accounts", "aid", "aid",
          "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) "
          "SELECT aid + {offset}, bid, abalance, filler FROM pgbench_accounts WHERE aid <= {rows}",
          ("chunk_strategy=id",)),
    # updated_at of the source ends in 2025: the appended rows come years later
    Table("meter_readings", "reading_id", "updated_at",
          "INSERT INTO meter_readings SELECT reading_id + {offset}, meter_id, site_code, site_name, energy_carrier, "
          "reading_value, unit, cost_eur, co2e_kg, quality_flag, operator_note, reading_at, created_at, "
          "updated_at + interval '5 years' + {round} * interval '1 month' FROM meter_readings "
          "WHERE reading_id <= {rows}"),
]


# --- running whole processes -------------------------------------------------------------------

@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    result: dict | None = None  # the --json output of a sync


# The measured process is started by this small launcher, not by pytest: Linux carries the
# peak RSS of the process that forks (or vforks) a child into the child's ru_maxrss, so a
# child spawned straight from pytest (duckdb and pyarrow loaded) would report pytest's
# size. The launcher (python -S, about 10 MB) spawns the command, reaps it with wait4 and
# writes its wall time, CPU time, peak RSS (KB) and exit status.
_LAUNCHER = """
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(out, "w") as f:
    f.write(f"{seconds} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def child_env(**extra: str) -> dict[str, str]:
    """The environment of an installed app: bytecode is cached (outside the repository)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    env.update(extra)
    return env


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> Run:
    """Run a whole process: wall time, CPU time and its own peak RSS (wait4's rusage)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result"
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(result), *argv],
                           stdout=out, stderr=err, env=env or child_env(), check=False)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if not result.exists():
            pytest.fail(f"could not run {argv}:\n{stderr}")
        seconds, cpu, rss_kb, code = result.read_text().split()
        return Run(float(seconds), float(cpu), int(rss_kb) / 1024, int(code), stdout, stderr)


def _cli() -> list[str]:
    """The installed console script next to this interpreter (what a user runs)."""
    script = Path(sys.executable).with_name("esg-workbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "esg_workbench"]


def cli(workspace: Path, *args: str, tree: str | None = None) -> Run:
    """`esg-workbench --workspace W ARGS` as a whole process, of this checkout's code or of
    the checkout `tree` (the baseline)."""
    run = run_measured([*_cli(), "--workspace", str(workspace), *args],
                       env=child_env(PYTHONPATH=tree) if tree else None)
    if run.returncode != 0:
        pytest.fail(f"esg-workbench {' '.join(args)} exited {run.returncode}:\n{run.stdout}\n{run.stderr}")
    return run


def add_connector(workspace: Path, *options: str, tree: str | None = None) -> None:
    base = [f"host={PG_HOST}", f"port={PG_PORT}", f"database={BENCH_DB}", f"username={PG_USER}", "schema=public"]
    cli(workspace, "connector", "add", "src", "--type", "postgres",
        *[a for o in (*base, *options) for a in ("--option", o)], tree=tree)


def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.seconds)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def raw_copy_seconds(table: str) -> float:
    """psql: COPY (SELECT * FROM t) TO STDOUT (FORMAT binary) into /dev/null, whole process."""
    env = {**os.environ, "PGHOST": PG_HOST, "PGPORT": str(PG_PORT), "PGUSER": PG_USER, "PGDATABASE": BENCH_DB}
    started = time.perf_counter()
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    f'COPY (SELECT * FROM "{table}") TO STDOUT (FORMAT binary)'],
                   stdout=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - started


def landed_rows(workspace: Path, table: str, key: str | None = None) -> tuple[int, int]:
    """(rows, distinct keys) of the raw table of `table` in a workspace."""
    import duckdb

    key = key or next(t.key for t in TABLES if t.name == table)
    con = duckdb.connect(str(workspace), read_only=True)
    try:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE starts_with(table_name, 'raw_')").fetchall()
            if table in r[0] and "__shadow_" not in r[0]]
        assert len(names) == 1, f"expected one raw table for {table}, found {names}"
        return con.execute(f'SELECT count(*), count(DISTINCT "{key}") FROM "{names[0]}"').fetchone()
    finally:
        con.close()


def sync(workspace: Path, table: str, *extra: str, tree: str | None = None) -> tuple[Run, dict]:
    """`esg-workbench sync` as a whole process; its run and its --json result."""
    run = cli(workspace, "sync", "src", "--table", table, "--json", *extra, tree=tree)
    result = json.loads(run.stdout)
    assert result["status"] == "success", result
    return run, result


# --- the source ------------------------------------------------------------------------------

def _port_open() -> bool:
    import socket

    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def _connect(dbname: str):
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True)


def _count(conn, table: str) -> int | None:
    if conn.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone()[0] is None:
        return None
    return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def remove_appended_rows(conn) -> None:
    """Delete the rows the 1% deltas appended (keys beyond ROWS)."""
    for t in TABLES:
        if conn.execute("SELECT to_regclass(%s)", (f"public.{t.name}",)).fetchone()[0] is not None:
            conn.execute(f'DELETE FROM "{t.name}" WHERE "{t.key}" > %s', (ROWS,))


@pytest.fixture(scope="module")
def source():
    """The benchmark database with both tables of 1,000,000 rows (built once, reused)."""
    if not _port_open():
        if os.environ.get("ESG_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PostgreSQL on {PG_HOST}:{PG_PORT} is not available")
        pytest.skip(f"PostgreSQL on {PG_HOST}:{PG_PORT} is not available")
    for tool in ("pgbench", "psql"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: postgresql-client)")
    rebuild = os.environ.get("ESG_BENCH_REBUILD") == "1"
    with _connect("postgres") as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone() is None:
            admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
    with _connect(BENCH_DB) as conn:
        remove_appended_rows(conn)  # left by a run that was killed
        if rebuild or _count(conn, "pgbench_accounts") != ROWS:
            print(f"\n[bench] building pgbench_accounts (pgbench -i -s 10) in {BENCH_DB} ...", flush=True)
            started = time.perf_counter()
            subprocess.run(["pgbench", "-i", "-q", "-s", "10", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER,
                            BENCH_DB], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"[bench] built in {time.perf_counter() - started:.1f} s", flush=True)
        build_meter_readings(conn, "meter_readings", ROWS, rebuild)
    return BENCH_DB


def build_meter_readings(conn, table: str, rows: int, rebuild: bool) -> None:
    """The wide ERP table `table` with `rows` rows, unless it holds them already."""
    version = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (f"public.{table}",)).fetchone()[0]
    if not rebuild and version == METER_VERSION and _count(conn, table) == rows:
        return
    print(f"\n[bench] building {table} ({rows:,} rows, generate_series) in {BENCH_DB} ...", flush=True)
    started = time.perf_counter()
    conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    conn.execute(METER_DDL.format(table=table))
    conn.execute(METER_FILL.format(table=table, rows=rows))
    conn.execute(METER_INDEX.format(table=table))
    conn.execute(f"COMMENT ON TABLE \"{table}\" IS '{METER_VERSION}'")
    conn.execute(f'VACUUM ANALYZE "{table}"')
    print(f"[bench] built in {time.perf_counter() - started:.1f} s", flush=True)


@pytest.fixture(scope="module")
def warm(source, tmp_path_factory):
    """Bytecode compiled first, then one small sync, so that every measured process finds
    its bytecode cached (the app's own and its libraries')."""
    import esg_workbench

    for tree in (Path(esg_workbench.__file__).parent, *([Path(BASELINE) / "esg_workbench"] if BASELINE else [])):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], env=child_env(), check=True)
    for tree in (None, BASELINE) if BASELINE else (None,):
        ws = tmp_path_factory.mktemp("warm") / "warm.duckdb"
        add_connector(ws, tree=tree)
        cli(ws, "sync", "src", "--table", "pgbench_branches", tree=tree)
    return source


@pytest.fixture(scope="module")
def report():
    figures: list[Table] = []
    startup: dict = {}
    load_before = os.getloadavg()
    yield figures, startup
    print("\n" + summary(figures, startup, load_before, os.getloadavg()), flush=True)


def summary(tables: list[Table], startup: dict, load_before, load_after) -> str:
    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    width = 116
    lines = ["", "=" * width,
             (f"ESG Workbench sync benchmark: PostgreSQL {PG_HOST}:{PG_PORT}/{BENCH_DB} -> fresh DuckDB workspace, "
              f"{ROWS:,} rows per table"),
             (f"whole processes, medians of {ROUNDS} interleaved rounds; {os.cpu_count()} CPUs, load average "
              f"{load_before[0]:.1f} before, {load_after[0]:.1f} after"
              + ("  (BUSY MACHINE: figures are inflated)"
                 if max(load_before[0], load_after[0]) > (os.cpu_count() or 1) / 2 else "")),
             *([f"full syncs with: {' '.join(SYNC_ARGS)}"] if SYNC_ARGS else []),
             *([f"baseline: {BASELINE}, measured right after this checkout in every round"] if BASELINE else []),
             "=" * width]
    head = (f"{'table':<17} {'COPY s':>6} {'sync s':>7} {'ratio':>6} {'rows/s':>9} {'CPU s':>6} "
            f"{'peak RSS MB':>11} {'chunks':>6} {'engine s':>8} {'no-op delta s':>13} {'its RSS':>7} "
            f"{'1% delta s':>10} {'load':>10}")
    lines += [head, "-" * len(head)]
    for t in tables:
        f = t.figures
        if not f.get("rounds"):
            continue
        rounds = f["rounds"]

        def col(name: str, rounds=rounds) -> float:
            return median([r[name] for r in rounds if name in r])

        loads = [r["load"] for r in rounds]
        lines.append(f"{t.name:<17} {col('copy_s'):>6.2f} {col('sync_s'):>7.2f} {col('ratio'):>5.2f}x "
                     f"{ROWS / col('sync_s'):>9,.0f} {col('cpu_s'):>6.2f} {max(r['rss_mb'] for r in rounds):>11.0f} "
                     f"{rounds[0]['chunks']:>6} {col('engine_s'):>8.2f} {col('noop_s'):>13.2f} "
                     f"{max(r.get('noop_rss_mb', 0) for r in rounds):>7.0f} {col('delta_s'):>10.2f} "
                     f"{min(loads):>4.1f}-{max(loads):<4.1f}")
        if "base" in rounds[0]:
            def bcol(name: str, rounds=rounds) -> float:
                return median([r["base"][name] for r in rounds if name in r["base"]])

            lines.append(f"{'  baseline':<17} {'':>6} {bcol('sync_s'):>7.2f} {bcol('ratio'):>5.2f}x "
                         f"{ROWS / bcol('sync_s'):>9,.0f} {bcol('cpu_s'):>6.2f} "
                         f"{max(r['base']['rss_mb'] for r in rounds):>11.0f} {rounds[0]['base']['chunks']:>6} "
                         f"{bcol('engine_s'):>8.2f} {bcol('noop_s'):>13.2f} "
                         f"{max(r['base'].get('noop_rss_mb', 0) for r in rounds):>7.0f} {bcol('delta_s'):>10.2f}")
            lines.append(f"{'':<17} CPU s of the no-op delta {col('noop_cpu_s'):.2f} (baseline "
                         f"{bcol('noop_cpu_s'):.2f}), of the 1% delta {col('delta_cpu_s'):.2f} (baseline "
                         f"{bcol('delta_cpu_s'):.2f})")
        if "cmp_s" in rounds[0]:
            lines.append(f"{'':<17} full sync with {' '.join(COMPARE_ARGS)}: {col('cmp_s'):.2f} s = "
                         f"{col('cmp_ratio'):.2f}x, CPU {col('cmp_cpu_s'):.2f} s, peak RSS "
                         f"{max(r['cmp_rss_mb'] for r in rounds):.0f} MB, {rounds[0]['cmp_chunks']} chunks")
        lines.append(f"{'':<17} rounds: sync " + " ".join(f"{r['sync_s']:.2f}" for r in rounds)
                     + " | ratio " + " ".join(f"{r['ratio']:.2f}" for r in rounds)
                     + " | no-op " + " ".join(f"{r['noop_s']:.2f}" for r in rounds if "noop_s" in r)
                     + " | 1% " + " ".join(f"{r['delta_s']:.2f}" for r in rounds if "delta_s" in r))
    lines.append("")
    lines.append("COPY s: the floor, psql's binary COPY of the whole table to /dev/null; ratio: sync s / COPY s of the "
                 "same round (median of the ratios)")
    lines.append("sync s, CPU s, peak RSS (the highest of the rounds): the whole `esg-workbench sync` process; "
                 f"engine s: SyncEngine.run alone; 1% delta: {DELTA_ROWS:,} new rows; load: 1-minute load average")
    lines.append(f"targets (issue 14): full sync <= {TARGET_RATIO:.1f}x the floor, peak RSS <= {TARGET_RSS_MB} MB, "
                 f"no-op delta <= {TARGET_NOOP_DELTA_S} s (whole process)")
    for t in tables:
        f = t.figures
        if not f.get("rounds"):
            continue
        rounds = f["rounds"]
        lines.append(f"  {t.name:<17} ratio {mark(median([r['ratio'] for r in rounds]) <= TARGET_RATIO):<6}  "
                     f"RSS {mark(max(r['rss_mb'] for r in rounds) <= TARGET_RSS_MB):<6}  "
                     f"no-op delta {mark(median([r.get('noop_s', 99) for r in rounds]) <= TARGET_NOOP_DELTA_S):<6} "
                     f"(delta cursor {t.cursor_field}, indexed)")
    if startup:
        lines += ["", "start-up (whole processes, best of 3):",
                  f"  esg-workbench --help                        {startup['help_s']:.2f} s  {startup['help_rss_mb']:4.0f} MB",
                  f"  the imports of a sync, bytecode cached      {startup['imports_s']:.2f} s  {startup['imports_rss_mb']:4.0f} MB",
                  f"  the imports of a sync, no bytecode (.pyc)   {startup['imports_cold_s']:.2f} s"]
        for key, title in (("top_imports", "a sync"), ("help_imports", "--help")):
            if startup.get(key):
                lines.append(f"  heaviest top-level imports of {title} (python -X importtime, cumulative):")
                lines += [f"    {us / 1e6:6.3f} s  {name}" for name, us in startup[key]]
    lines.append("=" * width)
    return "\n".join(lines)


# --- the benchmarks ---------------------------------------------------------------------------

def append_delta_rows(table: Table, round_: int) -> None:
    """Add DELTA_ROWS new rows at the source, after every row of earlier rounds (whose
    appended rows are deleted at the source, but stay landed in the delta workspace)."""
    with _connect(BENCH_DB) as conn:
        conn.execute(table.append_sql.format(rows=DELTA_ROWS, offset=ROWS + round_ * DELTA_ROWS, round=round_))
        conn.execute(f'ANALYZE "{table.name}"')


@pytest.mark.parametrize("table", TABLES, ids=[t.name for t in TABLES])
def test_sync_benchmark(warm, report, table: Table, tmp_path):
    figures, _ = report
    figures.append(table)
    rounds: list[dict] = table.figures.setdefault("rounds", [])

    # the delta connector's first sync lands every row and leaves a checkpoint (the
    # baseline's delta connector has a workspace of its own)
    trees = {None: tmp_path / "delta.duckdb", **({BASELINE: tmp_path / "delta-baseline.duckdb"} if BASELINE else {})}
    for tree, delta_ws in trees.items():
        add_connector(delta_ws, "load_type=delta", f"cursor_field={table.cursor_field}", *table.delta_options,
                      tree=tree)
        first, result = sync(delta_ws, table.name, tree=tree)
        print(f"\n[bench] {table.name}{' (baseline)' if tree else ''}: first delta {first.seconds:.2f} s, "
              f"CPU {first.cpu_seconds:.2f} s, peak RSS {first.peak_rss_mb:.0f} MB, "
              f"{result['streams'][0]['chunks_planned']} chunks", flush=True)
    landed = ROWS
    try:
        for i in range(ROUNDS):
            r: dict = {"load": os.getloadavg()[0]}
            rounds.append(r)
            r["copy_s"] = raw_copy_seconds(table.name)

            # this checkout and the baseline take turns at going first
            order = list(trees) if i % 2 == 0 else list(trees)[::-1]
            for tree in order:  # a full load into a fresh workspace, as a user runs it
                fig = r if tree is None else r.setdefault("base", {})
                ws = tmp_path / f"full{i}.duckdb"
                add_connector(ws, tree=tree)
                run, result = sync(ws, table.name, *SYNC_ARGS, tree=tree)
                assert landed_rows(ws, table.name) == (ROWS, ROWS)
                ws.unlink()
                fig.update(sync_s=run.seconds, ratio=run.seconds / r["copy_s"], cpu_s=run.cpu_seconds,
                           rss_mb=run.peak_rss_mb, chunks=result["streams"][0]["chunks_planned"],
                           engine_s=result["seconds"])

            if COMPARE_ARGS:
                ws = tmp_path / f"compare{i}.duckdb"
                add_connector(ws)
                run, result = sync(ws, table.name, *COMPARE_ARGS)
                assert landed_rows(ws, table.name) == (ROWS, ROWS)
                ws.unlink()
                r.update(cmp_s=run.seconds, cmp_ratio=run.seconds / r["copy_s"], cmp_cpu_s=run.cpu_seconds,
                         cmp_rss_mb=run.peak_rss_mb, cmp_chunks=result["streams"][0]["chunks_planned"])
                print(f"[bench] {table.name} round {i + 1}/{ROUNDS}: full sync with {' '.join(COMPARE_ARGS)} "
                      f"{run.seconds:.2f} s = {r['cmp_ratio']:.2f}x (CPU {run.cpu_seconds:.2f} s, "
                      f"peak RSS {run.peak_rss_mb:.0f} MB, {r['cmp_chunks']} chunks)", flush=True)

            for tree in order:
                delta_ws = trees[tree]
                noop, result = sync(delta_ws, table.name, tree=tree)
                # nothing is new at the source: at most the tie group at the checkpoint is re-read
                # (and upserted by key, so it adds no duplicate)
                assert result["rows_written"] <= 2, result
                (r if tree is None else r["base"]).update(noop_s=noop.seconds, noop_rss_mb=noop.peak_rss_mb,
                                                          noop_cpu_s=noop.cpu_seconds)

            append_delta_rows(table, i)
            landed += DELTA_ROWS
            for tree in order:
                delta_ws = trees[tree]
                delta, result = sync(delta_ws, table.name, tree=tree)
                assert DELTA_ROWS <= result["rows_written"] <= DELTA_ROWS + 2, result
                assert landed_rows(delta_ws, table.name) == (landed, landed)
                (r if tree is None else r["base"]).update(delta_s=delta.seconds, delta_rss_mb=delta.peak_rss_mb,
                                                          delta_cpu_s=delta.cpu_seconds)
            with _connect(BENCH_DB) as conn:  # the source is back to ROWS rows for the next full sync
                remove_appended_rows(conn)
            print(f"[bench] {table.name} round {i + 1}/{ROUNDS} (load {r['load']:.1f}): COPY {r['copy_s']:.2f} s, "
                  f"full sync {r['sync_s']:.2f} s = {r['ratio']:.2f}x (engine {r['engine_s']:.2f} s, "
                  f"CPU {r['cpu_s']:.2f} s, peak RSS {r['rss_mb']:.0f} MB, {r['chunks']} chunks), "
                  f"no-op delta {r['noop_s']:.2f} s, 1% delta {r['delta_s']:.2f} s", flush=True)
            if BASELINE:
                b = r["base"]
                print(f"[bench] {table.name} round {i + 1}/{ROUNDS} baseline: full sync {b['sync_s']:.2f} s = "
                      f"{b['ratio']:.2f}x (engine {b['engine_s']:.2f} s, CPU {b['cpu_s']:.2f} s, peak RSS "
                      f"{b['rss_mb']:.0f} MB, {b['chunks']} chunks), no-op delta {b['noop_s']:.2f} s, "
                      f"1% delta {b['delta_s']:.2f} s", flush=True)
    finally:
        with _connect(BENCH_DB) as conn:
            remove_appended_rows(conn)


@pytest.mark.skipif(os.environ.get("ESG_BENCH_10M") != "1", reason="ESG_BENCH_10M=1 runs the 10M-row sync")
def test_ten_million_rows(warm, tmp_path):
    """A full sync of 10,000,000 rows of the wide table into a fresh workspace, whole process:
    the memory bound at scale (peak RSS must not grow with the table) and the time."""
    with _connect(BENCH_DB) as conn:
        build_meter_readings(conn, BIG_TABLE, BIG_ROWS, os.environ.get("ESG_BENCH_REBUILD") == "1")
    trees = [None, BASELINE] if BASELINE else [None]
    lines = []
    for i in range(max(1, int(os.environ.get("ESG_BENCH_10M_ROUNDS", "1")))):
        copy_s = raw_copy_seconds(BIG_TABLE)
        for tree in trees if i % 2 == 0 else trees[::-1]:
            ws = tmp_path / "big.duckdb"
            add_connector(ws, tree=tree)
            load = os.getloadavg()[0]
            run, result = sync(ws, BIG_TABLE, tree=tree)
            assert landed_rows(ws, BIG_TABLE, "reading_id") == (BIG_ROWS, BIG_ROWS)
            size_mb = ws.stat().st_size / 2**20
            ws.unlink()
            lines.append(f"  {'baseline' if tree else 'this':<8} round {i + 1}: COPY {copy_s:.2f} s, full sync "
                         f"{run.seconds:.1f} s = {run.seconds / copy_s:.2f}x ({BIG_ROWS / run.seconds:,.0f} rows/s; "
                         f"engine {result['seconds']:.1f} s), CPU {run.cpu_seconds:.1f} s, peak RSS "
                         f"{run.peak_rss_mb:.0f} MB, {result['streams'][0]['chunks_planned']} chunks, workspace "
                         f"{size_mb:,.0f} MB; load {load:.1f} -> {os.getloadavg()[0]:.1f}")
            print("[bench]" + lines[-1], flush=True)
    print(f"\n[bench] {BIG_TABLE}: {BIG_ROWS:,} rows, full sync into a fresh DuckDB workspace "
          f"(whole process; target peak RSS <= {TARGET_RSS_MB} MB)\n" + "\n".join(lines), flush=True)


# what a sync imports before it touches a database
SYNC_IMPORTS = ("import esg_workbench.cli, esg_workbench.workspace, esg_workbench.sync.engine, "
                "esg_workbench.connectors.postgres, duckdb_engine, adbc_driver_postgresql, adbc_driver_manager, "
                "sqlalchemy.dialects.postgresql.psycopg")


def heaviest_imports(args: list[str], top: int = 6) -> list[tuple[str, int]]:
    """The top-level imports of `python -X importtime ARGS` with the most cumulative microseconds."""
    timing = run_measured([sys.executable, "-X", "importtime", *args])
    rows = []
    for line in timing.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top-level imports only
            rows.append((m.group(4), int(m.group(2))))
    return sorted(rows, key=lambda r: -r[1])[:top]


def test_startup_benchmark(warm, report, tmp_path):
    """What a whole process pays before any work: the floor under a no-op delta."""
    _, startup = report
    helps = [run_measured([*_cli(), "--help"]) for _ in range(3)]
    startup["help_s"] = best(helps).seconds
    startup["help_rss_mb"] = max(r.peak_rss_mb for r in helps)
    imports = [run_measured([sys.executable, "-c", SYNC_IMPORTS]) for _ in range(3)]
    startup["imports_s"] = best(imports).seconds
    startup["imports_rss_mb"] = max(r.peak_rss_mb for r in imports)
    # as installed by a tool that does not compile bytecode, with writing it switched off
    cold = [run_measured([sys.executable, "-c", SYNC_IMPORTS],
                         env=child_env(PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(tmp_path / f"none{i}")))
            for i in range(3)]
    startup["imports_cold_s"] = best(cold).seconds
    startup["top_imports"] = heaviest_imports(["-c", SYNC_IMPORTS])
    # what `--help` imports: building the parser should not pull in the workspace's libraries
    startup["help_imports"] = heaviest_imports(["-m", "esg_workbench", "--help"])
    print(f"\n[bench] start-up: --help {startup['help_s']:.2f} s; a sync's imports {startup['imports_s']:.2f} s "
          f"(without bytecode {startup['imports_cold_s']:.2f} s)", flush=True)
