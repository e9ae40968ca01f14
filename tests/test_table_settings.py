"""Per-table settings (cursor field, primary key, load type, chunking) in the engine and
the CLI; the cursor columns discovery proposes; rows deleted in the source found by a
keys-only pass, marked with _esg_deleted_at, counted, and left out of mapping. Real
PostgreSQL source (and the demo's SQLite source for mapping), DuckDB workspace."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError
from esg_workbench.core.specs import ColumnInfo, StreamRef, SyncStatus, TableInfo
from esg_workbench.sync import operations, table_settings
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace, sync_records
from tests.conftest import PG_HOST, PG_PORT, PG_USER

REPO = Path(__file__).resolve().parent.parent
FAST = (0.01, 0.02, 0.04)


@pytest.fixture
def ws(tmp_path):
    workspace = open_workspace(str(tmp_path / "ws.duckdb"))
    yield workspace
    workspace.close()


@pytest.fixture
def source(pg_conn):
    """Three tables, each with its own change column; `logbook` declares no key."""
    pg_conn.execute("""
        CREATE TABLE meters (id int PRIMARY KEY, kwh int NOT NULL, created_at timestamptz NOT NULL,
                             updated_at timestamptz NOT NULL);
        INSERT INTO meters SELECT g, g, '2024-01-01', '2024-01-01'::timestamptz + g * interval '1 min'
        FROM generate_series(1, 900) g;
        CREATE TABLE trips (trip_no int PRIMARY KEY, km int NOT NULL, modified timestamp NOT NULL);
        INSERT INTO trips SELECT g, g * 2, '2024-02-01'::timestamp + g * interval '1 h' FROM generate_series(1, 300) g;
        CREATE TABLE logbook (site text NOT NULL, day date NOT NULL, litres int, last_changed timestamptz NOT NULL);
        INSERT INTO logbook SELECT 'S' || (g % 3), '2024-01-01'::date + g / 3, g, '2024-03-01'::timestamptz + g * interval '1 s'
        FROM generate_series(0, 599) g;
    """)
    return pg_conn


def add_pg(ws, database, **options):
    return operations.add_connector(ws, "pg", "postgres", {
        "host": PG_HOST, "port": PG_PORT, "database": database, "username": PG_USER, "schema": "public", **options})


def sync(ws, **kw):
    return SyncEngine(ws, retry_delays=FAST).run(SyncRequest("pg", **kw))


def raw_count(ws, raw: str, where: str = "") -> int:
    with ws.read() as conn:
        return conn.execute(sa.text(f'SELECT count(*) FROM "{raw}" {where}')).scalar()


def test_each_table_loads_with_its_own_cursor_key_and_chunks(ws, source, pg_database):
    # the connector is delta but names no cursor: each table brings its own
    add_pg(ws, pg_database, load_type="delta", tables={})
    operations.discover_connector(ws, "pg")
    table_settings.set_table_settings(ws, "pg", "meters", {"cursor_field": "updated_at", "chunk_size": 200})
    table_settings.set_table_settings(ws, "pg", "trips", {"cursor_field": "modified"})
    table_settings.set_table_settings(ws, "pg", "logbook", {"cursor_field": "last_changed", "primary_key": "site,day",
                                                           "chunk_size": 250})
    first = sync(ws)
    assert first.status is SyncStatus.SUCCESS, first.error
    by_stream = {s.stream: s for s in first.streams}
    assert {k: v.rows_written for k, v in by_stream.items()} == {"public.logbook": 600, "public.meters": 900,
                                                                  "public.trips": 300}
    assert by_stream["public.meters"].chunks_planned >= 5  # 900 rows in chunks of 200
    assert by_stream["public.logbook"].chunks_planned >= 3

    source.execute("UPDATE meters SET kwh = -1, updated_at = '2025-01-01' WHERE id <= 3;"
                   "UPDATE trips SET km = -1, modified = '2025-01-01' WHERE trip_no <= 2;"
                   "UPDATE logbook SET litres = -1, last_changed = '2025-01-01' WHERE day = '2024-01-01'")
    second = sync(ws)
    assert second.status is SyncStatus.SUCCESS, second.error
    assert {s.stream: s.rows_written for s in second.streams} == {"public.logbook": 3, "public.meters": 3,
                                                                   "public.trips": 2}
    logbook = {s.stream: s for s in second.streams}["public.logbook"].raw_table
    with ws.read() as conn:  # upserted by the key set for the table: no duplicate
        assert conn.execute(sa.text(f'SELECT count(*), count(DISTINCT (site, day)), sum(CASE WHEN litres = -1 '
                                    f'THEN 1 ELSE 0 END) FROM "{logbook}"')).one() == (600, 600, 3)


def test_discovery_proposes_cursor_columns_and_bad_settings_are_refused(ws, source, pg_database):
    add_pg(ws, pg_database)
    operations.discover_connector(ws, "pg")
    shown = {t.stream: t for t in table_settings.list_table_settings(ws, "pg")}
    assert shown["public.meters"].cursor_candidates == ["updated_at"]  # not created_at
    assert shown["public.trips"].cursor_candidates == ["modified"]
    assert shown["public.logbook"].cursor_candidates == ["last_changed"]
    assert shown["public.logbook"].declared_key == [] and shown["public.meters"].declared_key == ["id"]

    with pytest.raises(ConfigError, match="has no column 'changed'") as refused:
        table_settings.set_table_settings(ws, "pg", "meters", {"cursor_field": "changed"})
    assert "Columns that fit: updated_at" in refused.value.describe()
    with pytest.raises(ConfigError, match="declares the primary key"):
        table_settings.set_table_settings(ws, "pg", "meters", {"primary_key": "kwh"})
    with pytest.raises(ConfigError, match="Unknown table setting 'colour'"):
        table_settings.set_table_settings(ws, "pg", "meters", {"colour": "red"})
    with pytest.raises(ConfigError, match="chunk_size"):
        table_settings.set_table_settings(ws, "pg", "meters", {"chunk_size": "many"})
    assert not operations.get_connector(ws, "pg").config.get("tables")  # nothing stored

    saved = table_settings.set_table_settings(ws, "pg", "meters", {"cursor_field": "updated_at", "load_type": "delta"})
    assert saved.stream == "public.meters" and saved.own == {"cursor_field": "updated_at", "load_type": "delta"}
    cleared = table_settings.set_table_settings(ws, "pg", "public.meters", {"load_type": None})
    assert cleared.own == {"cursor_field": "updated_at"}


def test_cursor_candidates_of_other_sources():
    info = TableInfo(StreamRef("dbo", "t"), [
        ColumnInfo("id", "int", family="integer"), ColumnInfo("created_at", "datetime2", family="timestamp"),
        ColumnInfo("RowVer", "rowversion", family="binary"), ColumnInfo("LastModified", "datetime2", family="timestamp"),
        ColumnInfo("row_version", "bigint", family="integer"), ColumnInfo("modified", "varchar(20)", family="text"),
        ColumnInfo("date_updated", "date", family="date")])
    assert table_settings.cursor_candidates(info) == ["LastModified", "row_version", "date_updated", "RowVer"]


def cli(ws_path, *args):
    env = {**os.environ, "ESG_WORKBENCH_WORKSPACE": ws_path, "ESG_WORKBENCH_RETRY_DELAYS": "0.01,0.02,0.04"}
    return subprocess.run([sys.executable, "-m", "esg_workbench", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)


def test_cli_sets_shows_and_uses_table_settings(tmp_path, source, pg_database):
    ws_path = str(tmp_path / "cli.duckdb")
    ws = open_workspace(ws_path)
    add_pg(ws, pg_database)
    ws.close()
    assert cli(ws_path, "connector", "discover", "pg", "--sample-rows", "0").returncode == 0
    done = cli(ws_path, "table", "set", "pg", "trips", "--cursor-field", "modified", "--load-type", "delta", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["own"] == {"cursor_field": "modified", "load_type": "delta"}
    bad = cli(ws_path, "table", "set", "pg", "trips", "--cursor-field", "nope")
    assert bad.returncode == 1 and "has no column 'nope'" in bad.stderr and "modified" in bad.stderr
    shown = json.loads(cli(ws_path, "table", "show", "pg", "--json").stdout)
    assert {t["stream"]: t["cursor_candidates"] for t in shown}["public.meters"] == ["updated_at"]
    text = cli(ws_path, "table", "show", "pg", "trips").stdout
    assert "cursor_field=modified, load_type=delta" in text
    synced = cli(ws_path, "sync", "pg", "--table", "trips", "--json")
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["rows_written"] == 300
    again = json.loads(cli(ws_path, "sync", "pg", "--table", "trips", "--json").stdout)
    assert again["rows_written"] == 0  # a delta with its own cursor: nothing new
    assert cli(ws_path, "table", "clear", "pg", "trips").returncode == 0
    assert "connector settings" in cli(ws_path, "table", "show", "pg", "trips").stdout


def test_deletes_are_marked_every_n_syncs_and_on_request(ws, source, pg_database):
    add_pg(ws, pg_database, load_type="delta", cursor_field="updated_at",
           tables={"meters": {"detect_deletes": True, "deletes_every": 2}})
    first = sync(ws, tables=["meters"])  # never checked before: checks now (nothing deleted)
    raw = first.streams[0].raw_table
    assert first.streams[0].rows_deleted == 0 and raw_count(ws, raw, "WHERE _esg_deleted_at IS NULL") == 900

    source.execute("DELETE FROM meters WHERE id IN (5, 6, 7)")
    second = sync(ws, tables=["meters"])  # 1 delta since the check: not due
    assert second.streams[0].rows_deleted == 0 and raw_count(ws, raw, "WHERE _esg_deleted_at IS NOT NULL") == 0
    third = sync(ws, tables=["meters"])  # 2 deltas since: due
    assert third.status is SyncStatus.SUCCESS and third.streams[0].rows_deleted == 3
    assert raw_count(ws, raw) == 900  # kept, marked
    with ws.read() as conn:
        marked = conn.execute(sa.text(f'SELECT id FROM "{raw}" WHERE _esg_deleted_at IS NOT NULL ORDER BY id')).scalars().all()
        assert marked == [5, 6, 7]
        log = sync_records.runs(ws, conn, limit=1)[0]
    assert log["items_deleted"] == 3 and any("3 row(s) deleted in the source" in w for w in third.streams[0].warnings)

    # a row back in the source (restored with its old timestamp, so no delta reads it) loses its mark;
    # a new deletion is found at once when the run asks for it
    source.execute("INSERT INTO meters VALUES (6, 6, '2024-01-01', '2024-01-01'::timestamptz + 6 * interval '1 min');"
                   "DELETE FROM meters WHERE id = 100")
    asked = sync(ws, tables=["meters"], detect_deletes=True)
    assert asked.streams[0].rows_deleted == 1
    with ws.read() as conn:
        marked = conn.execute(sa.text(f'SELECT id FROM "{raw}" WHERE _esg_deleted_at IS NOT NULL ORDER BY id')).scalars().all()
    assert marked == [5, 7, 100]


def test_mapping_leaves_rows_deleted_in_the_source_out(tmp_path):
    from esg_workbench import demo

    ws = open_workspace(str(tmp_path / "w.duckdb"))
    try:
        summary = demo.run_demo(ws)
        assert summary["status"] == "success"

        def staged() -> int:
            with ws.read() as conn:
                return conn.execute(sa.text("SELECT count(DISTINCT source_key) FROM staging_rows WHERE source_table LIKE "
                                            "'%electricity_readings'")).scalar()
        before = staged()
        source = sqlite3.connect(summary["source"])
        ids = [r[0] for r in source.execute("SELECT id FROM electricity_readings ORDER BY id LIMIT 4")]
        source.execute(f"DELETE FROM electricity_readings WHERE id IN ({','.join(map(str, ids))})")
        source.commit()
        source.close()
        result = SyncEngine(ws).run(SyncRequest(demo.DEMO_CONNECTOR, tables=["electricity_readings"],
                                                detect_deletes=True))
        assert result.status is SyncStatus.SUCCESS, result.error
        assert result.streams[0].rows_deleted == 4
        assert result.mapped and "not applied" not in result.mapped[0]
        assert staged() == before - 4  # source rows (each gives staging rows for several fields)
    finally:
        ws.close()
