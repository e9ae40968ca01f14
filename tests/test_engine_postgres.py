"""The sync engine against a real PostgreSQL source: loads, drift, bad input."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from esg_workbench.core.errors import EsgError
from esg_workbench.core.specs import SyncStatus
from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace, sync_records

FAST = (0.01, 0.02, 0.04)


@pytest.fixture
def ws(workspace_url):
    workspace = open_workspace(workspace_url)
    yield workspace
    workspace.close()


def add_pg(ws, pg_spec, name="pg", **options):
    return operations.add_connector(ws, name, "postgres", {**pg_spec.options, **options})


def sync(ws, name="pg", **kw):
    return SyncEngine(ws, retry_delays=FAST).run(SyncRequest(connector=name, **kw))


def raw_rows(ws, raw_table, columns):
    prep = ws.engine.dialect.identifier_preparer
    cols = ", ".join(prep.quote(c) for c in columns)
    with ws.read() as conn:
        return conn.execute(sa.text(f"SELECT {cols} FROM {prep.quote(raw_table)} ORDER BY 1")).all()


def source_rows(pg_conn, table_sql, columns):
    cols = ", ".join(f'"{c}"' for c in columns)
    return [tuple(r) for r in pg_conn.execute(f"SELECT {cols} FROM {table_sql} ORDER BY 1").fetchall()]


def test_full_then_delta_lands_exactly_the_source(ws, pg_conn, pg_spec):
    pg_conn.execute("""
        CREATE TABLE readings (id bigint PRIMARY KEY, site text, kwh numeric(12,3),
                               updated_at timestamptz NOT NULL);
        INSERT INTO readings SELECT g, 'S' || (g % 7), g * 1.125, '2024-01-01'::timestamptz + g * interval '1 minute'
        FROM generate_series(1, 12000) g;
    """)
    add_pg(ws, pg_spec, cursor_field="updated_at", chunk_size=2500)
    first = sync(ws)
    assert first.status is SyncStatus.SUCCESS
    stream = first.streams[0]
    assert stream.rows_written == 12000 and stream.chunks_planned == 5
    cols = ["id", "site", "kwh", "updated_at"]
    assert raw_rows(ws, stream.raw_table, cols) == source_rows(pg_conn, "readings", cols)

    pg_conn.execute("UPDATE readings SET kwh = kwh + 1, updated_at = '2030-01-01' WHERE id % 1000 = 1")
    pg_conn.execute("INSERT INTO readings VALUES (20000, 'NEW', 1, '2030-01-01')")
    delta = sync(ws, load_type="delta")
    assert delta.status is SyncStatus.SUCCESS
    # 12 changed rows, 1 new, and the tie group at the full load's upper bound (id 12000) re-read
    assert delta.streams[0].rows_written == 12 + 1 + 1
    assert raw_rows(ws, stream.raw_table, cols) == source_rows(pg_conn, "readings", cols)

    nothing = sync(ws, load_type="delta")
    assert nothing.status is SyncStatus.SUCCESS
    assert nothing.streams[0].rows_written == 0


def test_lineage_columns_name_the_run_and_chunk(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, g::text FROM generate_series(1, 50) g")
    add_pg(ws, pg_spec, chunk_size=20)
    result = sync(ws)
    with ws.read() as conn:
        ledger = sync_records.ledger(conn, result.run_id)
        rows = conn.execute(sa.text(
            f"SELECT _esg_sync_id, _esg_chunk_id, count(*) FROM {result.streams[0].raw_table} GROUP BY 1, 2 ORDER BY 2")).all()
    assert [(r[0], r[1], r[2]) for r in rows] == [(result.run_id, c.id, c.rows_written) for c in ledger]
    assert [c.rows_written for c in ledger] == [20, 20, 10]  # [start,21) [21,41) [41,end)


def test_hostile_identifiers_land(ws, pg_conn, pg_spec):
    pg_conn.execute('''
        CREATE SCHEMA "odd ""schema""";
        CREATE TABLE "odd ""schema"""."we""ird tab ünï" ("select" int PRIMARY KEY, "my col" text,
            "ünïcödé" numeric(5,2), "Order" timestamptz, "drop table x;--" text);
        INSERT INTO "odd ""schema"""."we""ird tab ünï"
        SELECT g, 'O''Brien\\' || g, g / 3.0, '2024-02-01'::timestamptz + g * interval '1 hour', 'x'
        FROM generate_series(1, 300) g;
    ''')
    add_pg(ws, pg_spec, schema='odd "schema"', chunk_size=64, chunk_strategy="time",
           cursor_field="Order", window="day")
    result = sync(ws)
    assert result.status is SyncStatus.SUCCESS, result.error
    cols = ["select", "my col", "ünïcödé", "Order", "drop table x;--"]
    assert raw_rows(ws, result.streams[0].raw_table, cols) == source_rows(
        pg_conn, '"odd ""schema"""."we""ird tab ünï"', cols)
    assert result.streams[0].chunks_planned >= 13  # 300 hours over 13 days, each day one chunk


def test_text_keys_with_quotes_percent_and_backslashes(ws, pg_conn, pg_spec):
    pg_conn.execute("""CREATE TABLE codes (code text PRIMARY KEY, n int);
        INSERT INTO codes SELECT format('%s%% O''Brien\\ "%s" ü', g, g), g FROM generate_series(1, 97) g""")
    add_pg(ws, pg_spec, chunk_size=10)
    result = sync(ws)
    assert result.status is SyncStatus.SUCCESS, result.error
    assert result.streams[0].chunks_planned == 10  # text keys: quantile bounds made of these values
    assert raw_rows(ws, result.streams[0].raw_table, ["code", "n"]) == source_rows(pg_conn, "codes", ["code", "n"])


def test_percent_signs_in_chunk_bounds_are_taken_literally(pg_conn, pg_spec):
    from esg_workbench.connectors.postgres import PostgresConnector
    from esg_workbench.core.specs import ChunkRange, ReadScope, StreamRef

    pg_conn.execute("""CREATE TABLE k (code text COLLATE "C" PRIMARY KEY);
        INSERT INTO k VALUES ('5%'), ('5%%'), ('5%a'), ('6%')""")
    connector = PostgresConnector(pg_spec)
    scope = ReadScope(columns=("code",), key=("code",))
    batches = connector.read(StreamRef("public", "k"), scope, ChunkRange(("5%",), ("5%a",)))
    assert [v for b in batches for v in b.column(0).to_pylist()] == ["5%", "5%%"]
    connector.close()


def test_column_added_and_retyped_is_reported_and_landed(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TABLE t (id int PRIMARY KEY, qty int, updated_at timestamp NOT NULL);"
                    "INSERT INTO t SELECT g, g, '2024-01-01'::timestamp + g * interval '1 s' FROM generate_series(1, 100) g")
    add_pg(ws, pg_spec, cursor_field="updated_at")
    operations.discover_connector(ws, "pg")
    assert sync(ws, load_type="delta").status is SyncStatus.SUCCESS
    pg_conn.execute("ALTER TABLE t ADD COLUMN supplier text; ALTER TABLE t ALTER COLUMN qty TYPE numeric(10,2);"
                    "UPDATE t SET supplier = 'ACME', qty = qty + 0.5, updated_at = '2025-01-01' WHERE id <= 10")
    result = sync(ws, load_type="delta")
    assert result.status is SyncStatus.SUCCESS, result.error
    drift = result.streams[0].drift
    assert "added supplier" in drift and "retyped qty (INTEGER -> NUMERIC(10, 2))" in drift
    rows = raw_rows(ws, result.streams[0].raw_table, ["id", "qty", "supplier"])
    assert [(r[0], str(r[1]), r[2]) for r in rows[9:11]] == [(10, "10.50", "ACME"), (11, "11.00", None)]
    # a full load reloads the table with its new shape
    full = sync(ws, load_type="full")
    assert full.status is SyncStatus.SUCCESS
    rows = raw_rows(ws, full.streams[0].raw_table, ["id", "qty", "supplier"])
    assert [str(r[1]) for r in rows[:2]] == ["1.50", "2.50"]


def test_table_dropped_after_discovery_fails_clearly_and_keeps_data(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TABLE keep (id int PRIMARY KEY); INSERT INTO keep VALUES (1), (2);"
                    "CREATE TABLE gone (id int PRIMARY KEY); INSERT INTO gone VALUES (1)")
    add_pg(ws, pg_spec)
    operations.discover_connector(ws, "pg")
    first = sync(ws)
    assert first.status is SyncStatus.SUCCESS
    pg_conn.execute("DROP TABLE gone")
    second = sync(ws)
    assert second.status is SyncStatus.PARTIAL_SUCCESS
    by_name = {s.stream: s for s in second.streams}
    assert "public.gone" in by_name and "does not exist" in by_name["public.gone"].error
    assert by_name["public.keep"].rows_written == 2
    # what was landed before is still there
    assert raw_rows(ws, first.streams[[s.stream for s in first.streams].index("public.gone")].raw_table, ["id"]) == [(1,)]


def test_bad_connection_settings_say_what_is_wrong(ws, pg_spec):
    from tests.conftest import free_port

    cases = {
        "unknown-db": ({"database": "no_such_db_xyz"}, "DatabaseMissing", "does not exist"),
        "closed-port": ({"port": free_port()}, "SourceUnreachable", "cannot be reached"),
        "bad-host": ({"host": "no-such-host.invalid"}, "SourceUnreachable", ""),
    }
    for name, (override, kind, words) in cases.items():
        add_pg(ws, pg_spec, name=name, **override)
        with pytest.raises(EsgError) as err:
            operations.validate_connector(ws, name)
        assert type(err.value).__name__ == kind, err.value.describe()
        assert words in err.value.message and err.value.hint
        assert operations.get_connector(ws, name).status == "failing"


def test_delta_without_primary_key_is_refused_plainly(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TABLE nokey (v int, updated_at timestamp); INSERT INTO nokey VALUES (1, now())")
    add_pg(ws, pg_spec, cursor_field="updated_at")
    result = sync(ws, load_type="delta")
    assert result.status is SyncStatus.FAILED
    assert "no primary key" in result.streams[0].error
    full = sync(ws, load_type="full")  # a full load needs no key
    assert full.status is SyncStatus.SUCCESS and full.rows_written == 1


def test_empty_table_and_nothing_to_resume(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TABLE empty (id int PRIMARY KEY)")
    add_pg(ws, pg_spec)
    result = sync(ws)
    assert result.status is SyncStatus.SUCCESS and result.rows_written == 0
    from esg_workbench.core.errors import NothingToResume

    with ws.read() as conn:
        runs_before = sync_records.runs(ws, conn)
    with pytest.raises(NothingToResume, match="Nothing to resume for pg"):
        sync(ws, resume=True)
    with ws.read() as conn:  # no run recorded: the last success stays the first sync
        assert sync_records.runs(ws, conn) == runs_before


def test_integer_version_cursor_pages_by_key_not_by_days(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TABLE v (id int PRIMARY KEY, version bigint NOT NULL, note text);"
                    "INSERT INTO v SELECT g, g % 50, 'x' FROM generate_series(1, 1000) g")
    add_pg(ws, pg_spec, cursor_field="version", chunk_size=300, load_type="delta")
    first = sync(ws)
    assert first.status is SyncStatus.SUCCESS, first.error
    assert first.streams[0].rows_written == 1000 and first.streams[0].chunks_planned == 4
    pg_conn.execute("UPDATE v SET version = 100, note = 'changed' WHERE id <= 5")
    second = sync(ws)
    assert second.status is SyncStatus.SUCCESS and second.streams[0].rows_written == 5
    assert raw_rows(ws, first.streams[0].raw_table, ["id", "version", "note"]) == source_rows(
        pg_conn, "v", ["id", "version", "note"])
    with ws.read() as conn:
        resumed_from = sync_records.runs(ws, conn, limit=1)[0]["plan_sync_id"]
    assert resumed_from is None  # a fresh run plans its own chunks


def test_a_narrowed_source_column_never_rounds_landed_values(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TABLE n (id int PRIMARY KEY, qty numeric(10,2), updated_at timestamp NOT NULL);"
                    "INSERT INTO n VALUES (1, 1.25, '2024-01-01'), (2, 2.75, '2024-01-02')")
    add_pg(ws, pg_spec, cursor_field="updated_at", load_type="delta")
    table = sync(ws).streams[0].raw_table
    pg_conn.execute("ALTER TABLE n ALTER COLUMN qty TYPE integer; INSERT INTO n VALUES (3, 7, '2024-02-01')")
    result = sync(ws)
    assert result.status is SyncStatus.SUCCESS, result.error
    assert "retyped qty" in result.streams[0].drift
    assert [(r[0], str(r[1])) for r in raw_rows(ws, table, ["id", "qty"])] == [(1, "1.25"), (2, "2.75"), (3, "7.00")]


def test_cursor_that_is_the_key_itself_checkpoints_exactly(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TABLE log (id bigint PRIMARY KEY, msg text); INSERT INTO log SELECT g, 'm' FROM generate_series(1, 500) g")
    add_pg(ws, pg_spec, cursor_field="id", load_type="delta", chunk_size=200)
    assert sync(ws).rows_written == 500
    assert sync(ws).rows_written == 0  # nothing new: the last row is not re-read
    pg_conn.execute("INSERT INTO log VALUES (501, 'new')")
    assert sync(ws).rows_written == 1


def test_uuid_keys_are_planned_checkpointed_and_landed(ws, pg_conn, pg_spec):
    """PostgreSQL has no min() or max() of uuid: measuring the key must not need them."""
    pg_conn.execute("""CREATE TABLE things (id uuid PRIMARY KEY, n int);
        INSERT INTO things SELECT md5(g::text)::uuid, g FROM generate_series(1, 97) g""")
    add_pg(ws, pg_spec, chunk_size=10)
    result = sync(ws)
    assert result.status is SyncStatus.SUCCESS, result.error
    assert result.streams[0].chunks_planned == 10 and result.streams[0].rows_written == 97
    # uuid lands as UUID (connectors/pg_types.py)
    landed = {k: n for k, n in raw_rows(ws, result.streams[0].raw_table, ["id", "n"])}
    assert all(isinstance(k, uuid.UUID) for k in landed)
    assert landed == dict(source_rows(pg_conn, "things", ["id", "n"]))


def test_bytea_keys_with_quote_and_backslash_bytes_are_chunk_bounds(ws, pg_conn, pg_spec):
    """Bytes bounds are rendered as decode('..', 'hex'): as text literals, the backslash
    (0x5c) and quote (0x27) bytes in these keys would break or shift the bounds."""
    pg_conn.execute("""CREATE TABLE blobs (k bytea PRIMARY KEY, n int);
        INSERT INTO blobs SELECT decode(lpad(to_hex(g * 2654435761 % 4294967296), 8, '0') || '5c27', 'hex'), g
        FROM generate_series(1, 97) g""")
    add_pg(ws, pg_spec, chunk_size=10)
    result = sync(ws)
    assert result.status is SyncStatus.SUCCESS, result.error
    assert result.streams[0].chunks_planned == 10
    assert [(bytes(k), n) for k, n in raw_rows(ws, result.streams[0].raw_table, ["k", "n"])] == \
        [(bytes(k), n) for k, n in source_rows(pg_conn, "blobs", ["k", "n"])]
