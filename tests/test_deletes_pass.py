"""The pass after a delta load that marks rows deleted in the source (sync/deletes.py):
database keys streamed into a key table of the workspace and matched by one anti-join
(real PostgreSQL source; DuckDB and PostgreSQL workspaces), files gone, emptied to 0
bytes or to their header (a local folder and S3 through moto's server), and the ways a
careless or hostile user breaks it: Cancel during the pass, a source failing mid-pass,
an emptied source table, a key column dropped since discovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from esg_workbench.core.errors import SourceError, TransientSourceError
from esg_workbench.core.specs import CancelToken, SyncStatus
from esg_workbench.sync import deletes, operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace, raw_tables, sync_records
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.emulators import moto_s3  # noqa: F401  (a fixture)
from tests.test_files_as_received import S3, Local, by_stream, connect, notes_of, run

REPO = Path(__file__).resolve().parent.parent
FAST = (0.01, 0.02, 0.04)


@pytest.fixture
def ws(tmp_path):
    workspace = open_workspace(str(tmp_path / "ws.duckdb"))
    yield workspace
    workspace.close()


@pytest.fixture
def meters(pg_conn):
    pg_conn.execute("""
        CREATE TABLE meters (id int PRIMARY KEY, kwh int NOT NULL, updated_at timestamptz NOT NULL);
        INSERT INTO meters SELECT g, g, '2024-01-01'::timestamptz + g * interval '1 min' FROM generate_series(1, 1000) g;
    """)
    return pg_conn


def add_pg(ws, database, **options):
    return operations.add_connector(ws, "pg", "postgres", {
        "host": PG_HOST, "port": PG_PORT, "database": database, "username": PG_USER, "schema": "public",
        "load_type": "delta", "cursor_field": "updated_at", **options})


def marked(ws, raw: str) -> list:
    with ws.read() as conn:
        if "_esg_deleted_at" not in raw_tables.existing_columns(ws, conn, raw):
            return []  # never marked: the column comes with the first mark
        return conn.execute(sa.text(f'SELECT id FROM "{raw}" WHERE _esg_deleted_at IS NOT NULL ORDER BY id')).scalars().all()


def tables_of(ws) -> list[str]:
    with ws.read() as conn:
        return sorted(sa.inspect(conn).get_table_names()) if not ws.is_duckdb else sorted(
            r[0] for r in conn.execute(sa.text("SELECT table_name FROM information_schema.tables")))


class Troubled:
    """The real connector, whose keys-only reads arrive in slices of 100 and meet
    `trouble(slice number)` after each (the ordinary reads are left alone)."""

    def __init__(self, inner, trouble):
        self.inner, self.trouble = inner, trouble
        self.key_slices = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self, stream, scope, chunk, cancel=None):
        if tuple(scope.columns) != tuple(scope.key):
            yield from self.inner.read(stream, scope, chunk, cancel)
            return
        for batch in self.inner.read(stream, scope, chunk, cancel):
            for start in range(0, batch.num_rows, 100):
                yield batch.slice(start, 100)
                self.key_slices += 1
                self.trouble(self.key_slices)


def engine(ws, trouble=None, cancel=None):
    from esg_workbench.connectors.registry import create_connector

    made = []

    def factory(spec):
        connector = create_connector(spec)
        if trouble is not None:
            connector = Troubled(connector, trouble)
        made.append(connector)
        return connector
    return SyncEngine(ws, retry_delays=FAST, cancel=cancel, connector_factory=factory), made


def test_keys_are_streamed_in_batches_and_marked_by_one_anti_join(ws, meters, pg_database, monkeypatch):
    monkeypatch.setattr(deletes, "BATCH_KEYS", 150)  # 1,000 keys: 7 writes into the key table
    writes = []
    real_add = deletes.raw_tables.add_source_keys
    monkeypatch.setattr(deletes.raw_tables, "add_source_keys",
                        lambda *a: writes.append(a[-1].num_rows) or real_add(*a))
    add_pg(ws, pg_database)
    sliced, _ = engine(ws, trouble=lambda n: None)  # the keys arrive 100 at a time
    first = sliced.run(SyncRequest("pg", tables=["meters"], detect_deletes=True))
    raw = first.streams[0].raw_table
    assert first.status is SyncStatus.SUCCESS and first.streams[0].rows_deleted == 0
    assert writes == [200, 200, 200, 200, 200]  # a write each time 150 or more have arrived
    meters.execute("DELETE FROM meters WHERE id IN (3, 500, 1000)")
    second, _ = engine(ws, trouble=lambda n: None)
    result = second.run(SyncRequest("pg", tables=["meters"], detect_deletes=True))
    assert result.status is SyncStatus.SUCCESS and result.streams[0].rows_deleted == 3
    assert marked(ws, raw) == [3, 500, 1000]
    assert not [t for t in tables_of(ws) if t.endswith("__keys")]  # the key table went with the pass


def test_on_a_postgresql_workspace_the_keys_go_to_a_temporary_table(meters, pg_database, monkeypatch):
    monkeypatch.setattr(deletes, "BATCH_KEYS", 300)
    workspace = open_workspace(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}")
    try:
        add_pg(workspace, pg_database)
        first = SyncEngine(workspace, retry_delays=FAST).run(SyncRequest("pg", tables=["meters"]))
        meters.execute("DELETE FROM meters WHERE id > 990")
        result = SyncEngine(workspace, retry_delays=FAST).run(SyncRequest("pg", tables=["meters"], detect_deletes=True))
        assert result.status is SyncStatus.SUCCESS, result.error
        assert result.streams[0].rows_deleted == 10
        assert marked(workspace, first.streams[0].raw_table) == list(range(991, 1001))
        with workspace.read() as conn:
            assert sync_records.runs(workspace, conn, limit=1)[0]["items_deleted"] == 10
    finally:
        workspace.close()


def test_cancel_during_the_pass_marks_nothing(ws, meters, pg_database, monkeypatch):
    monkeypatch.setattr(deletes, "BATCH_KEYS", 100)  # some keys are in the key table when Cancel comes
    add_pg(ws, pg_database)
    raw = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", tables=["meters"])).streams[0].raw_table
    meters.execute("DELETE FROM meters WHERE id <= 5")
    cancel = CancelToken()
    sync, made = engine(ws, trouble=lambda n: n == 4 and cancel.cancel(), cancel=cancel)
    result = sync.run(SyncRequest("pg", tables=["meters"], detect_deletes=True))
    assert result.status is SyncStatus.CANCELLED
    assert 4 <= made[0].key_slices < 10  # stopped within the pass, not after it
    assert marked(ws, raw) == []
    assert not [t for t in tables_of(ws) if t.endswith("__keys")]
    again = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", tables=["meters"], detect_deletes=True))
    assert again.streams[0].rows_deleted == 5 and marked(ws, raw) == [1, 2, 3, 4, 5]


def test_a_source_failing_mid_pass_marks_nothing_and_says_why(ws, meters, pg_database):
    add_pg(ws, pg_database)
    raw = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", tables=["meters"])).streams[0].raw_table
    meters.execute("DELETE FROM meters WHERE id <= 5")

    def cut(n):  # a dropped connection after 300 keys, every attempt: retried, then given up
        if n % 3 == 0:
            raise TransientSourceError("Reading public.meters: the connection to the server was lost.")
    sync, made = engine(ws, trouble=cut)
    result = sync.run(SyncRequest("pg", tables=["meters"], detect_deletes=True))
    assert result.status is SyncStatus.SUCCESS, result.error  # the rows landed; the pass is a note
    assert sum(m.key_slices for m in made) == 3 * 4  # 1 + 3 retries
    said = "\n".join(result.streams[0].warnings)
    assert "deleted rows not looked for (nothing was marked)" in said and "connection to the server was lost" in said
    assert result.streams[0].rows_deleted == 0 and marked(ws, raw) == []

    def refuse(n):
        if n == 2:
            raise SourceError("Reading public.meters: permission denied for table meters.")
    sync, made = engine(ws, trouble=refuse)
    result = sync.run(SyncRequest("pg", tables=["meters"], detect_deletes=True))
    assert "permission denied" in "\n".join(result.streams[0].warnings) and marked(ws, raw) == []
    assert sum(m.key_slices for m in made) == 2  # a permanent error is not retried


def test_an_emptied_source_table_is_marked_whole_with_a_warning_and_comes_back(ws, meters, pg_database):
    add_pg(ws, pg_database)
    raw = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", tables=["meters"])).streams[0].raw_table
    meters.execute("CREATE TABLE kept AS SELECT * FROM meters; TRUNCATE meters")
    emptied = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", tables=["meters"], detect_deletes=True))
    assert emptied.streams[0].rows_deleted == 1000
    assert "the source table has no rows now: all 1,000 landed row(s) were marked deleted" in "\n".join(
        emptied.streams[0].warnings)
    meters.execute("INSERT INTO meters SELECT * FROM kept")  # reloaded with the old timestamps
    back = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", tables=["meters"], detect_deletes=True))
    assert back.streams[0].rows_deleted == 0 and marked(ws, raw) == []
    assert "1,000 back in the source unmarked" in "\n".join(back.streams[0].warnings)


def test_a_key_column_dropped_since_discovery_marks_nothing(ws, meters, pg_database):
    add_pg(ws, pg_database)
    operations.discover_connector(ws, "pg")
    raw = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", tables=["meters"])).streams[0].raw_table
    meters.execute("ALTER TABLE meters DROP COLUMN id")
    result = SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", tables=["meters"], detect_deletes=True))
    assert result.streams[0].rows_deleted == 0 and marked(ws, raw) == []
    said = (result.error or "") + "\n".join(result.streams[0].warnings)
    assert "has no primary key, so a delta load cannot update rows in place" in said  # the delta says why


# --- files -------------------------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    if request.param == "local":
        root = tmp_path / "exports"
        root.mkdir()
        return Local(root)
    return S3(request.getfixturevalue("moto_s3"))


def file_marks(ws, raw: str) -> list[tuple]:
    with ws.read() as conn:
        columns = raw_tables.existing_columns(ws, conn, raw)
        mark = "_esg_deleted_at IS NOT NULL" if "_esg_deleted_at" in columns else "false"
        return [tuple(r) for r in conn.execute(sa.text(f'SELECT site, {mark} FROM "{raw}" ORDER BY site'))]


def test_files_emptied_or_deleted_have_their_rows_marked_in_a_delta(ws, place):
    place.put("energy/a.csv", b"site,kwh\nA1,1\nA2,2\n")
    place.put("energy/b.csv", b"site,kwh\nB1,1\nB2,2\nB3,3\n")
    place.put("energy/c.csv", b"site,kwh\nC1,1\n")
    place.put("energy/d.csv", b"site,kwh\nD1,1\n")
    name = connect(ws, place, load_type="delta")
    operations.discover_connector(ws, name, engine=engine_for(ws, place))
    first = run(ws, place, name)
    raw = by_stream(first)["energy"].raw_table

    place.tick()
    place.put("energy/a.csv", b"")  # emptied to 0 bytes
    place.put("energy/b.csv", b"site,kwh\n")  # emptied down to its header
    place.delete("energy/c.csv")
    second = run(ws, place, name)
    assert second.status is SyncStatus.SUCCESS, second.error
    said = notes_of(second, "energy")
    assert f"1 file emptied to 0 bytes: the rows of {place.path('energy/a.csv')} (2 rows) were marked deleted" in said
    assert f"1 file emptied down to its header: the rows of {place.path('energy/b.csv')} (3 rows) were marked" in said
    assert f"1 file deleted from the source: the rows of {place.path('energy/c.csv')} (1 row) were marked" in said
    assert by_stream(second)["energy"].rows_deleted == 6
    assert file_marks(ws, raw) == [("A1", True), ("A2", True), ("B1", True), ("B2", True), ("B3", True),
                                   ("C1", True), ("D1", False)]
    with ws.read() as conn:  # History: the run's count and its notes
        logged = sync_records.runs(ws, conn, limit=1)[0]
    assert logged["items_deleted"] == 6 and "emptied to 0 bytes" in json.dumps(logged["details"])

    quiet = run(ws, place, name)  # nothing changed: nothing said twice, nothing counted twice
    assert by_stream(quiet)["energy"].rows_deleted == 0 and "marked" not in notes_of(quiet, "energy")
    assert [m for _, m in file_marks(ws, raw)] == [True] * 6 + [False]  # b.csv's old rows stay marked

    place.tick()
    place.put("energy/a.csv", b"site,kwh\nA9,9\n")  # filled again: its new rows land unmarked
    refilled = run(ws, place, name)
    assert refilled.status is SyncStatus.SUCCESS, refilled.error
    assert ("A9", False) in file_marks(ws, raw) and ("A1", True) not in file_marks(ws, raw)

    full = run(ws, place, name, load_type="full")  # a full load is the source now: marked rows leave
    assert file_marks(ws, raw) == [("A9", False), ("D1", False)]
    assert by_stream(full)["energy"].rows_deleted == 0


def engine_for(ws, place):
    from tests.test_files_as_received import engine as files_engine

    return files_engine(ws, place.secret)


def test_a_file_back_with_its_old_time_is_unmarked_and_the_cli_names_the_emptied_file(tmp_path):
    root = tmp_path / "exports"
    (root / "energy").mkdir(parents=True)
    (root / "energy" / "a.csv").write_bytes(b"site,kwh\nA1,1\n")
    (root / "energy" / "b.csv").write_bytes(b"site,kwh\nB1,1\nB2,2\n")
    ws_path = str(tmp_path / "cli.duckdb")
    env = {**os.environ, "ESG_WORKBENCH_WORKSPACE": ws_path, "ESG_WORKBENCH_RETRY_DELAYS": "0.01,0.02,0.04"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "esg_workbench", *args], capture_output=True, text=True,
                              env=env, timeout=120, cwd=REPO)
    assert cli("connector", "add", "exports", "--type", "files", "--option", f"path={root}",
               "--option", "load_type=delta").returncode == 0
    assert cli("connector", "discover", "exports").returncode == 0
    assert cli("sync", "exports").returncode == 0
    kept = (root / "energy" / "a.csv").read_bytes(), os.stat(root / "energy" / "a.csv")
    (root / "energy" / "a.csv").unlink()
    (root / "energy" / "b.csv").write_bytes(b"")
    emptied = cli("sync", "exports")
    assert emptied.returncode == 0, emptied.stderr
    assert "1 file emptied to 0 bytes: the rows of energy/b.csv (2 rows) were marked deleted" in emptied.stdout
    assert "1 file deleted from the source: the rows of energy/a.csv (1 row) were marked deleted" in emptied.stdout
    assert "3 deleted in the source" in emptied.stdout
    (root / "energy" / "a.csv").write_bytes(kept[0])  # restored from a backup, with its old time
    os.utime(root / "energy" / "a.csv", ns=(kept[1].st_atime_ns, kept[1].st_mtime_ns))
    back = cli("--json", "sync", "exports")
    shown = json.loads(back.stdout)
    assert shown["rows_written"] == 0  # not read again: its rows were only marked
    assert any("1 row(s) of files back in the source unmarked" in w for w in shown["streams"][0]["warnings"])


def test_a_file_overwritten_by_a_broken_one_keeps_its_rows_unmarked(ws, tmp_path):
    place = Local(tmp_path / "drop")
    (tmp_path / "drop").mkdir()
    place.put("trips/a.jsonl", b'{"site": "A", "km": 1}\n{"site": "B", "km": 2}\n')
    place.put("trips/b.jsonl", b'{"site": "C", "km": 3}\n')
    name = connect(ws, place, load_type="delta")
    operations.discover_connector(ws, name, engine=engine_for(ws, place))
    raw = by_stream(run(ws, place, name))["trips"].raw_table
    place.tick()
    place.put("trips/a.jsonl", b'{"site": "A", "km": 1}\nthis is not JSON\n')  # a careless edit
    place.delete("trips/b.jsonl")
    broken = run(ws, place, name)
    assert broken.status is SyncStatus.FAILED and by_stream(broken)["trips"].chunks_failed == 1  # its only chunk
    # the broken file's earlier rows stay as they were (the file is there); the deleted one's are marked
    assert file_marks(ws, raw) == [("A", False), ("B", False), ("C", True)]
    place.tick()
    place.put("trips/a.jsonl", b'{"site": "A", "km": 1}\n')  # fixed, with a row less
    os.utime(tmp_path / "drop" / "trips" / "a.jsonl", (2e9, 2e9))  # later than the broken version
    fixed = run(ws, place, name)
    assert fixed.status is SyncStatus.SUCCESS, fixed.error
    assert file_marks(ws, raw) == [("A", False), ("C", True)]



def test_on_a_secured_shared_workspace_an_analyst_marks_rows_and_files(tmp_path):
    """An analyst of an organization creates no tables: the keys go to a temporary table of
    the pass's session; the marks land under row-level security."""
    from esg_workbench.workspace import organizations
    from tests.pg_shared import shared_database

    with shared_database() as shared:
        alice = shared.role("alice")
        organizations.init_postgres(shared.url(alice), shared.admin_url, organization="org-a", organization_name="A")
        with shared.admin() as conn:
            conn.execute("CREATE SCHEMA src; CREATE TABLE src.meters (id int PRIMARY KEY, updated_at timestamptz NOT NULL);"
                         "INSERT INTO src.meters SELECT g, '2024-01-01'::timestamptz + g * interval '1 min' "
                         "FROM generate_series(1, 300) g")
        place = Local(tmp_path / "drop")
        (tmp_path / "drop").mkdir()
        place.put("energy/a.csv", b"site,kwh\nA1,1\nA2,2\n")
        place.put("energy/b.csv", b"site,kwh\nB1,1\n")
        workspace = open_workspace(shared.url(alice))
        try:
            operations.add_connector(workspace, "pg", "postgres", {
                "host": PG_HOST, "port": PG_PORT, "database": shared.database, "username": PG_USER, "schema": "src",
                "load_type": "delta", "cursor_field": "updated_at"})
            raw = SyncEngine(workspace, retry_delays=FAST).run(SyncRequest("pg")).streams[0].raw_table
            files = connect(workspace, place, load_type="delta")
            files_raw = by_stream(run(workspace, place, files))["energy"].raw_table
            with shared.admin() as conn:
                conn.execute("DELETE FROM src.meters WHERE id > 297")
            place.put("energy/a.csv", b"")
            marked_db = SyncEngine(workspace, retry_delays=FAST).run(SyncRequest("pg", detect_deletes=True))
            assert marked_db.status is SyncStatus.SUCCESS, marked_db.error
            assert marked_db.streams[0].rows_deleted == 3 and marked(workspace, raw) == [298, 299, 300]
            emptied = run(workspace, place, files)
            assert emptied.status is SyncStatus.SUCCESS, emptied.error
            assert by_stream(emptied)["energy"].rows_deleted == 2
            assert file_marks(workspace, files_raw) == [("A1", True), ("A2", True), ("B1", False)]
        finally:
            workspace.close()
