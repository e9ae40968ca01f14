"""The bundled sample ERP database: deterministic, consistent, flawed on purpose, readable."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import sqlite3
import statistics
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from esg_workbench.connectors.local_db import SqliteConnector
from esg_workbench.core.specs import ChunkRange, ConnectorSpec, ForeignKey, ReadScope, StreamRef
from esg_workbench.sample_data import (
    SAMPLE_FILE_NAME,
    SAMPLE_IMPERFECTIONS,
    TABLES,
    create_sample_erp,
    ensure_sample_erp,
)

ROWS = {
    "sites": 5,
    "meters": 18,
    "electricity_readings": 215,
    "gas_readings": 96,
    "fuel_purchases": 360,
    "business_travel": 2587,
    "waste": 1248,
    "water": 120,
    "headcount": 120,
    "energy_attribute_certificates": 5,
}

FOREIGN_KEYS = {
    "meters": [("site_id", "sites")],
    "electricity_readings": [("meter_id", "meters")],
    "gas_readings": [("meter_id", "meters")],
    "fuel_purchases": [("site_id", "sites")],
    "waste": [("site_id", "sites")],
    "water": [("site_id", "sites")],
    "headcount": [("site_id", "sites")],
    "sites": [],
    "business_travel": [],
    "energy_attribute_certificates": [("site_id", "sites")],
}


def content_hash(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        digest = hashlib.sha256()
        for line in conn.iterdump():
            digest.update(line.encode())
            digest.update(b"\n")
        return digest.hexdigest()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / SAMPLE_FILE_NAME
    assert create_sample_erp(path) == ROWS
    return path


def query(path: Path, sql: str, *params):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_same_seed_same_content_and_other_seed_other_content(sample, tmp_path):
    again = tmp_path / "again.sqlite"
    assert create_sample_erp(again, seed=7) == ROWS
    assert content_hash(again) == content_hash(sample)
    other = tmp_path / "other.sqlite"
    counts = create_sample_erp(other, seed=8)
    assert content_hash(other) != content_hash(sample)
    assert {t: counts[t] for t in ("sites", "meters", "water", "headcount")} == {
        "sites": 5, "meters": 18, "water": 120, "headcount": 120}


def test_row_counts_size_and_period(sample):
    assert tuple(ROWS) == TABLES
    for table, expected in ROWS.items():
        assert query(sample, f"SELECT count(*) FROM {table}") == [(expected,)]
    assert sum(ROWS.values()) == 4774  # 4,769 activity rows and 5 certificates
    assert sample.stat().st_size < 1_000_000
    assert query(sample, "SELECT min(month), max(month), count(DISTINCT month) FROM headcount") == [
        ("2023-01-01", "2024-12-01", 24)]
    assert query(sample, "SELECT count(DISTINCT country), group_concat(site_code, ',') FROM sites") == [
        (4, "DE-MUC,DE-BER,NL-RTM,SE-GOT,ES-VLC")]
    assert query(sample, "SELECT meter_type, count(*) FROM meters GROUP BY meter_type ORDER BY 1") == [
        ("electricity", 9), ("gas", 4), ("water", 5)]
    assert query(sample, "SELECT mode, count(*) FROM business_travel GROUP BY mode ORDER BY 1") == [
        ("car", 130), ("flight", 1386), ("hotel", 783), ("rail", 288)]


def test_every_table_has_an_integer_key_and_iso_updated_at(sample):
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
    for table in TABLES:
        columns = query(sample, f"SELECT name, type, pk, \"notnull\" FROM pragma_table_info('{table}')")
        assert columns[0] == ("id", "INTEGER", 1, 0)
        assert ("updated_at", "TIMESTAMP", 0, 1) in columns
        values = [v for (v,) in query(sample, f"SELECT updated_at FROM {table}")]
        assert all(stamp.match(v) for v in values), table
        assert all(re.fullmatch(r"[a-z0-9_]+", name) for name, *_ in columns)
    # nightly import jobs share one timestamp: ties for delta loads
    assert query(sample, "SELECT count(DISTINCT updated_at) FROM electricity_readings WHERE tariff != 'correction'") == [(24,)]
    assert query(sample, "SELECT count(DISTINCT updated_at), count(*) FROM headcount") == [(24, 120)]


def test_foreign_keys_are_consistent(sample):
    assert query(sample, "PRAGMA foreign_key_check") == []
    for table, keys in FOREIGN_KEYS.items():
        declared = sorted((fk[3], fk[2]) for fk in query(sample, f"SELECT * FROM pragma_foreign_key_list('{table}')"))
        assert declared == sorted(keys)
        for column, parent in keys:
            orphans = query(sample, f"SELECT count(*) FROM {table} c LEFT JOIN {parent} p ON p.id = c.{column} "
                                    "WHERE p.id IS NULL")
            assert orphans == [(0,)], (table, column)
    # readings point at meters of the right type, in the unit of their meter
    assert query(sample, "SELECT count(*) FROM electricity_readings r JOIN meters m ON m.id = r.meter_id "
                         "WHERE m.meter_type != 'electricity'") == [(0,)]
    assert query(sample, "SELECT count(*) FROM gas_readings r JOIN meters m ON m.id = r.meter_id "
                         "WHERE m.meter_type != 'gas' OR m.unit != r.unit") == [(0,)]
    assert query(sample, "SELECT count(*) FROM headcount WHERE female + male != employees") == [(0,)]


def test_the_deliberate_imperfections_are_there(sample):
    # one missing month: NL-RTM has 23 months of electricity, without March 2024
    months = query(sample, """
        SELECT s.site_code, count(DISTINCT substr(r.reading_date, 1, 7)) FROM electricity_readings r
        JOIN meters m ON m.id = r.meter_id JOIN sites s ON s.id = m.site_id GROUP BY s.site_code ORDER BY 1""")
    assert months == [("DE-BER", 24), ("DE-MUC", 24), ("ES-VLC", 24), ("NL-RTM", 23), ("SE-GOT", 24)]
    assert SAMPLE_IMPERFECTIONS["missing_month"]["month"] == "2024-03"
    assert query(sample, """
        SELECT count(*) FROM electricity_readings r JOIN meters m ON m.id = r.meter_id
        WHERE m.serial LIKE 'NL-RTM-%' AND r.reading_date LIKE '2024-03-%'""") == [(0,)]
    # one negative correction
    assert query(sample, """
        SELECT m.serial, r.reading_date, r.kwh, r.tariff FROM electricity_readings r
        JOIN meters m ON m.id = r.meter_id WHERE r.kwh < 0""") == [("DE-BER-E1", "2023-11-30", -1850, "correction")]
    assert query(sample, "SELECT count(*) FROM gas_readings WHERE quantity < 0") == [(0,)]
    # one outlier: 25 times the site's usual water withdrawal
    rows = query(sample, """
        SELECT w.period_start, w.withdrawal_m3 FROM water w JOIN sites s ON s.id = w.site_id
        WHERE s.site_code = 'ES-VLC' ORDER BY w.period_start""")
    median = statistics.median(v for _, v in rows)
    outliers = [(start, round(v / median)) for start, v in rows if v > 5 * median]
    assert outliers == [("2024-07-01", 28)]  # 25 x a July value (summer peak)
    others = query(sample, "SELECT w.site_id, max(w.withdrawal_m3) / min(w.withdrawal_m3) FROM water w "
                           "WHERE w.site_id != 5 GROUP BY w.site_id")
    assert all(ratio < 2.0 for _, ratio in others)


def test_ensure_creates_once_and_create_refuses_to_overwrite(tmp_path):
    folder = tmp_path / "data" / "samples"
    path = ensure_sample_erp(folder)
    assert path == folder / "sample_erp.sqlite"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    modified = path.stat().st_mtime_ns
    assert ensure_sample_erp(folder) == path
    assert path.stat().st_mtime_ns == modified
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    with pytest.raises(FileExistsError):
        create_sample_erp(path)
    assert [p.name for p in folder.iterdir()] == ["sample_erp.sqlite"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # permissions like any file the user makes


def test_the_whole_sample_reads_through_the_sqlite_connector(sample):
    conn = SqliteConnector(ConnectorSpec(type="sqlite", name="sample", options={"path": str(sample)}))
    assert conn.validate() == "Connected. 10 tables readable in sample_erp.sqlite."
    infos = {info.stream.table: info for info in conn.describe()}
    assert sorted(infos) == sorted(TABLES)
    for table, info in infos.items():
        assert info.primary_key == ["id"]
        assert info.row_estimate == ROWS[table]
        assert info.foreign_keys == [ForeignKey((column,), None, parent, ("id",)) for column, parent in FOREIGN_KEYS[table]]
        assert info.column("updated_at").family == "timestamp"
        scope = ReadScope(columns=tuple(c.name for c in info.columns), key=("id",))
        bounds = conn.boundaries(info.stream, scope, 500)
        edges = [None, *bounds, None]
        ids = []
        schemas = set()
        for lower, upper in zip(edges, edges[1:]):
            for batch in conn.read(info.stream, scope, ChunkRange(lower=lower, upper=upper)):
                ids.extend(batch.column("id").to_pylist())
                schemas.add(batch.schema)
        assert ids == list(range(1, ROWS[table] + 1)), table
        assert len(schemas) == 1
    electricity = StreamRef(None, "electricity_readings")
    scope = ReadScope(columns=("id", "reading_date", "kwh", "renewable_share", "updated_at"), key=("id",))
    (batch,) = list(conn.read(electricity, scope, ChunkRange(upper=(2,))))
    assert batch.schema.types == [pa.int64(), pa.date32(), pa.decimal128(14, 3), pa.float64(), pa.timestamp("us")]
    row = batch.to_pylist()[0]
    assert row["reading_date"] == dt.date(2023, 1, 31)
    assert isinstance(row["kwh"], Decimal) and isinstance(row["updated_at"], dt.datetime)
    # delta planning over the tied import timestamps: one import per month closed
    delta = ReadScope(columns=("id",), key=("updated_at", "id"), cursor_field="updated_at")
    months = conn.window_counts(electricity, delta, "month")
    assert len(months) == 24 and sum(n for _, n in months) == 215
    assert months[0][0] == dt.datetime(2023, 2, 1) and months[-1][0] == dt.datetime(2025, 1, 1)


def test_an_older_sample_file_is_made_again(tmp_path):
    from esg_workbench.sample_data import SAMPLE_VERSION, sample_version

    path = ensure_sample_erp(tmp_path)
    assert sample_version(path) == SAMPLE_VERSION
    conn = sqlite3.connect(path)  # what an older version of the app left: no certificates, version 0
    conn.execute("DROP TABLE energy_attribute_certificates")
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()
    assert ensure_sample_erp(tmp_path) == path and sample_version(path) == SAMPLE_VERSION
    assert query(path, "SELECT count(*) FROM energy_attribute_certificates") == [(5,)]
    before = content_hash(path)
    ensure_sample_erp(tmp_path)  # a current file is left alone
    assert content_hash(path) == before
