"""SQLite and DuckDB file connectors against real files made in tmp_path."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from esg_workbench.connectors.local_db import DuckDbConnector, SqliteConnector
from esg_workbench.connectors.registry import create_connector
from esg_workbench.core.errors import (
    Cancelled,
    ConfigError,
    DatabaseMissing,
    SourceError,
    TableMissing,
)
from esg_workbench.core.specs import (
    CancelToken,
    ChunkRange,
    ColumnInfo,
    ConnectorSpec,
    ForeignKey,
    ReadScope,
    StreamRef,
)

KINDS = ("sqlite", "duckdb")
HOSTILE = "we\"ird 'tab' ünï"


def iso(value: dt.datetime) -> str:
    """Python's own sqlite3 style: fraction digits only when there is a fraction."""
    return value.isoformat(sep=" ")


def fixed(value: dt.datetime) -> str:
    """SQLAlchemy's SQLite storage format: always six fraction digits."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def t_sep(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


class Source:
    """A database file of one kind, written with the kind's own driver."""

    def __init__(self, kind: str, path: Path, ts_text=iso):
        self.kind = kind
        self.path = path
        self.ts_text = ts_text

    def _sqlite_value(self, value):
        if isinstance(value, dt.datetime):
            return self.ts_text(value)
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, Decimal):
            return str(value)
        return value

    def run(self, sql: str, rows: list[tuple] | None = None) -> None:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            try:
                with conn:
                    if rows is None:
                        conn.executescript(sql)
                    else:
                        conn.executemany(sql, [tuple(self._sqlite_value(v) for v in row) for row in rows])
            finally:
                conn.close()
        else:
            conn = duckdb.connect(str(self.path))
            try:
                if rows is None:
                    conn.execute(sql)
                else:  # through Arrow: executemany is slow in DuckDB
                    columns = {f"c{i}": pa.array([row[i] for row in rows]) for i in range(len(rows[0]))}
                    conn.register("_rows", pa.table(columns))
                    conn.execute(re.sub(r"VALUES\s*\(.*\)\s*$", "SELECT * FROM _rows", sql))
            finally:
                conn.close()

    def connector(self, **options):
        return create_connector(ConnectorSpec(type=self.kind, name=f"{self.kind} test",
                                              options={"path": str(self.path), **options}))

    @property
    def schema(self):
        return None if self.kind == "sqlite" else "main"

    def ref(self, table: str) -> StreamRef:
        return StreamRef(self.schema, table)


def make_source(kind: str, tmp_path: Path, ts_text=iso, name: str = "source") -> Source:
    suffix = ".sqlite" if kind == "sqlite" else ".duckdb"
    return Source(kind, tmp_path / f"{name}{suffix}", ts_text)


def sites_and_readings(src: Source) -> None:
    src.run("CREATE TABLE sites (id INTEGER PRIMARY KEY, code TEXT NOT NULL, name TEXT)")
    src.run(
        "CREATE TABLE readings (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites (id), "
        "reading_date DATE, kwh NUMERIC(12, 3), share DOUBLE, updated_at TIMESTAMP)"
    )
    src.run("INSERT INTO sites VALUES (?, ?, ?)", [(1, "DE-MUC", "München"), (2, "NL-RTM", None)])
    src.run("INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?)", [
        (10, 1, dt.date(2024, 1, 31), Decimal("1234.500"), 0.5, dt.datetime(2024, 2, 2, 3, 0, 0, 123456)),
        (11, 2, dt.date(2024, 1, 31), Decimal("-12.250"), None, None),
    ])


def read_rows(conn, stream: StreamRef, scope: ReadScope, chunk: ChunkRange = ChunkRange(), cancel=None):
    batches = list(conn.read(stream, scope, chunk, cancel))
    return [row for b in batches for row in b.to_pylist()], batches


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- validate ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_validate_ok(kind, tmp_path):
    src = make_source(kind, tmp_path)
    sites_and_readings(src)
    before = file_digest(src.path)
    conn = src.connector()
    where = "source.sqlite" if kind == "sqlite" else "schema main of source.duckdb"
    assert conn.validate() == f"Connected. 2 tables readable in {where}."
    assert [s.table for s in conn.list_streams()] == ["readings", "sites"]
    conn.close()
    assert file_digest(src.path) == before  # opened read-only: not a byte changed


@pytest.mark.parametrize("kind", KINDS)
def test_validate_missing_file_is_not_created(kind, tmp_path):
    path = tmp_path / "nowhere" / f"missing.{kind}"
    conn = create_connector(ConnectorSpec(type=kind, name="x", options={"path": str(path)}))
    with pytest.raises(DatabaseMissing) as caught:
        conn.validate()
    assert caught.value.message == f"The file {path} does not exist."
    with pytest.raises(DatabaseMissing):
        conn.list_streams()
    assert not path.exists()
    assert not path.parent.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_validate_text_file_is_not_a_database(kind, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("site;kwh\nDE-MUC;1234\n" * 200)
    conn = create_connector(ConnectorSpec(type=kind, name="x", options={"path": str(path)}))
    with pytest.raises(SourceError) as caught:
        conn.validate()
    label = "SQLite" if kind == "sqlite" else "DuckDB"
    step = "Listing tables" if kind == "sqlite" else "Connecting"
    assert caught.value.message == f"{step}: the file {path} is not a {label} database."
    assert type(caught.value) is SourceError
    assert path.read_text() == "site;kwh\nDE-MUC;1234\n" * 200


@pytest.mark.parametrize("kind", KINDS)
def test_validate_folder_and_missing_path_option(kind, tmp_path):
    conn = create_connector(ConnectorSpec(type=kind, name="x", options={"path": str(tmp_path)}))
    with pytest.raises(ConfigError) as caught:
        conn.validate()
    assert caught.value.message == f"{tmp_path} is a folder, not a {'SQLite' if kind == 'sqlite' else 'DuckDB'} database file."
    conn = create_connector(ConnectorSpec(type=kind, name="nameless", options={}))
    with pytest.raises(ConfigError) as caught:
        conn.validate()
    assert "needs a path" in caught.value.message


def test_duckdb_locked_by_another_process(tmp_path):
    src = make_source("duckdb", tmp_path)
    sites_and_readings(src)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time\n"
         f"c = duckdb.connect({str(src.path)!r})\n"
         "print('open', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        conn = src.connector()
        with pytest.raises(SourceError) as caught:
            conn.validate()
        message = caught.value.message
        assert message.startswith(f"Connecting: the DuckDB file {src.path} is locked by ")
        assert message.endswith(f"(process {holder.pid}).")
        assert "Close the program" in caught.value.hint
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert conn.validate() == "Connected. 2 tables readable in schema main of source.duckdb."


def test_duckdb_missing_schema(tmp_path):
    src = make_source("duckdb", tmp_path)
    sites_and_readings(src)
    with pytest.raises(DatabaseMissing) as caught:
        src.connector(schema="erp").validate()
    assert caught.value.message == f"The schema 'erp' does not exist in {src.path}."


# --- discovery ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_describe_keys_types_and_nullability(kind, tmp_path):
    src = make_source(kind, tmp_path)
    sites_and_readings(src)
    conn = src.connector()
    readings, sites = conn.describe()  # sorted by name
    assert sites.stream == src.ref("sites") and readings.stream == src.ref("readings")
    assert sites.primary_key == ["id"] and readings.primary_key == ["id"]
    assert sites.foreign_keys == []
    assert readings.foreign_keys == [ForeignKey(("site_id",), src.schema, "sites", ("id",))]
    assert (sites.row_estimate, readings.row_estimate) == (2, 2)
    if kind == "sqlite":
        types = ["INTEGER", "INTEGER", "DATE", "NUMERIC(12, 3)", "DOUBLE", "TIMESTAMP"]
    else:
        types = ["INTEGER", "INTEGER", "DATE", "DECIMAL(12,3)", "DOUBLE", "TIMESTAMP"]
    assert readings.columns == [
        ColumnInfo("id", types[0], nullable=False, primary_key=True, family="integer"),
        ColumnInfo("site_id", types[1], nullable=False, primary_key=False, family="integer"),
        ColumnInfo("reading_date", types[2], nullable=True, primary_key=False, family="date"),
        ColumnInfo("kwh", types[3], nullable=True, primary_key=False, family="decimal"),
        ColumnInfo("share", types[4], nullable=True, primary_key=False, family="float"),
        ColumnInfo("updated_at", types[5], nullable=True, primary_key=False, family="timestamp"),
    ]
    assert [(c.name, c.nullable, c.family) for c in sites.columns] == [
        ("id", False, "integer"), ("code", False, "text"), ("name", True, "text")]
    # one table only, by reference
    (only,) = conn.describe([src.ref("sites")])
    assert only.stream == src.ref("sites") and only.row_estimate == 2
    assert conn.describe([src.ref("no_such_table")]) == []


def test_sqlite_declared_time_zone_types_are_timestamps(tmp_path):
    src = make_source("sqlite", tmp_path)
    src.run('CREATE TABLE t (id INTEGER PRIMARY KEY, a TIMESTAMPTZ, b "TIMESTAMP WITH TIME ZONE", '
            'c DATETIME, d DATETIME2, e BOOLEAN, f JSON, g)')
    (info,) = src.connector().describe()
    assert [(c.name, c.type, c.family) for c in info.columns] == [
        ("id", "INTEGER", "integer"),
        ("a", "TIMESTAMPTZ", "timestamptz"),
        ("b", "TIMESTAMP WITH TIME ZONE", "timestamptz"),
        ("c", "DATETIME", "timestamp"),
        ("d", "DATETIME2", "timestamp"),
        ("e", "BOOLEAN", "boolean"),
        ("f", "JSON", "json"),
        ("g", "NullType", "other"),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_sample_rows_with_odd_values(kind, tmp_path):
    src = make_source(kind, tmp_path)
    src.run("CREATE TABLE odd (id INTEGER PRIMARY KEY, t TEXT, b BLOB, big NUMERIC(38, 10), ts TIMESTAMP)")
    src.run("INSERT INTO odd VALUES (?, ?, ?, ?, ?)", [
        (1, None, None, None, None),
        (2, "Grüße 🌍 \"quoted\" 'single'\nline", b"\x00\xff\x10", Decimal("12345678901234567890.0123456789"),
         dt.datetime(2024, 2, 29, 23, 59, 59, 999999)),
        (3, "", b"", Decimal("-0.0000000001"), dt.datetime(2024, 3, 1)),
    ])
    conn = src.connector()
    rows = conn.sample(src.ref("odd"), 10)
    empty = {"id": 1, "t": None, "b": None, "big": None, "ts": None}
    text = "Grüße 🌍 \"quoted\" 'single'\nline"
    if kind == "sqlite":
        # SQLite keeps NUMERIC as REAL (15-17 significant digits) and timestamps as text
        assert rows == [
            empty,
            {"id": 2, "t": text, "b": "0x00ff10", "big": 1.2345678901234567e19, "ts": "2024-02-29 23:59:59.999999"},
            {"id": 3, "t": "", "b": "0x", "big": -1e-10, "ts": "2024-03-01 00:00:00"},
        ]
    else:
        assert rows == [
            empty,
            {"id": 2, "t": text, "b": "0x00ff10", "big": "12345678901234567890.0123456789",
             "ts": "2024-02-29T23:59:59.999999"},
            {"id": 3, "t": "", "b": "0x", "big": "-1E-10", "ts": "2024-03-01T00:00:00"},
        ]
    assert conn.sample(src.ref("odd"), 1) == [empty]
    # the same rows as Arrow
    scope = ReadScope(columns=("id", "t", "b", "big", "ts"), key=("id",))
    got, _ = read_rows(conn, src.ref("odd"), scope)
    big = Decimal("12345678901234567168.0000000000") if kind == "sqlite" else Decimal("12345678901234567890.0123456789")
    assert got == [
        {"id": 1, "t": None, "b": None, "big": None, "ts": None},
        {"id": 2, "t": text, "b": b"\x00\xff\x10", "big": big, "ts": dt.datetime(2024, 2, 29, 23, 59, 59, 999999)},
        {"id": 3, "t": "", "b": b"", "big": Decimal("-1E-10"), "ts": dt.datetime(2024, 3, 1)},
    ]


# --- planning and reading ------------------------------------------------------------------


def numbered(src: Source, ids: list[int]) -> None:
    src.run("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT, qty DOUBLE)")
    rows = [(i, f"item {i}", i / 4) for i in ids]
    random.Random(3).shuffle(rows)  # insertion order differs from key order
    src.run("INSERT INTO items VALUES (?, ?, ?)", rows)


@pytest.mark.parametrize("kind", KINDS)
def test_id_boundaries_and_half_open_chunks(kind, tmp_path):
    src = make_source(kind, tmp_path)
    ids = sorted({i * 3 for i in range(1, 60)} | {1, 2, 500, 501, 10_000})
    numbered(src, ids)
    conn = src.connector()
    conn.batch_rows = 4
    stream = src.ref("items")
    scope = ReadScope(columns=("id", "label", "qty"), key=("id",))
    assert conn.count(stream, scope) == len(ids) == 64
    assert conn.key_range(stream, scope) == (1, 10_000, 64)
    bounds = conn.boundaries(stream, scope, 10)
    assert bounds == [(ids[i],) for i in range(10, 64, 10)] == [(27,), (57,), (87,), (117,), (147,), (177,)]
    edges = [None, *bounds, None]
    seen = []
    for lower, upper in zip(edges, edges[1:]):
        chunk = ChunkRange(lower=lower, upper=upper)
        rows, batches = read_rows(conn, stream, scope, chunk)
        chunk_ids = [r["id"] for r in rows]
        assert len(chunk_ids) == conn.count(stream, scope, chunk)
        assert chunk_ids == sorted(chunk_ids)
        if lower is not None:
            assert chunk_ids[0] == lower[0]
        assert all(b.num_rows <= 4 for b in batches)
        seen.extend(chunk_ids)
    assert seen == ids  # no gap, no overlap
    assert rows[-1] == {"id": 10_000, "label": "item 10000", "qty": 2500.0}
    # a sub-range: boundaries within a chunk
    within = ChunkRange(lower=(27,), upper=(87,))
    assert conn.boundaries(stream, scope, 7, within) == [(48,), (69,)]
    # a checkpoint (exclusive) as the start of a scope
    after = ReadScope(columns=("id",), key=("id",), after=(174,))
    assert [r["id"] for r in read_rows(conn, stream, after)[0]] == [177, 500, 501, 10_000]


WINDOW_ROWS = [
    (1, dt.datetime(2024, 2, 29, 10, 0)),  # Thursday, leap day
    (2, dt.datetime(2024, 3, 3, 23, 59, 59, 999999)),  # Sunday, last instant of the ISO week
    (3, dt.datetime(2024, 3, 4, 0, 0)),  # Monday midnight
    (4, dt.datetime(2024, 3, 10, 12, 0)),  # Sunday
    (5, dt.datetime(2024, 3, 11, 0, 0, 0, 1)),  # Monday, just after midnight
    (6, dt.datetime(2024, 3, 31, 23, 59, 59)),  # Sunday, last second of March
    (7, dt.datetime(2024, 4, 1, 0, 0)),  # Monday, first instant of April
    (8, None),
    (9, dt.datetime(2024, 3, 4, 0, 0)),  # tied with 3
]

WINDOWS = {
    "day": [(dt.datetime(2024, 2, 29), [1]), (dt.datetime(2024, 3, 3), [2]), (dt.datetime(2024, 3, 4), [3, 9]),
            (dt.datetime(2024, 3, 10), [4]), (dt.datetime(2024, 3, 11), [5]), (dt.datetime(2024, 3, 31), [6]),
            (dt.datetime(2024, 4, 1), [7])],
    "week": [(dt.datetime(2024, 2, 26), [1, 2]), (dt.datetime(2024, 3, 4), [3, 9, 4]),
             (dt.datetime(2024, 3, 11), [5]), (dt.datetime(2024, 3, 25), [6]), (dt.datetime(2024, 4, 1), [7])],
    "month": [(dt.datetime(2024, 2, 1), [1]), (dt.datetime(2024, 3, 1), [2, 3, 9, 4, 5, 6]),
              (dt.datetime(2024, 4, 1), [7])],
}


def window_end(start: dt.datetime, window: str) -> dt.datetime:
    if window == "day":
        return start + dt.timedelta(days=1)
    if window == "week":
        return start + dt.timedelta(days=7)
    return (start + dt.timedelta(days=32)).replace(day=1)


SOURCES = [("sqlite", iso), ("sqlite", fixed), ("sqlite", t_sep), ("duckdb", None)]
SOURCE_IDS = ["sqlite-iso", "sqlite-fixed6", "sqlite-T", "duckdb"]


@pytest.mark.parametrize("kind,style", SOURCES, ids=SOURCE_IDS)
@pytest.mark.parametrize("window", ["day", "week", "month"])
def test_window_counts_and_window_chunks(kind, style, window, tmp_path):
    src = make_source(kind, tmp_path, style or iso)
    src.run("CREATE TABLE events (id INTEGER PRIMARY KEY, note TEXT, updated_at TIMESTAMP)")
    src.run("INSERT INTO events VALUES (?, ?, ?)", [(i, f"event {i}", ts) for i, ts in WINDOW_ROWS])
    conn = src.connector()
    stream = src.ref("events")
    scope = ReadScope(columns=("id", "updated_at"), key=("updated_at", "id"), cursor_field="updated_at")
    expected = WINDOWS[window]
    assert conn.window_counts(stream, scope, window) == [(start, len(ids)) for start, ids in expected]
    for start, ids in expected:
        chunk = ChunkRange(lower=(start,), upper=(window_end(start, window),))
        rows, _ = read_rows(conn, stream, scope, chunk)
        assert [r["id"] for r in rows] == ids
        assert [r["updated_at"] for r in rows] == [dict(WINDOW_ROWS)[i] for i in ids]
        assert conn.count(stream, scope, chunk) == len(ids)
    # the rows without a cursor value come as their own chunk
    assert conn.null_cursor_count(stream, "updated_at") == 1
    rows, _ = read_rows(conn, stream, scope, ChunkRange(null_cursor=True))
    assert rows == [{"id": 8, "updated_at": None}]
    assert conn.cursor_max(stream, "updated_at") == dt.datetime(2024, 4, 1)
    # a sync fixed at an upper bound: rows up to and including it
    capped = ReadScope(columns=("id",), key=("updated_at", "id"), cursor_field="updated_at",
                       cursor_max=dt.datetime(2024, 3, 4))
    assert [r["id"] for r in read_rows(conn, stream, capped)[0]] == [1, 2, 3, 9]


def test_sqlite_week_start_is_monday_for_every_day_of_a_year(tmp_path):
    src = make_source("sqlite", tmp_path)
    src.run("CREATE TABLE days (id INTEGER PRIMARY KEY, updated_at TIMESTAMP)")
    first = dt.datetime(2023, 12, 25, 13, 30)
    src.run("INSERT INTO days VALUES (?, ?)", [(i, first + dt.timedelta(days=i)) for i in range(372)])
    conn = src.connector()
    scope = ReadScope(columns=("id",), key=("updated_at", "id"), cursor_field="updated_at")
    weeks = conn.window_counts(src.ref("days"), scope, "week")
    assert weeks[0] == (dt.datetime(2023, 12, 25), 7)
    assert weeks[-1] == (dt.datetime(2024, 12, 30), 1)
    assert len(weeks) == 54
    assert all(start.weekday() == 0 and start.time() == dt.time() for start, _ in weeks)
    assert sum(n for _, n in weeks) == 372
    months = conn.window_counts(src.ref("days"), scope, "month")
    assert [n for _, n in months] == [7, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 30]


TIES = [
    dt.datetime(2024, 5, 1, 8, 0, 0, 250000),
    dt.datetime(2024, 5, 1, 8, 0, 0, 250001),
    dt.datetime(2024, 5, 2, 0, 0, 0),
    dt.datetime(2024, 5, 2, 0, 0, 0, 500000),
]


@pytest.mark.parametrize("kind,style", SOURCES, ids=SOURCE_IDS)
def test_tied_cursor_values_paginate_without_gap_or_repeat(kind, style, tmp_path):
    src = make_source(kind, tmp_path, style or iso)
    src.run("CREATE TABLE changes (id INTEGER PRIMARY KEY, val TEXT, updated_at TIMESTAMP)")
    rows = [(i, f"v{i}", TIES[(i * 7) % 4]) for i in range(1, 65)] + [(65, "no cursor", None)]
    random.Random(11).shuffle(rows)
    src.run("INSERT INTO changes VALUES (?, ?, ?)", rows)
    conn = src.connector()
    conn.batch_rows = 3
    stream = src.ref("changes")
    scope = ReadScope(columns=("id", "updated_at", "val"), key=("updated_at", "id"), cursor_field="updated_at")
    keys = sorted((ts, i) for i, _, ts in rows if ts is not None)
    assert conn.count(stream, scope) == 64
    bounds = conn.boundaries(stream, scope, 5)
    assert bounds == [keys[i] for i in range(5, 64, 5)]
    assert all(isinstance(b[0], dt.datetime) for b in bounds)
    edges = [None, *bounds, None]
    seen = []
    for lower, upper in zip(edges, edges[1:]):
        got, _ = read_rows(conn, stream, scope, ChunkRange(lower=lower, upper=upper))
        assert len(got) == (5 if upper is not None else 4)
        seen.extend((r["updated_at"], r["id"]) for r in got)
    assert seen == keys
    # resume in the middle of a group of tied timestamps, with the sync's upper bound
    checkpoint = keys[17]
    assert checkpoint[0] == keys[16][0] == keys[18][0]  # really inside a tie
    delta = ReadScope(columns=("id", "updated_at"), key=("updated_at", "id"), cursor_field="updated_at",
                      after=checkpoint, cursor_max=TIES[2])
    got, _ = read_rows(conn, stream, delta)
    expected = [k for k in keys if k > checkpoint and k[0] <= TIES[2]]
    assert [(r["updated_at"], r["id"]) for r in got] == expected
    assert len(expected) == 48 - 18
    assert conn.count(stream, delta) == len(expected)
    assert conn.key_range(stream, delta) == (keys[18][0], TIES[2], 30)
    assert conn.cursor_max(stream, "updated_at") == TIES[3]


WIDE_COLUMNS = "id INTEGER PRIMARY KEY, i BIGINT, f DOUBLE, n NUMERIC(10, 2), d DATE, ts TIMESTAMP, t TEXT, b BLOB, bo BOOLEAN"


def wide_rows() -> list[tuple]:
    rows = []
    for k in range(1, 1201):
        if k <= 700:
            rows.append((k, None, None, None, None, None, None, None, None))
        else:
            rows.append((k, k * 1_000_000_007, k + 0.25, Decimal(k) + Decimal("0.05"), dt.date(2024, 1, 1) + dt.timedelta(days=k),
                         dt.datetime(2024, 1, 1, 0, 0, 0, k), f"text {k}", bytes([k % 256, 0]), k % 2 == 0))
    return rows


@pytest.mark.parametrize("kind", KINDS)
def test_arrow_schema_is_stable_across_chunks_starting_with_nulls(kind, tmp_path):
    src = make_source(kind, tmp_path)
    src.run(f"CREATE TABLE wide ({WIDE_COLUMNS})")
    src.run("INSERT INTO wide VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", wide_rows())
    conn = src.connector()
    conn.batch_rows = 250
    stream = src.ref("wide")
    scope = ReadScope(columns=("id", "i", "f", "n", "d", "ts", "t", "b", "bo"), key=("id",))
    id_type = pa.int64() if kind == "sqlite" else pa.int32()
    expected_types = [id_type, pa.int64(), pa.float64(), pa.decimal128(10, 2), pa.date32(), pa.timestamp("us"),
                      pa.string(), pa.binary(), pa.bool_()]
    schemas = []
    for chunk in (ChunkRange(upper=(701,)), ChunkRange(lower=(701,)), ChunkRange(lower=(650,), upper=(900,)), ChunkRange()):
        rows, batches = read_rows(conn, stream, scope, chunk)
        for batch in batches:
            assert batch.schema.types == expected_types
            schemas.append(batch.schema)
    assert len(schemas) == 3 + 2 + 1 + 5
    if kind == "sqlite":  # declared NOT NULL (the rowid) and nullable columns are kept apart
        assert [f.nullable for f in schemas[0]] == [False] + [True] * 8
    assert all(s == schemas[0] for s in schemas)
    assert rows[699] == {"id": 700, "i": None, "f": None, "n": None, "d": None, "ts": None, "t": None, "b": None, "bo": None}
    assert rows[700] == {"id": 701, "i": 701_000_004_907, "f": 701.25, "n": Decimal("701.05"),
                         "d": dt.date(2025, 12, 2), "ts": dt.datetime(2024, 1, 1, 0, 0, 0, 701), "t": "text 701",
                         "b": bytes([701 % 256, 0]), "bo": False}
    assert rows[-1]["bo"] is True and rows[-1]["n"] == Decimal("1200.05")


def test_sqlite_timestamps_with_offsets_become_utc(tmp_path):
    src = make_source("sqlite", tmp_path)
    src.run("CREATE TABLE stamped (id INTEGER PRIMARY KEY, at TIMESTAMP, local TIMESTAMP)")
    src.run("INSERT INTO stamped VALUES (?, ?, ?)", [
        (1, "2024-03-10 23:30:00+00:00", "2024-03-10 23:30:00"),
        (2, "2024-03-11 00:15:00+00:00", "2024-03-11 00:15:00"),
        (3, None, None),
        (4, "2024-03-11 00:30:00.500000+00:00", "2024-03-11T00:30:00.5"),
    ])
    conn = src.connector()
    stream = src.ref("stamped")
    scope = ReadScope(columns=("id", "at", "local"), key=("id",))
    rows, batches = read_rows(conn, stream, scope)
    assert batches[0].schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert batches[0].schema.field("local").type == pa.timestamp("us")
    utc = dt.timezone.utc
    assert [r["at"] for r in rows] == [dt.datetime(2024, 3, 10, 23, 30, tzinfo=utc),
                                       dt.datetime(2024, 3, 11, 0, 15, tzinfo=utc), None,
                                       dt.datetime(2024, 3, 11, 0, 30, 0, 500000, tzinfo=utc)]
    assert [r["local"] for r in rows] == [dt.datetime(2024, 3, 10, 23, 30), dt.datetime(2024, 3, 11, 0, 15), None,
                                          dt.datetime(2024, 3, 11, 0, 30, 0, 500000)]
    # planning: aware values out, aware bounds in, compared as the column writes them
    assert conn.cursor_max(stream, "at") == dt.datetime(2024, 3, 11, 0, 30, 0, 500000, tzinfo=utc)
    by_at = ReadScope(columns=("id",), key=("at", "id"), cursor_field="at")
    assert conn.window_counts(stream, by_at, "day") == [(dt.datetime(2024, 3, 10, tzinfo=utc), 1),
                                                        (dt.datetime(2024, 3, 11, tzinfo=utc), 2)]
    assert conn.boundaries(stream, by_at, 2) == [(dt.datetime(2024, 3, 11, 0, 30, 0, 500000, tzinfo=utc), 4)]
    got, _ = read_rows(conn, stream, by_at, ChunkRange(lower=(dt.datetime(2024, 3, 11, tzinfo=utc),)))
    assert [r["id"] for r in got] == [2, 4]
    got, _ = read_rows(conn, stream, by_at, ChunkRange(upper=(dt.datetime(2024, 3, 11, 0, 30, 0, 500000, tzinfo=utc), 4)))
    assert [r["id"] for r in got] == [1, 2]
    # reading converts every value by its own offset
    src.run("CREATE TABLE mixed (id INTEGER PRIMARY KEY, at TIMESTAMP)")
    src.run("INSERT INTO mixed VALUES (?, ?)", [(1, "2024-03-11 01:30:00+02:00"), (2, "2024-03-11T00:30:00Z"),
                                              (3, "2024-03-11 00:45:00-0100")])
    got, _ = read_rows(conn, src.ref("mixed"), ReadScope(columns=("at",), key=("id",)))
    assert [r["at"] for r in got] == [dt.datetime(2024, 3, 10, 23, 30, tzinfo=utc),
                                      dt.datetime(2024, 3, 11, 0, 30, tzinfo=utc),
                                      dt.datetime(2024, 3, 11, 1, 45, tzinfo=utc)]


def test_sqlite_value_of_the_wrong_type_names_the_column(tmp_path):
    src = make_source("sqlite", tmp_path)
    src.run("CREATE TABLE dirty (id INTEGER PRIMARY KEY, qty INTEGER, at TIMESTAMP)")
    src.run("INSERT INTO dirty VALUES (?, ?, ?)", [(1, 5, "2024-01-01 00:00:00"), (2, "n/a", "yesterday")]
            + [(i, i, None) for i in range(3, 301)])
    conn = src.connector()
    stream = src.ref("dirty")
    # in the first batch: the batch comes as text and its cast fails
    with pytest.raises(SourceError) as caught:
        read_rows(conn, stream, ReadScope(columns=("id", "qty"), key=("id",)))
    assert caught.value.message == ("Reading dirty [start .. end): a value of the column 'qty' is not a valid integer "
                                    "(Failed to parse string: 'n/a' as a scalar of type int64).")
    with pytest.raises(SourceError) as caught:
        read_rows(conn, stream, ReadScope(columns=("id", "at"), key=("id",)))
    assert caught.value.message == ("Reading dirty [start .. end): a value of the column 'at' is not a valid timestamp "
                                    "(Failed to parse string: 'yesterday' as a scalar of type timestamp[us]).")
    # in a later batch: the driver refuses the value
    conn.batch_rows = 1
    with pytest.raises(SourceError) as caught:
        read_rows(conn, stream, ReadScope(columns=("id", "qty"), key=("id",)))
    assert caught.value.message == ("Reading dirty [start .. end): the column 'qty' holds a string/binary value among "
                                    "int64 values, which its declared type does not allow.")
    # the clean part of the table still reads
    rows, _ = read_rows(conn, stream, ReadScope(columns=("id", "qty"), key=("id",)), ChunkRange(lower=(3,)))
    assert [r["qty"] for r in rows] == list(range(3, 301))


@pytest.mark.parametrize("kind", KINDS)
def test_reads_see_rows_committed_since_the_last_read(kind, tmp_path):
    src = make_source(kind, tmp_path)
    numbered(src, [1, 2, 3])
    conn = src.connector()
    scope = ReadScope(columns=("id",), key=("id",))
    assert [r["id"] for r in read_rows(conn, src.ref("items"), scope)[0]] == [1, 2, 3]
    if kind == "duckdb":
        conn.close()  # DuckDB lets nobody write while a reader has the file open
    src.run("INSERT INTO items VALUES (?, ?, ?)", [(4, "item 4", 1.0)])  # a writer is not blocked
    src.run("CREATE TABLE later (id INTEGER PRIMARY KEY)")
    assert [r["id"] for r in read_rows(conn, src.ref("items"), scope)[0]] == [1, 2, 3, 4]
    assert conn.cursor_max(src.ref("items"), "id") == 4
    assert [s.table for s in conn.list_streams()] == ["items", "later"]


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_identifiers(kind, tmp_path):
    src = make_source(kind, tmp_path)
    src.run('CREATE TABLE "we""ird \'tab\' ünï" (id INTEGER PRIMARY KEY, "select" TEXT, "a b" DOUBLE, "from" TIMESTAMP)')
    rows = [(i, f"s{i % 3}", i * 1.5, dt.datetime(2024, 1, 1, i)) for i in range(1, 11)]
    src.run('INSERT INTO "we""ird \'tab\' ünï" VALUES (?, ?, ?, ?)', rows)
    conn = src.connector()
    stream = src.ref(HOSTILE)
    assert stream in conn.list_streams()
    (info,) = conn.describe([stream])
    assert [c.name for c in info.columns] == ["id", "select", "a b", "from"]
    assert conn.sample(stream, 1)[0]["a b"] == 1.5
    scope = ReadScope(columns=("id", "select", "a b", "from"), key=("select", "id"))
    bounds = conn.boundaries(stream, scope, 4)
    # key order: (s0, 3) (s0, 6) (s0, 9) (s1, 1) (s1, 4) ... (s2, 2) (s2, 5) (s2, 8)
    assert bounds == [("s1", 4), ("s2", 5)]
    edges = [None, *bounds, None]
    seen = []
    for lower, upper in zip(edges, edges[1:]):
        got, _ = read_rows(conn, stream, scope, ChunkRange(lower=lower, upper=upper))
        seen.extend(got)
    assert [(r["select"], r["id"]) for r in seen] == sorted((f"s{i % 3}", i) for i in range(1, 11))
    assert seen[0] == {"id": 3, "select": "s0", "a b": 4.5, "from": dt.datetime(2024, 1, 1, 3)}
    by_time = ReadScope(columns=("id",), key=("from", "id"), cursor_field="from")
    assert conn.window_counts(stream, by_time, "day") == [(dt.datetime(2024, 1, 1), 10)]


@pytest.mark.parametrize("kind", KINDS)
def test_table_dropped_after_describe(kind, tmp_path):
    src = make_source(kind, tmp_path)
    sites_and_readings(src)
    conn = src.connector()
    conn.describe()
    src.run("DROP TABLE readings")
    with pytest.raises(TableMissing) as caught:
        read_rows(conn, src.ref("readings"), ReadScope(columns=("id", "kwh"), key=("id",)))
    assert caught.value.message == f"Reading {src.ref('readings').qualified} [start .. end): the table no longer exists in {src.path}."
    assert [s.table for s in conn.list_streams()] == ["sites"]


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_stops_a_read_between_batches(kind, tmp_path):
    src = make_source(kind, tmp_path)
    numbered(src, list(range(1, 1001)))
    conn = src.connector()
    conn.batch_rows = 100
    token = CancelToken()
    batches = []
    reader = conn.read(src.ref("items"), ReadScope(columns=("id",), key=("id",)), ChunkRange(), token)
    with pytest.raises(Cancelled):
        for batch in reader:
            batches.append(batch)
            token.cancel()
    assert len(batches) == 1
    assert batches[0].column("id").to_pylist() == list(range(1, 101))
    # the connector is still usable afterwards
    rows, _ = read_rows(conn, src.ref("items"), ReadScope(columns=("id",), key=("id",)), ChunkRange(lower=(990,)))
    assert [r["id"] for r in rows] == list(range(990, 1001))


def test_sqlite_file_is_opened_read_only(tmp_path):
    src = make_source("sqlite", tmp_path)
    sites_and_readings(src)
    conn = src.connector()
    with conn.engine.connect() as raw:
        with pytest.raises(Exception) as caught:
            raw.exec_driver_sql("INSERT INTO sites VALUES (3, 'X', 'y')")
    assert "readonly" in str(caught.value).lower()


def test_registry_gives_the_file_connectors():
    assert isinstance(create_connector(ConnectorSpec("sqlite", "a", {"path": "x"})), SqliteConnector)
    duck = create_connector(ConnectorSpec("duckdb", "b", {"path": "x"}))
    assert isinstance(duck, DuckDbConnector)
    assert duck.schema == "main"
    assert create_connector(ConnectorSpec("duckdb", "b", {"path": "x", "schema": "erp"})).schema == "erp"
    assert create_connector(ConnectorSpec("sqlite", "a", {"path": "x"})).schema is None


@pytest.mark.parametrize("kind", KINDS)
def test_random_samples(kind, tmp_path):
    src = make_source(kind, tmp_path)
    src.run("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT, qty DOUBLE)")
    src.run("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", i / 4) for i in range(1, 2001)])
    conn = src.connector()
    try:
        one, two = conn.sample(src.ref("items"), 25, random=True), conn.sample(src.ref("items"), 25, random=True)
        for rows in (one, two):
            assert len({r["id"] for r in rows}) == 25 and all(r["label"] == f"item {r['id']}" for r in rows)
        assert {r["id"] for r in one} != {r["id"] for r in two}
        assert conn.random_samples
    finally:
        conn.close()
