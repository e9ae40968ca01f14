"""The sync engine's guarantees (DESIGN.md section 4) under stress, against a real
PostgreSQL source and a DuckDB workspace file:

* SIGKILL at many instants of full and delta loads (run as `python -m esg_workbench
  sync`), then resume until done: the raw table equals the source, row for row, with no
  duplicate key after any kill; a full load never touches the old raw table before its
  swap.
* Cursor ties larger than a chunk, NULL cursors, microsecond cursors with and without a
  time zone, look-back for late rows.
* A source outage (tests/fault_proxy.py) during a sync: failed chunks after 1 + 3
  attempts, partial success, retry of the failed chunks alone; a transient outage that
  heals within the retries.
* Three syncs in parallel into one workspace; the audit chain stays intact and names a
  tampered entry.

Every comparison is exact: row count AND a digest over the ordered rows (id, value,
amount, cursor in epoch microseconds) computed on both sides.

The random instants come from ESG_TEST_SEED (printed on failure) so a failing
schedule can be replayed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_HOST, PG_PORT, PG_USER
from fault_proxy import FaultProxy

REPO = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("ESG_TEST_SEED") or random.SystemRandom().randrange(1, 10**9))
FAST_RETRIES = (0.05, 0.1, 0.2)
PROGRESS = re.compile(r": chunks (\d+)/(\d+)")
UTC = dt.timezone.utc


# --- comparing the workspace with the source ----------------------------------------------

def source_rows(pg_conn, table: str = "t", cursor: str = "updated_at") -> list[tuple]:
    """(id, value, amount, cursor as epoch microseconds) ordered by id."""
    return [tuple(r) for r in pg_conn.execute(
        f"SELECT id, value, amount, (extract(epoch FROM {cursor}) * 1000000)::bigint "
        f"FROM {table} ORDER BY id").fetchall()]


def ws_rows(query, raw: str, cursor: str = "updated_at") -> list[tuple]:
    return [tuple(r) for r in query(f'SELECT id, value, amount, epoch_us("{cursor}") FROM "{raw}" ORDER BY id')]


def digest(rows: list[tuple]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(repr(tuple(str(v) if isinstance(v, Decimal) else v for v in row)).encode())
    return h.hexdigest()


def assert_same(landed: list[tuple], expected: list[tuple], what: str) -> None:
    """Exact equality by count and digest; on mismatch, say which ids differ."""
    if len(landed) == len(expected) and digest(landed) == digest(expected):
        return
    got = {r[0]: r for r in landed}
    want = {r[0]: r for r in expected}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    dups = len(landed) - len(got)
    sample = [(got[k], want[k]) for k in changed[:3]]
    pytest.fail(f"{what}: workspace has {len(landed)} rows ({dups} duplicate ids), source {len(expected)}; "
                f"missing ids {missing[:10]} ({len(missing)}), extra ids {extra[:10]} ({len(extra)}), "
                f"changed {len(changed)} e.g. {sample} [ESG_TEST_SEED={SEED}]", pytrace=False)


def duplicate_ids(query, table: str) -> list[tuple]:
    return [tuple(r) for r in query(f'SELECT id, count(*) FROM "{table}" GROUP BY id HAVING count(*) > 1 LIMIT 10')]


def table_names(query) -> set[str]:
    return {r[0] for r in query("SELECT table_name FROM information_schema.tables")}


def sa_query(conn):
    return lambda sql: conn.exec_driver_sql(sql).fetchall()


# --- source data ----------------------------------------------------------------------------

def create_source(pg_conn, table: str = "t", cursor_type: str = "timestamptz", nullable: bool = False) -> None:
    pg_conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, value text NOT NULL, amount numeric(12,3), "
                    f"updated_at {cursor_type} {'' if nullable else 'NOT NULL'})")


def fill_source(pg_conn, n: int, table: str = "t", start: int = 1, step: str = "1 second",
                base: str = "2024-01-01 00:00:00+00") -> None:
    pg_conn.execute(
        f"INSERT INTO {table} SELECT g, md5(g::text), (g % 9973) * 1.125, "
        f"timestamptz '{base}' + (g - {start}) * interval '{step}' FROM generate_series({start}, {start + n - 1}) g")


# --- the workspace --------------------------------------------------------------------------

def add_pg_connector(ws_path: Path, name: str, database: str, port: int = PG_PORT, **options):
    from esg_workbench.sync import operations
    from esg_workbench.workspace import open_workspace

    ws = open_workspace(str(ws_path))
    try:
        return operations.add_connector(ws, name, "postgres", {
            "host": PG_HOST, "port": port, "database": database, "username": PG_USER, "schema": "public",
            **{k: v for k, v in options.items() if v is not None}})
    finally:
        ws.close()


def raw_name(connector_id: str, stream: str = "public.t") -> str:
    from esg_workbench.workspace.raw_tables import raw_table_name

    return raw_table_name(connector_id, stream)


# --- running the CLI and killing it ------------------------------------------------------------

@dataclass
class CliRun:
    rc: int
    killed: bool
    lines: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # seconds after start, per progress line

    @property
    def planned(self) -> int | None:
        for line in self.lines:
            m = PROGRESS.search(line)
            if m:
                return int(m.group(2))
        return None


def run_cli_sync(ws_path: Path, *args: str, kill_after_lines: int | None = None, jitter: float = 0.0,
                 kill_at: float | None = None, kill_after_last_chunk: bool = False, timeout: float = 120) -> CliRun:
    """`python -m esg_workbench sync pg ARGS`; SIGKILL it `jitter` seconds after its
    `kill_after_lines`-th progress line (the first one says the plan is made, each next
    one that a chunk landed), or after the line of its plan's last chunk (the full load's
    swap, the run's end), or `kill_at` seconds after start."""
    env = dict(os.environ, ESG_WORKBENCH_WORKSPACE=str(ws_path), ESG_WORKBENCH_RETRY_DELAYS="0.05,0.1,0.2",
               PYTHONUNBUFFERED="1")
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "esg_workbench", "sync", "pg", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    times: list[float] = []
    reached = threading.Event()

    def read() -> None:
        seen = 0
        for line in proc.stderr:
            lines.append(line.rstrip())
            m = PROGRESS.search(line)
            if m:
                times.append(time.monotonic() - start)
                seen += 1
                if kill_after_lines is not None and seen >= kill_after_lines:
                    reached.set()
                if kill_after_last_chunk and seen > 1 and m.group(1) == m.group(2):
                    reached.set()
        reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if kill_after_lines is not None or kill_after_last_chunk:
            reached.wait(timeout)
            if jitter:
                time.sleep(jitter)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        elif kill_at is not None:
            try:
                proc.wait(timeout=kill_at)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    # shown by pytest when a test fails: the schedule that was run
    print(f"sync {' '.join(args)}: kill after line {'last' if kill_after_last_chunk else kill_after_lines} "
          f"+{jitter:.3f}s / at {kill_at} -> rc {rc} "
          f"in {time.monotonic() - start:.2f}s, {len(times)} progress lines", flush=True)
    return CliRun(rc, rc == -signal.SIGKILL, lines, times)


def sync_until_success(ws_path: Path, *args: str, tries: int = 4) -> list[CliRun]:
    runs = []
    for _ in range(tries):
        runs.append(run_cli_sync(ws_path, *args))
        if runs[-1].rc == 0:
            return runs
    pytest.fail(f"sync {' '.join(args)} did not succeed in {tries} tries: "
                + " | ".join(f"rc {r.rc}: {r.lines[-3:]}" for r in runs), pytrace=False)


@dataclass
class Snapshot:
    """The state of a workspace file as a crashed process left it."""

    tables: set[str]
    raw: list[tuple] | None  # None: no raw table
    raw_dups: list[tuple]
    active_sync_id: int | None
    plan: dict | None
    ledger: list[tuple]  # (chunk id, status, rows_written) of the active plan
    landed_by_plan: list[tuple]  # (chunk id, rows) landed in the plan's target by its chunks
    target_dups: list[tuple]


def snapshot(ws_path: Path, scratch: Path, raw: str) -> Snapshot:
    """Open a copy of the workspace (its WAL replayed by DuckDB as a restart would), so
    the crashed state itself is left for the resume to recover."""
    import duckdb

    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    copy = scratch / ws_path.name
    shutil.copy2(ws_path, copy)
    wal = Path(f"{ws_path}.wal")
    if wal.exists():
        shutil.copy2(wal, Path(f"{copy}.wal"))
    con = duckdb.connect(str(copy))
    try:
        q = lambda sql: con.execute(sql).fetchall()
        tables = table_names(q)
        state = q("SELECT active_sync_id, plan FROM connector_sync_state")
        active, plan = (state[0][0], json.loads(state[0][1]) if state[0][1] else None) if state else (None, None)
        ledger, landed, target_dups = [], [], []
        if active:
            ledger = q(f"SELECT id, status, rows_written FROM connector_sync_chunks WHERE sync_id = {int(active)} ORDER BY seq")
            target = plan["target"]
            if target in tables:
                ids = ",".join(str(c[0]) for c in ledger) or "NULL"
                landed = q(f'SELECT _esg_chunk_id, count(*) FROM "{target}" WHERE _esg_chunk_id IN ({ids}) '
                           f"GROUP BY 1 ORDER BY 1")
                target_dups = duplicate_ids(q, target)
        return Snapshot(
            tables=tables,
            raw=ws_rows(q, raw) if raw in tables else None,
            raw_dups=duplicate_ids(q, raw) if raw in tables else [],
            active_sync_id=active, plan=plan, ledger=ledger, landed_by_plan=landed, target_dups=target_dups,
        )
    finally:
        con.close()


def check_plan_accounting(snap: Snapshot, what: str) -> None:
    """Exactly once inside a plan: the rows its chunks put in the target are those of the
    chunks marked done, as many as the ledger says, and no chunk not done left a row."""
    done = {cid: rows for cid, status, rows in snap.ledger if status == "done"}
    landed = dict(snap.landed_by_plan)
    assert set(landed) <= set(done), f"{what}: rows from chunks not marked done: {set(landed) - set(done)} [seed {SEED}]"
    assert {c: n for c, n in landed.items()} == {c: n for c, n in done.items() if n}, \
        f"{what}: landed per chunk {landed} != ledger {done} [seed {SEED}]"
    assert not snap.target_dups, f"{what}: duplicate ids in {snap.plan['target']}: {snap.target_dups} [seed {SEED}]"


def workspace_rows_now(ws_path: Path, raw: str) -> tuple[list[tuple], list[tuple], set[str], int]:
    import duckdb

    con = duckdb.connect(str(ws_path))
    try:
        q = lambda sql: con.execute(sql).fetchall()
        tables = table_names(q)
        active = q("SELECT count(*) FROM connector_sync_state WHERE active_sync_id IS NOT NULL")[0][0]
        return ws_rows(q, raw), duplicate_ids(q, raw), tables, active
    finally:
        con.close()


def kill_schedule(rng: random.Random, n: int, planned: int, interval: float, t_planned: float):
    """n kills spread over a sync: one by time, before or while it plans; n - 2 after
    the k-th progress line (k spread over all chunks) plus a random delay of up to about
    one chunk, so they fall anywhere in reading, landing or committing a chunk; and one
    just after the last chunk landed (the swap and the end of the run)."""
    kills = [dict(kill_at=rng.uniform(0.25, max(0.3, t_planned)))]
    middle = n - 2
    for j in range(middle):
        k = 1 + int((j + rng.random()) * planned / middle)
        kills.append(dict(kill_after_lines=min(k, planned), jitter=rng.uniform(0, interval * 1.3)))
    kills.append(dict(kill_after_last_chunk=True, jitter=rng.uniform(0, 0.03)))
    return kills


def measure(run: CliRun) -> tuple[int, float, float]:
    assert run.rc == 0 and run.planned and len(run.times) == run.planned + 1, run.lines[-5:]
    gaps = sorted(b - a for a, b in zip(run.times[1:], run.times[2:]))
    return run.planned, gaps[len(gaps) // 2], run.times[0]


# --- 1. SIGKILL during full loads -------------------------------------------------------------

@pytest.mark.slow
def test_full_load_killed_at_random_instants_resumes_to_exact_copy(pg_conn, pg_database, tmp_path):
    rng = random.Random(SEED)
    create_source(pg_conn)
    fill_source(pg_conn, 36_000)
    options = dict(cursor_field="updated_at", chunk_size=2000)

    # how long does a sync take on this machine, chunk by chunk?
    probe = tmp_path / "probe.duckdb"
    probe_record = add_pg_connector(probe, "pg", pg_database, **options)
    planned, interval, t_planned = measure(run_cli_sync(probe))
    assert planned >= 18
    assert_same(workspace_rows_now(probe, raw_name(probe_record.id))[0], source_rows(pg_conn), "an unbroken full load")

    ws_path = tmp_path / "ws.duckdb"
    raw = raw_name(add_pg_connector(ws_path, "pg", pg_database, **options).id)
    kills = kill_schedule(rng, 10, planned, interval, t_planned)
    kills.insert(0, kills.pop(len(kills) // 2))  # the very first load is killed in the middle
    old: list[tuple] | None = None  # what the raw table held before this load (None: nothing yet)
    mid_sync_kills = 0
    for i, kill in enumerate(kills):
        what = f"load {i} (kill {kill})"
        if i:  # change the source: updates, deletes and inserts the new load must reflect
            pg_conn.execute(f"UPDATE t SET value = value || '+{i}', updated_at = updated_at + interval '1 ms' "
                            f"WHERE id % 37 = {i}")
            pg_conn.execute(f"DELETE FROM t WHERE id IN (SELECT id FROM t WHERE id % 101 = {i} LIMIT 40)")
            pg_conn.execute(f"INSERT INTO t SELECT g, 'new ' || g, 1.5, timestamptz '2024-06-01+00' + g * interval '1 s' "
                            f"FROM generate_series({100_000 + i * 100}, {100_000 + i * 100 + 49}) g")
        new = source_rows(pg_conn)

        run = run_cli_sync(ws_path, **kill)
        snap = snapshot(ws_path, tmp_path / "crash", raw)
        assert not snap.raw_dups, f"{what}: duplicate ids in the raw table after the kill: {snap.raw_dups}"
        if snap.active_sync_id:
            # killed before the swap: the old raw table is exactly as it was
            if old is None:
                assert snap.raw is None, f"{what}: a raw table appeared before the first load finished"
            else:
                assert_same(snap.raw, old, f"{what}: raw table after a kill before the swap")
            check_plan_accounting(snap, what)
            done = sum(1 for _, s, _ in snap.ledger if s == "done")
            mid_sync_kills += run.killed and 0 < done < len(snap.ledger)
            print(f"{what}: killed with {done}/{len(snap.ledger)} chunks done", flush=True)
            if i % 3 == 1 and done < len(snap.ledger) - 2:
                # a resume killed too, after its first landed chunk
                again = run_cli_sync(ws_path, "--resume", kill_after_lines=2, jitter=rng.uniform(0, interval))
                check_plan_accounting(snapshot(ws_path, tmp_path / "crash", raw), f"{what}, killed resume")
                assert again.killed or again.rc == 0, again.lines[-5:]
            sync_until_success(ws_path, "--resume")
        else:
            # killed before planning (old data) or after the swap committed (new data)
            print(f"{what}: killed outside a plan, raw table holds the {'new' if snap.raw == new else 'old'} data")
            if snap.raw != new:
                if old is None:
                    assert snap.raw is None, f"{what}: partial raw table without an active plan"
                else:
                    assert_same(snap.raw, old, f"{what}: raw table after a kill outside the plan")
                sync_until_success(ws_path)

        rows, dups, tables, active = workspace_rows_now(ws_path, raw)
        assert not dups, f"{what}: duplicates after resume: {dups}"
        assert_same(rows, new, f"{what}: raw table after resuming")
        assert active == 0, f"{what}: a plan is still open after success"
        assert not [t for t in tables if "__shadow_" in t], f"{what}: shadow tables left: {tables}"
        old = new

    assert mid_sync_kills >= 4, f"only {mid_sync_kills} kills landed between chunks of a plan [seed {SEED}]"
    from esg_workbench.audit import chain
    from esg_workbench.workspace import open_workspace

    ws = open_workspace(str(ws_path))
    try:
        result = chain.verify(ws)
        assert result.ok, result.describe()
        with ws.read() as conn:
            statuses = [r[0] for r in conn.exec_driver_sql("SELECT status FROM connector_sync_logs").fetchall()]
        assert "running" not in statuses, statuses  # killed runs were marked interrupted
    finally:
        ws.close()


# --- 2. SIGKILL during delta loads --------------------------------------------------------------

def mutate_for_delta(pg_conn, rng: random.Random, i: int) -> None:
    """Updates and inserts past the last checkpoint: a tie group of 4,500 rows on one
    updated_at (more than four chunks of 1,000), plus rows spread over distinct instants."""
    ids = [r[0] for r in pg_conn.execute("SELECT id FROM t").fetchall()]
    picked = rng.sample(ids, 7_000)
    tie, spread = picked[:3_000], picked[3_000:]
    t_i = f"2024-01-{2 + i:02d} 12:00:00+00"
    pg_conn.execute(f"UPDATE t SET value = 'tie {i} ' || id, updated_at = timestamptz '{t_i}' "
                    f"WHERE id = ANY(%s)", [tie])
    pg_conn.execute(f"UPDATE t SET value = 'spread {i} ' || id, amount = amount + 1, "
                    f"updated_at = timestamptz '{t_i}' + (id %% 5000 + 1) * interval '1 ms' WHERE id = ANY(%s)", [spread])
    top = max(ids)
    pg_conn.execute(f"INSERT INTO t SELECT g, 'late ' || g, 2.5, timestamptz '{t_i}' "
                    f"FROM generate_series({top + 1}, {top + 1500}) g")
    pg_conn.execute(f"INSERT INTO t SELECT g, 'new ' || g, 3.5, timestamptz '{t_i}' + (g % 977) * interval '1 microsecond' "
                    f"FROM generate_series({top + 1501}, {top + 2000}) g")


@pytest.mark.slow
def test_delta_load_killed_at_random_instants_resumes_to_exact_copy(pg_conn, pg_database, tmp_path):
    rng = random.Random(SEED + 1)
    create_source(pg_conn)
    fill_source(pg_conn, 24_000)
    ws_path = tmp_path / "ws.duckdb"
    raw = raw_name(add_pg_connector(ws_path, "pg", pg_database, load_type="delta", cursor_field="updated_at",
                                    chunk_size=1000).id)
    first = run_cli_sync(ws_path)
    assert first.rc == 0, first.lines[-5:]
    rows, dups, _, _ = workspace_rows_now(ws_path, raw)
    assert_same(rows, source_rows(pg_conn), "initial delta load")
    _, interval, t_planned = measure(first)

    old = source_rows(pg_conn)
    mid_sync_kills = 0
    for i in range(7):
        mutate_for_delta(pg_conn, rng, i)
        new = source_rows(pg_conn)
        old_by_id, new_by_id = {r[0]: r for r in old}, {r[0]: r for r in new}
        changed = sum(1 for k, r in new_by_id.items() if old_by_id.get(k) != r)
        planned = -(-changed // 1000)  # chunks of this delta (one month window, split by size)
        if i == 0:
            kill = dict(kill_at=rng.uniform(0.25, t_planned))
        elif i == 6:
            kill = dict(kill_after_last_chunk=True, jitter=rng.uniform(0, 0.03))
        else:
            kill = dict(kill_after_lines=1 + int((i - 1 + rng.random()) * (planned + 1) / 5),
                        jitter=rng.uniform(0, interval * 1.3))
        what = f"delta {i} (kill {kill})"

        run = run_cli_sync(ws_path, **kill)
        snap = snapshot(ws_path, tmp_path / "crash", raw)
        assert not snap.raw_dups, f"{what}: duplicate ids in the raw table after the kill: {snap.raw_dups}"
        # every landed row is its old or its new version; no id missing, none invented
        landed = {r[0]: r for r in snap.raw}
        assert len(landed) == len(snap.raw)
        assert set(old_by_id) <= set(landed) <= set(new_by_id), f"{what}: ids lost or invented"
        wrong = [r for k, r in landed.items() if r != old_by_id.get(k) and r != new_by_id[k]]
        assert not wrong, f"{what}: rows that are neither old nor new: {wrong[:3]}"
        if snap.active_sync_id:
            check_plan_accounting(snap, what)
            done = sum(1 for _, s, _ in snap.ledger if s == "done")
            mid_sync_kills += run.killed and 0 < done < len(snap.ledger)
            print(f"{what}: killed with {done}/{len(snap.ledger)} chunks done", flush=True)
            sync_until_success(ws_path, "--resume")
        elif snap.raw != new:
            print(f"{what}: killed outside a plan, raw table holds the old data")
            assert_same(snap.raw, old, f"{what}: raw table after a kill outside a plan")
            sync_until_success(ws_path)

        rows, dups, tables, active = workspace_rows_now(ws_path, raw)
        assert not dups, f"{what}: duplicates after resume: {dups}"
        assert_same(rows, new, f"{what}: raw table after resuming")
        assert active == 0
        old = new

    assert mid_sync_kills >= 3, f"only {mid_sync_kills} kills landed between chunks of a plan [seed {SEED}]"
    # a last delta finds nothing new: the checkpoint is exactly at the end
    last = run_cli_sync(ws_path)
    assert last.rc == 0
    from esg_workbench.workspace import open_workspace

    ws = open_workspace(str(ws_path))
    try:
        with ws.read() as conn:
            assert conn.exec_driver_sql("SELECT items_written FROM connector_sync_logs ORDER BY id DESC LIMIT 1").scalar() == 0
        from esg_workbench.audit import chain

        assert chain.verify(ws).ok
    finally:
        ws.close()


# --- 3. cursor ties, NULL cursors, precision, look-back (in process) -------------------------------

@pytest.fixture
def ws(tmp_path):
    from esg_workbench.workspace import open_workspace

    workspace = open_workspace(str(tmp_path / "ws.duckdb"))
    yield workspace
    workspace.close()


def add_connector(ws, pg_database: str, name: str = "pg", port: int = PG_PORT, **options):
    from esg_workbench.sync import operations

    return operations.add_connector(ws, name, "postgres", {
        "host": PG_HOST, "port": port, "database": pg_database, "username": PG_USER, "schema": "public",
        **options})


def run_sync(ws, name: str = "pg", on_progress=None, retry_delays=FAST_RETRIES, **request):
    from esg_workbench.sync.engine import SyncEngine, SyncRequest

    return SyncEngine(ws, retry_delays=retry_delays, on_progress=on_progress).run(SyncRequest(name, **request))


def landed(ws, raw: str, cursor: str = "updated_at") -> list[tuple]:
    with ws.read() as conn:
        rows = ws_rows(sa_query(conn), raw, cursor)
        dups = duplicate_ids(sa_query(conn), raw)
    assert not dups, f"duplicate ids in {raw}: {dups}"
    return rows


def ledger_of(ws, run_id: int):
    from esg_workbench.workspace import sync_records

    with ws.read() as conn:
        return sync_records.ledger(conn, run_id)


def test_delta_tie_group_larger_than_a_chunk_lands_each_row_once(ws, pg_conn, pg_database):
    create_source(pg_conn)
    # 1,500 rows before, 5,000 rows sharing one instant (ids interleaved with the others), 1,500 after
    pg_conn.execute("INSERT INTO t SELECT g, 'v' || g, g, CASE WHEN g % 8 < 5 THEN timestamptz '2024-03-10 08:00+00' "
                    "WHEN g % 8 < 6 THEN timestamptz '2024-03-01+00' + g * interval '1 s' "
                    "ELSE timestamptz '2024-03-20+00' + g * interval '1 s' END FROM generate_series(1, 8000) g")
    assert pg_conn.execute("SELECT count(*) FROM t WHERE updated_at = '2024-03-10 08:00+00'").fetchone()[0] == 5000
    record = add_connector(ws, pg_database, load_type="delta", cursor_field="updated_at", chunk_size=700)
    raw = raw_name(record.id)

    first = run_sync(ws)
    assert first.status.value == "success", first.error
    assert_same(landed(ws, raw), source_rows(pg_conn), "first delta")
    assert first.rows_written == 8000
    chunks = ledger_of(ws, first.run_id)
    inside_tie = [c for c in chunks if c.range.lower and c.range.lower[0] == dt.datetime(2024, 3, 10, 8, tzinfo=UTC)]
    assert len(inside_tie) >= 6, [c.range.describe() for c in chunks]  # the tie group is split across chunks
    assert all(len(c.range.lower) == 2 for c in inside_tie)  # split by (cursor, id), not by cursor alone
    assert sum(c.rows_written for c in chunks) == 8000

    # rows updated between two syncs (some from inside the tie group) and new rows, all on
    # one new instant, some with ids below the checkpoint's id
    pg_conn.execute("UPDATE t SET value = 'changed', updated_at = '2024-04-02 09:00+00' "
                    "WHERE id % 10 = 3 OR id BETWEEN 7000 AND 7199")
    pg_conn.execute("DELETE FROM t WHERE id = 5")  # a gap an insert reuses below
    pg_conn.execute("INSERT INTO t VALUES (5, 'reborn', 0, '2024-04-02 09:00+00')")
    pg_conn.execute("INSERT INTO t SELECT g, 'n' || g, 1, '2024-04-02 09:00+00' FROM generate_series(8001, 8500) g")
    expected_delta = pg_conn.execute("SELECT count(*) FROM t WHERE updated_at = '2024-04-02 09:00+00'").fetchone()[0]

    # while this sync runs, more rows change: it must leave them for the next one
    def change_during_sync(event):
        if event.chunks_done == 1 and not changed_during:
            pg_conn.execute("UPDATE t SET value = 'during', updated_at = '2024-05-01+00' WHERE id IN (1, 2, 8500)")
            changed_during.append(True)

    changed_during: list[bool] = []
    second = run_sync(ws, on_progress=change_during_sync)
    assert second.status.value == "success", second.error
    assert changed_during
    # the second sync read each changed row exactly once, none of the untouched ones;
    # row 8500 moved beyond the fixed upper bound before it was read
    assert second.rows_written in (expected_delta, expected_delta - 1), (second.rows_written, expected_delta)
    third = run_sync(ws)
    assert third.status.value == "success", third.error
    assert_same(landed(ws, raw), source_rows(pg_conn), "delta after changes during a sync")
    assert third.rows_written == 3  # ids 1, 2 and 8500, changed during the second sync
    fourth = run_sync(ws)
    assert fourth.rows_written == 0


def test_null_cursor_rows_land_on_the_first_delta_and_are_warned_about_later(ws, pg_conn, pg_database):
    create_source(pg_conn, nullable=True)
    fill_source(pg_conn, 2000)
    pg_conn.execute("INSERT INTO t SELECT g, 'null ' || g, 0, NULL FROM generate_series(10001, 11000) g")
    record = add_connector(ws, pg_database, load_type="delta", cursor_field="updated_at", chunk_size=700)
    raw = raw_name(record.id)

    first = run_sync(ws)
    assert first.status.value == "success", first.error
    assert_same(landed(ws, raw), source_rows(pg_conn), "first delta with NULL cursors")
    null_chunks = [c for c in ledger_of(ws, first.run_id) if c.range.null_cursor]
    assert len(null_chunks) == 2 and sum(c.rows_written for c in null_chunks) == 1000  # split by id
    assert not any("no updated_at" in w for s in first.streams for w in s.warnings)

    pg_conn.execute("INSERT INTO t VALUES (20001, 'late null', 0, NULL), (20002, 'dated', 0, '2024-02-01+00')")
    second = run_sync(ws)
    assert second.status.value == "success", second.error
    warnings = [w for s in second.streams for w in s.warnings]
    assert "1001 rows have no updated_at; only a full load reads them again" in warnings, warnings
    assert second.rows_written == 1  # the dated row; the NULL rows are not re-read
    rows = landed(ws, raw)
    assert_same(rows, [r for r in source_rows(pg_conn) if r[0] != 20001], "second delta")

    full = run_sync(ws, load_type="full")
    assert full.status.value == "success", full.error
    assert_same(landed(ws, raw), source_rows(pg_conn), "full load after deltas")


def test_full_load_with_a_cursor_field_reads_null_cursors_and_rows_changed_during_the_load(ws, pg_conn, pg_database):
    """A full load is paged by primary key: the cursor's upper bound (kept for the next
    delta's checkpoint) must not filter it."""
    create_source(pg_conn, nullable=True)
    fill_source(pg_conn, 10_000)
    pg_conn.execute("UPDATE t SET updated_at = NULL WHERE id % 50 = 0")
    record = add_connector(ws, pg_database, cursor_field="updated_at", chunk_size=1000)
    raw = raw_name(record.id)

    def change_during_load(event):
        if event.chunks_done == 1 and not changed:
            # rows of the last chunks, not read yet: one gets a newer cursor, one loses it
            pg_conn.execute("UPDATE t SET value = 'during', updated_at = '2030-01-01+00' WHERE id = 9999")
            pg_conn.execute("UPDATE t SET value = 'during', updated_at = NULL WHERE id = 9998")
            changed.append(True)

    changed: list[bool] = []
    result = run_sync(ws, on_progress=change_during_load)
    assert result.status.value == "success", result.error
    assert changed and len(ledger_of(ws, result.run_id)) == 10
    assert_same(landed(ws, raw), source_rows(pg_conn), "full load")

    delta = run_sync(ws, load_type="delta")  # re-reads from the checkpoint the full load left
    assert delta.status.value == "success", delta.error
    assert_same(landed(ws, raw), source_rows(pg_conn), "delta after the full load")


@pytest.mark.parametrize("cursor_type", ["timestamp", "timestamptz"])
def test_microsecond_cursor_at_chunk_boundaries(ws, pg_conn, pg_database, cursor_type):
    create_source(pg_conn, cursor_type=cursor_type)
    # 1,400 rows one microsecond apart; ids run against the cursor, so only (cursor, id)
    # ordering is right. Chunks of 700 put a boundary between two rows 1 µs apart.
    zone = "+00" if cursor_type == "timestamptz" else ""
    pg_conn.execute(f"INSERT INTO t SELECT 2000 - g, 'v' || g, g, ({cursor_type} '2024-05-05 10:00:00{zone}' "
                    f"+ g * interval '1 microsecond') FROM generate_series(0, 1399) g")
    if cursor_type == "timestamptz":  # written from a session in another zone: compared in UTC anyway
        pg_conn.execute("SET TimeZone = 'America/New_York'")
    record = add_connector(ws, pg_database, load_type="delta", cursor_field="updated_at", chunk_size=700)
    raw = raw_name(record.id)

    first = run_sync(ws)
    assert first.status.value == "success", first.error
    assert_same(landed(ws, raw), source_rows(pg_conn), f"{cursor_type}: first delta")
    chunks = ledger_of(ws, first.run_id)
    assert len(chunks) == 2, [c.range.describe() for c in chunks]
    boundary = chunks[1].range.lower[0]
    assert boundary.microsecond == 700 and (boundary.tzinfo is not None) == (cursor_type == "timestamptz")
    assert [c.rows_written for c in chunks] == [700, 700]

    status = __import__("esg_workbench.sync.operations", fromlist=["x"]).connector_status(ws, "pg")
    checkpoint = status["streams"][0]["last_cursor"]
    assert (checkpoint.hour, checkpoint.minute, checkpoint.second, checkpoint.microsecond) == (10, 0, 0, 1399)

    last = "2024-05-05 10:00:00.001399" + zone
    pg_conn.execute(f"INSERT INTO t VALUES (5000, 'one after', 1, {cursor_type} '{last}' + interval '1 microsecond'), "
                    f"(5001, 'tie, higher id', 1, {cursor_type} '{last}')")  # checkpoint id is 601
    pg_conn.execute(f"UPDATE t SET value = 'moved', updated_at = {cursor_type} '{last}' + interval '2 microsecond' "
                    "WHERE id = 1000")
    second = run_sync(ws)
    assert second.status.value == "success", second.error
    assert second.rows_written == 3
    assert_same(landed(ws, raw), source_rows(pg_conn), f"{cursor_type}: second delta")


def test_lookback_window_picks_up_late_rows_without_duplicates(ws, pg_conn, pg_database):
    create_source(pg_conn)
    fill_source(pg_conn, 3000, step="10 seconds", base="2024-07-01 00:00:00+00")  # ~8.3 h
    record = add_connector(ws, pg_database, load_type="delta", cursor_field="updated_at", chunk_size=700,
                           lookback="1h")
    raw = raw_name(record.id)
    first = run_sync(ws)
    assert first.status.value == "success", first.error
    assert_same(landed(ws, raw), source_rows(pg_conn), "first delta")
    checkpoint = pg_conn.execute("SELECT max(updated_at) FROM t").fetchone()[0]

    # transactions that committed late: rows stamped before the checkpoint
    pg_conn.execute("INSERT INTO t SELECT g, 'late ' || g, 7, %s - interval '30 minutes' + g * interval '1 ms' "
                    "FROM generate_series(9001, 9020) g", [checkpoint])
    pg_conn.execute("UPDATE t SET value = 'late update', updated_at = %s - interval '10 minutes' WHERE id IN (3, 4, 5)",
                    [checkpoint])
    pg_conn.execute("INSERT INTO t SELECT g, 'too late ' || g, 7, %s - interval '2 hours' "
                    "FROM generate_series(9101, 9105) g", [checkpoint])
    in_window = pg_conn.execute("SELECT count(*) FROM t WHERE updated_at >= %s - interval '1 hour'",
                                [checkpoint]).fetchone()[0]

    second = run_sync(ws)
    assert second.status.value == "success", second.error
    assert second.rows_written == in_window  # the window is re-read, and only the window
    expected = [r for r in source_rows(pg_conn) if not 9101 <= r[0] <= 9105]  # older than the look-back
    assert_same(landed(ws, raw), expected, "delta with look-back")

    third = run_sync(ws)  # re-reads the window again: still no duplicate
    assert third.status.value == "success"
    assert_same(landed(ws, raw), expected, "second delta with look-back")


# --- 4. source outage mid-sync ------------------------------------------------------------------

@pytest.fixture
def proxy():
    p = FaultProxy((PG_HOST, PG_PORT))
    yield p
    p.close()


def cut_after(proxy: FaultProxy, chunks: int, events: list):
    def on_progress(event):
        events.append(event)
        if event.chunks_done >= chunks and not proxy.is_cut and not events_cut:
            proxy.cut()
            events_cut.append(event.chunks_done)

    events_cut: list[int] = []
    return on_progress


@pytest.mark.parametrize("load_type", ["full", "delta"])
def test_outage_fails_chunks_after_retries_then_retry_failed_completes(ws, pg_conn, pg_database, proxy, load_type):
    create_source(pg_conn)
    fill_source(pg_conn, 20_000)
    record = add_connector(ws, pg_database, port=proxy.port, load_type=load_type, cursor_field="updated_at",
                           chunk_size=2000)
    raw = raw_name(record.id)
    before = run_sync(ws)
    assert before.status.value == "success", before.error
    old = source_rows(pg_conn)
    assert_same(landed(ws, raw), old, "before the outage")

    # change 12,000 rows (delta: 6 chunks; full: 10 chunks over the whole table)
    pg_conn.execute("UPDATE t SET value = 'after ' || id, updated_at = timestamptz '2024-02-01+00' + id * interval '1 s' "
                    "WHERE id > 8000")
    events: list = []
    partial = run_sync(ws, on_progress=cut_after(proxy, 2, events))
    assert proxy.is_cut
    assert partial.status.value == "partial_success", (partial.status, partial.error)
    stream = partial.streams[0]
    chunks = ledger_of(ws, partial.run_id)
    failed = [c for c in chunks if c.status == "failed"]
    assert failed and stream.chunks_failed == len(failed)
    assert stream.chunks_done + len(failed) == len(chunks)
    assert len(chunks) - len(failed) in (2, 3)  # cut after 2 chunks; one more may have been read already
    for c in failed:
        assert c.attempts == 4, (c.seq, c.attempts)  # 1 attempt + 3 retries
        assert f"Chunk {c.seq + 1} {c.range.describe()} of public.t failed after 4 attempt(s)" in c.error, c.error
        assert "127.0.0.1" in c.error
    assert proxy.refused >= 3 * len(failed) and proxy.reset_live >= 1
    if load_type == "full":  # the old data stays until the new load is complete
        assert_same(landed(ws, raw), old, "raw table after a partial full load")
    else:  # the landed chunks are in; nothing is twice
        rows = landed(ws, raw)
        assert len(rows) == 20_000 and rows != old

    proxy.restore()
    retry = run_sync(ws, retry_failed=True)
    assert retry.status.value == "success", retry.error
    assert retry.streams[0].rows_written == sum(c.rows_written for c in ledger_of(ws, partial.run_id)
                                                 if c.id in {f.id for f in failed})
    assert all(c.status == "done" for c in ledger_of(ws, partial.run_id))
    assert_same(landed(ws, raw), source_rows(pg_conn), "after retrying the failed chunks")
    if load_type == "delta":
        assert run_sync(ws).rows_written == 0  # the checkpoint is at the end of the retried plan


def test_outage_before_any_chunk_fails_the_run_and_retry_completes(ws, pg_conn, pg_database, proxy):
    create_source(pg_conn)
    fill_source(pg_conn, 6000)
    record = add_connector(ws, pg_database, port=proxy.port, cursor_field="updated_at", chunk_size=2000)

    def cut_when_planned(event):
        if event.message == "planned":
            proxy.cut()

    result = run_sync(ws, on_progress=cut_when_planned)
    assert result.status.value == "failed", result.status
    assert "3 chunk(s) failed" in result.error
    chunks = ledger_of(ws, result.run_id)
    assert [c.status for c in chunks] == ["failed"] * 3 and all(c.attempts == 4 for c in chunks)
    from esg_workbench.workspace import raw_tables

    with ws.read() as conn:
        assert raw_tables.existing_columns(ws, conn, raw_name(record.id)) is None
    proxy.restore()
    retry = run_sync(ws, retry_failed=True)
    assert retry.status.value == "success", retry.error
    assert_same(landed(ws, raw_name(record.id)), source_rows(pg_conn), "after retry")


def test_transient_outage_healing_within_the_retries_ends_success(ws, pg_conn, pg_database, proxy):
    create_source(pg_conn)
    fill_source(pg_conn, 16_000)
    record = add_connector(ws, pg_database, port=proxy.port, cursor_field="updated_at", chunk_size=2000)
    timers: list[threading.Timer] = []

    def blip(event):
        if event.chunks_done == 3 and not timers:
            proxy.cut()
            timers.append(threading.Timer(0.1, proxy.restore))
            timers[0].start()

    # the outage lasts ~0.1 s; the retries span 1.2 s, so a busy machine still heals in time
    result = run_sync(ws, on_progress=blip, retry_delays=(0.1, 0.3, 0.8))
    timers[0].join()
    assert result.status.value == "success", result.error
    chunks = ledger_of(ws, result.run_id)
    assert all(c.status == "done" for c in chunks)
    assert max(c.attempts for c in chunks) > 1  # the outage did hit a read
    assert max(c.attempts for c in chunks) <= 4
    assert proxy.reset_live >= 1
    assert_same(landed(ws, raw_name(record.id)), source_rows(pg_conn), "after a healed outage")


# --- 5. parallel syncs into one workspace -----------------------------------------------------------

def test_parallel_syncs_into_one_workspace_and_audit_chain(ws, pg_conn, pg_database):
    from esg_workbench.audit import chain
    from esg_workbench.sync.engine import SyncEngine, SyncRequest

    names = ["t1", "t2", "t3"]
    for n, table in enumerate(names):
        create_source(pg_conn, table)
        fill_source(pg_conn, 14_000 + 3_000 * n, table=table)
    load_types = ["full", "delta", "full"]
    records = [add_connector(ws, pg_database, name=f"pg{n}", load_type=lt, cursor_field="updated_at",
                             chunk_size=1500) for n, lt in enumerate(load_types)]
    barrier = threading.Barrier(3)
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            engine = SyncEngine(ws, retry_delays=FAST_RETRIES)
            barrier.wait(10)
            results[n] = engine.run(SyncRequest(f"pg{n}", tables=[names[n]]))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for n, record in enumerate(records):
        assert results[n].status.value == "success", results[n].error
        assert_same(landed(ws, raw_name(record.id, f"public.{names[n]}")), source_rows(pg_conn, names[n]),
                    f"connector pg{n}")

    with ws.read() as conn:
        spans = conn.exec_driver_sql("SELECT started_at, finished_at FROM connector_sync_logs").fetchall()
        chunk_entries = conn.exec_driver_sql(
            "SELECT id, metadata FROM esg_ingestion_audit WHERE action = 'sync.chunk' ORDER BY id").fetchall()
    assert len(spans) == 3 and max(s for s, _ in spans) < min(f for _, f in spans)  # they did overlap
    owners = [json.loads(m)["connector_id"] for _, m in chunk_entries]
    assert sum(1 for a, b in zip(owners, owners[1:]) if a != b) >= 2  # chunks of different syncs interleaved

    result = chain.verify(ws)
    assert result.ok, result.describe()
    assert result.entries > len(chunk_entries)

    victim_id, victim_meta = chunk_entries[len(chunk_entries) // 2]
    meta = json.loads(victim_meta)
    meta["rows"] += 1
    with ws.transaction() as conn:
        conn.execute(sa.text("UPDATE esg_ingestion_audit SET metadata = :m WHERE id = :i"),
                     {"m": json.dumps(meta), "i": victim_id})
    broken = chain.verify(ws)
    assert not broken.ok
    assert broken.first_bad_id == victim_id
    assert "changed" in broken.reason
