"""Local files through the sync engine: the file model (tables, types, one chunk per file,
delta by modification time), broken inputs, the real DESNZ flat file, hostile names.

The helpers here (write_*, sync, rows) are shared with the S3 and Azure tests."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from esg_workbench.connectors import files as filemodel
from esg_workbench.connectors.registry import create_connector
from esg_workbench.core.errors import ConfigError, DatabaseMissing, EsgError
from esg_workbench.core.specs import ConnectorSpec, StreamRef, SyncStatus
from esg_workbench.sync import operations
from esg_workbench.sync.engine import PASSWORD_MARKER, SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace

FAST = (0.01, 0.02, 0.04)


# --- shared helpers --------------------------------------------------------------------------


def csv_bytes(header: list[str], rows: list[list], delimiter: str = ",") -> bytes:
    out = io.StringIO()
    out.write(delimiter.join(header) + "\n")
    for row in rows:
        out.write(delimiter.join("" if v is None else str(v) for v in row) + "\n")
    return out.getvalue().encode()


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def add(ws, name: str, type_: str, options: dict, secret: str | None = None):
    """A connector whose secret is handed to the engine directly (`secret_for`), so these
    tests need no keyring; the keyring path itself is tested in test_credentials."""
    if secret is not None:
        options = {**options, PASSWORD_MARKER: True}
    return operations.add_connector(ws, name, type_, options)


def engine(ws, secret: str | None = None) -> SyncEngine:
    return SyncEngine(ws, retry_delays=FAST, secret_for=(lambda _id: secret) if secret else None)


def sync(ws, name: str, secret: str | None = None, **kw):
    return engine(ws, secret).run(SyncRequest(connector=name, **kw))


def by_stream(result) -> dict:
    return {s.stream: s for s in result.streams}


def rows(ws, raw_table: str, columns: list[str], order: str = "_esg_file, _esg_row") -> list[tuple]:
    prep = ws.engine.dialect.identifier_preparer
    cols = ", ".join(prep.quote(c) for c in columns)
    with ws.read() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT {cols} FROM {prep.quote(raw_table)} ORDER BY {order}"))]


def failed_errors(ws, name: str) -> list[str]:
    return [c["error"] for c in operations.connector_status(ws, name)["failed_chunks"]]


# --- local fixtures ----------------------------------------------------------------------------


@pytest.fixture
def ws(workspace_url):
    workspace = open_workspace(workspace_url)
    yield workspace
    workspace.close()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "source data"
    root.mkdir()
    return root


def put(root: Path, rel: str, data: bytes, when: dt.datetime | None = None) -> Path:
    """Write a file and give it a modification time (by default: a second after the
    newest so far, so the order of changes does not hang on the clock's resolution)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if when is None:
        newest = max((p.stat().st_mtime for p in root.rglob("*") if p.is_file() and p != path), default=1.7e9)
        stamp = max(newest, 1.7e9) + 1
    else:
        stamp = when.timestamp()
    os.utime(path, (stamp, stamp))
    return path


ENERGY = ["site", "kwh", "day"]


def test_full_then_delta_lands_each_file_once_and_replaces_changed_files(ws, folder):
    put(folder, "energy/2024-01.csv", csv_bytes(ENERGY, [["S1", 10, "2024-01-01"], ["S2", 20.5, "2024-01-02"]]))
    put(folder, "energy/2024-02.csv", csv_bytes(ENERGY, [["S1", 11, "2024-02-01"]], delimiter=";"))
    put(folder, "energy/2024-03.csv.gz", gzip.compress(csv_bytes(ENERGY, [["S3", 7, "2024-03-01"]])))
    put(folder, "water/site-a.parquet", parquet_bytes(pa.table({"site": ["A", "B"], "m3": [1.5, 2.5]})))
    put(folder, "trips/2024.jsonl.gz", gzip.compress(jsonl_bytes(
        [{"who": "x", "km": 12, "legs": [{"from": "A", "to": "B"}]}, {"who": "y", "km": 3.5}])))
    put(folder, "notes.txt", b"not a table")  # ignored: not a table file
    put(folder, ".hidden/secret.csv", b"a\n1\n")  # ignored: hidden
    add(ws, "local", "files", {"path": str(folder)})
    assert operations.validate_connector(ws, "local") == (
        f"Connected. 5 files in 3 tables under {folder}. 1 other file is ignored.")
    found = operations.discover_connector(ws, "local", sample_rows=5)
    tables = {t.stream.table: t for t in found.tables}
    assert sorted(tables) == ["energy", "trips", "water"]
    energy = tables["energy"]
    assert [(c.name, c.type) for c in energy.columns] == [
        ("site", "string"), ("kwh", "double"), ("day", "date32[day]"), ("_esg_file", "string"),
        ("_esg_row", "int64"), ("_esg_modified", "timestamp[us, tz=UTC]"), ("_esg_etag", "string")]
    assert energy.primary_key == ["_esg_file", "_esg_row"] and energy.cursor_field == "_esg_modified"
    assert energy.sample_rows[0]["site"] == "S1" and energy.sample_rows[0]["_esg_file"] == "energy/2024-01.csv"

    full = sync(ws, "local")
    assert full.status is SyncStatus.SUCCESS, full.error
    streams = by_stream(full)
    assert {k: (s.chunks_planned, s.rows_written) for k, s in streams.items()} == {
        "energy": (3, 4), "trips": (1, 2), "water": (1, 2)}
    energy_table = streams["energy"].raw_table
    assert rows(ws, energy_table, ["_esg_file", "_esg_row", "site", "kwh", "day"]) == [
        ("energy/2024-01.csv", 1, "S1", 10.0, dt.date(2024, 1, 1)),
        ("energy/2024-01.csv", 2, "S2", 20.5, dt.date(2024, 1, 2)),
        ("energy/2024-02.csv", 1, "S1", 11.0, dt.date(2024, 2, 1)),
        ("energy/2024-03.csv.gz", 1, "S3", 7.0, dt.date(2024, 3, 1)),
    ]
    trips = rows(ws, streams["trips"].raw_table, ["who", "km", "legs"])
    assert trips == [("x", 12.0, '[{"from": "A", "to": "B"}]'), ("y", 3.5, None)]

    nothing = sync(ws, "local", load_type="delta")
    assert nothing.status is SyncStatus.SUCCESS
    assert [(s.chunks_planned, s.rows_written) for s in nothing.streams] == [(0, 0)] * 3

    # a changed file (now one row instead of two) replaces all its earlier rows
    put(folder, "energy/2024-01.csv", csv_bytes(ENERGY, [["S1", 99, "2024-01-01"]]))
    changed = sync(ws, "local", load_type="delta")
    assert changed.status is SyncStatus.SUCCESS, changed.error
    assert by_stream(changed)["energy"].chunks_planned == 1 and by_stream(changed)["energy"].rows_written == 1
    assert rows(ws, energy_table, ["_esg_file", "site", "kwh"]) == [
        ("energy/2024-01.csv", "S1", 99.0), ("energy/2024-02.csv", "S1", 11.0), ("energy/2024-03.csv.gz", "S3", 7.0)]

    # a new file lands alone
    put(folder, "energy/2024-04.csv", csv_bytes(ENERGY, [["S4", 4, "2024-04-01"], ["S5", 5, "2024-04-02"]]))
    added = sync(ws, "local", load_type="delta")
    assert (by_stream(added)["energy"].chunks_planned, by_stream(added)["energy"].rows_written) == (1, 2)
    assert len(rows(ws, energy_table, ["site"])) == 5
    assert sync(ws, "local", load_type="delta").rows_written == 0

    # a full load again lands exactly the folder as it is
    again = sync(ws, "local")
    assert again.status is SyncStatus.SUCCESS and by_stream(again)["energy"].rows_written == 5


def test_broken_files_fail_alone_and_retry_lands_them_once_fixed(ws, folder):
    put(folder, "energy/a-good.csv", csv_bytes(ENERGY, [["S1", 1, "2024-01-01"], ["S2", 2, "2024-01-02"]]))
    put(folder, "energy/b-good.csv", csv_bytes(ENERGY, [["S3", 3, "2024-01-03"]]))
    put(folder, "energy/c-good.csv", csv_bytes(ENERGY, [["S4", 4, "2024-01-04"]]))
    put(folder, "energy/d-malformed.csv", b"site,kwh,day\nS5,5,2024-01-05\nS6,6,2024-01-06,extra\nS7,7,2024-01-07\n")
    put(folder, "energy/e-columns.csv", csv_bytes(["site", "kwh", "date"], [["S8", 8, "2024-01-08"]]))
    put(folder, "energy/f-value.csv", csv_bytes(ENERGY, [["S9", 9, "2024-01-09"], ["S10", "lots", "2024-01-10"]]))
    good_parquet = parquet_bytes(pa.table({"site": ["P1", "P2"], "m3": [1.0, 2.0]}))
    put(folder, "water/1.parquet", good_parquet)
    put(folder, "water/2.parquet", good_parquet[: len(good_parquet) // 2])  # truncated
    add(ws, "local", "files", {"path": str(folder), "load_type": "delta"})

    first = sync(ws, "local")
    assert first.status is SyncStatus.PARTIAL_SUCCESS
    streams = by_stream(first)
    assert (streams["energy"].chunks_done, streams["energy"].chunks_failed, streams["energy"].rows_written) == (3, 3, 4)
    assert (streams["water"].chunks_done, streams["water"].chunks_failed, streams["water"].rows_written) == (1, 1, 2)
    errors = "\n".join(failed_errors(ws, "local"))
    assert "energy/d-malformed.csv, line 3: malformed CSV row: expected 3 values, found 4" in errors
    assert "energy/e-columns.csv: its columns differ" in errors and "missing 'day'" in errors
    assert "not in the table 'date'" in errors
    assert "energy/f-value.csv, line 3, column 'kwh': 'lots' is not a whole number" in errors
    assert "water/2.parquet is not a readable Parquet file" in errors
    assert "Retry failed chunks" in errors
    # in a delta load what is good is there at once
    assert [r[0] for r in rows(ws, streams["energy"].raw_table, ["site"])] == ["S1", "S2", "S3", "S4"]

    put(folder, "energy/d-malformed.csv", b"site,kwh,day\nS5,5,2024-01-05\nS6,6,2024-01-06\nS7,7,2024-01-07\n")
    put(folder, "energy/e-columns.csv", csv_bytes(ENERGY, [["S8", 8, "2024-01-08"]]))
    put(folder, "energy/f-value.csv", csv_bytes(ENERGY, [["S9", 9, "2024-01-09"], ["S10", 10, "2024-01-10"]]))
    put(folder, "water/2.parquet", good_parquet)
    retried = sync(ws, "local", retry_failed=True)
    assert retried.status is SyncStatus.SUCCESS, retried.error
    assert sum(s.rows_written for s in retried.streams) == 3 + 1 + 2 + 2
    sites = [r[0] for r in rows(ws, streams["energy"].raw_table, ["site"])]
    assert sites == ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10"]
    assert len(rows(ws, streams["water"].raw_table, ["site"])) == 4
    # the fixed files are read once more by the next delta (they have new times), without duplicates
    sync(ws, "local")
    assert len(rows(ws, streams["energy"].raw_table, ["site"])) == 10
    assert sync(ws, "local").rows_written == 0


def test_a_failed_full_load_keeps_the_complete_old_table(ws, folder):
    put(folder, "energy/a.csv", csv_bytes(ENERGY, [["S1", 1, "2024-01-01"]]))
    add(ws, "local", "files", {"path": str(folder)})
    first = sync(ws, "local")
    table = first.streams[0].raw_table
    put(folder, "energy/b.csv", b"site,kwh,day\n\"S2,2,2024-01-02\n")  # an unterminated quote
    second = sync(ws, "local")
    assert second.status is SyncStatus.PARTIAL_SUCCESS
    assert "energy/b.csv, line 2: malformed CSV row" in failed_errors(ws, "local")[0]
    assert rows(ws, table, ["site"]) == [("S1",)]  # old data stays until the load is complete
    put(folder, "energy/b.csv", csv_bytes(ENERGY, [["S2", 2, "2024-01-02"]]))
    assert sync(ws, "local", retry_failed=True).status is SyncStatus.SUCCESS
    assert rows(ws, table, ["site"]) == [("S1",), ("S2",)]


def shared_data() -> Path | None:
    """shared/ beside the repository (CI) or /work/shared (the developers' machines)."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "shared", here.parents[1].parent / "shared", Path("/work/shared")):
        if (candidate / "data" / "emission-factors").is_dir():
            return candidate / "data" / "emission-factors"
    return None


def test_real_desnz_flat_file_lands_its_factor_sheet(ws, folder):
    data = shared_data()
    if data is None:
        pytest.fail("shared/data/emission-factors is missing (it sits beside the repository)")
    shutil.copy(data / "desnz-2023-flat-file.xlsx", folder / "desnz-2023-flat-file.xlsx")
    add(ws, "desnz", "files", {"path": str(folder)})
    found = operations.discover_connector(ws, "desnz", sample_rows=3)
    (info,) = found.tables
    assert info.stream.table == "desnz-2023-flat-file"
    # the largest sheet ("Factors by Category"), its header found below the title lines
    assert [(c.name, c.type) for c in info.columns[:10]] == [
        ("ID", "string"), ("Scope", "string"), ("Level 1", "string"), ("Level 2", "string"),
        ("Level 3", "string"), ("Level 4", "string"), ("Column Text", "string"), ("UOM", "string"),
        ("GHG/Unit", "string"), ("GHG Conversion Factor 2023", "double")]
    result = sync(ws, "desnz")
    assert result.status is SyncStatus.SUCCESS, result.error
    assert result.rows_written == 8039
    table = result.streams[0].raw_table
    uk = [r for r in rows(ws, table, ["Level 1", "UOM", "GHG/Unit", "GHG Conversion Factor 2023", "_esg_row"])
          if r[:3] == ("UK electricity", "kWh", "kg CO2e")]
    assert len(uk) == 1 and round(uk[0][3], 5) == 0.20707
    assert uk[0][4] == 2850 - 6  # sheet row 2850, the header is sheet row 6
    assert sync(ws, "desnz", load_type="delta").rows_written == 0


def test_hostile_file_and_folder_names(ws, folder):
    put(folder, "Énergie 'Q1' \"x\"/Zähler 1; DROP TABLE x.csv", csv_bytes(["Site Name", "kWh"], [["Zürich", 1]]))
    put(folder, "Énergie 'Q1' \"x\"/second file.csv", csv_bytes(["Site Name", "kWh"], [["O'Brien", 2]]))
    put(folder, "fuel use 2024-01.csv", csv_bytes(["litres"], [[5]]))
    put(folder, "fuel use 2024-02.csv", csv_bytes(["litres"], [[6]]))
    put(folder, "v1.2 report.csv", csv_bytes(["a"], [[1]]))
    add(ws, "odd", "files", {"path": str(folder)})
    names = sorted(s.table for s in create_connector(ConnectorSpec("files", "x", {"path": str(folder)})).list_streams())
    assert names == ["fuel use", "v1_2 report", "Énergie 'Q1' \"x\""]
    result = sync(ws, "odd")
    assert result.status is SyncStatus.SUCCESS, result.error
    streams = by_stream(result)
    assert rows(ws, streams["Énergie 'Q1' \"x\""].raw_table, ["_esg_file", "Site Name"]) == [
        ("Énergie 'Q1' \"x\"/Zähler 1; DROP TABLE x.csv", "Zürich"), ("Énergie 'Q1' \"x\"/second file.csv", "O'Brien")]
    assert streams["fuel use"].rows_written == 2
    assert sync(ws, "odd", load_type="delta").rows_written == 0
    assert sync(ws, "odd", tables=["v1_2 report"], load_type="delta").status is SyncStatus.SUCCESS


def test_options_sheet_header_row_delimiter_types_and_pattern(ws, folder):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "Cover"
    book.active.append(["A big cover sheet"] + ["x"] * 20)
    sheet = book.create_sheet("Data")
    sheet.append(["Report of 2024"])
    sheet.append(["code", "amount"])
    sheet.append(["007", 1])
    sheet.append(["008", 2.5])
    buffer = io.BytesIO()
    book.save(buffer)
    put(folder, "book.xlsx", buffer.getvalue())
    put(folder, "pipes.csv", b"# exported\ncode|amount\n007|1\n")
    put(folder, "skip-me.tsv", b"a\tb\n1\t2\n")
    options = {"path": str(folder), "sheet": "data", "header_row": 2, "delimiter": "|", "pattern": "*.[cx]*",
               "column_types": "code:text, amount:decimal(10,2)"}
    add(ws, "opts", "files", options)
    result = sync(ws, "opts")
    assert result.status is SyncStatus.SUCCESS, result.error
    streams = by_stream(result)
    assert sorted(streams) == ["book", "pipes"]
    from decimal import Decimal

    assert rows(ws, streams["book"].raw_table, ["code", "amount", "_esg_row"]) == [
        ("007", Decimal("1.00"), 1), ("008", Decimal("2.50"), 2)]
    assert rows(ws, streams["pipes"].raw_table, ["code", "amount"]) == [("007", Decimal("1.00"))]
    with pytest.raises(ConfigError, match="column_types"):
        create_connector(ConnectorSpec("files", "x", {"path": str(folder), "column_types": "amount:money"}))


def test_excel_value_that_does_not_fit_names_the_sheet_row(ws, folder):
    import openpyxl

    # types come from the first three files (in path order); the fourth is checked against them
    for name, values in (("a.xlsx", [1, 2, 3]), ("b.xlsx", [4]), ("c.xlsx", [5]), ("d.xlsx", [6, "n/a", 7])):
        book = openpyxl.Workbook()
        book.active.append(["site", "kwh"])
        for i, v in enumerate(values):
            book.active.append([f"S{i}", v])
        buffer = io.BytesIO()
        book.save(buffer)
        put(folder, f"meters/{name}", buffer.getvalue())
    add(ws, "xl", "files", {"path": str(folder), "load_type": "delta"})
    result = sync(ws, "xl")
    assert result.status is SyncStatus.PARTIAL_SUCCESS
    (error,) = failed_errors(ws, "xl")
    assert "meters/d.xlsx, sheet row 3, column 'kwh': 'n/a' is not a whole number" in error
    assert "column_types" in error


def test_validate_says_what_is_wrong(tmp_path, folder):
    missing = create_connector(ConnectorSpec("files", "x", {"path": str(tmp_path / "nope")}))
    with pytest.raises(DatabaseMissing) as err:
        missing.validate()
    assert err.value.code == "ENOENT" and "does not exist" in err.value.message and err.value.hint
    put(folder, "a.csv", b"x\n1\n")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        create_connector(ConnectorSpec("files", "x", {"path": str(folder / "a.csv")})).validate()
    with pytest.raises(ConfigError, match="needs the folder"):
        create_connector(ConnectorSpec("files", "x", {}))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no CSV" in create_connector(ConnectorSpec("files", "x", {"path": str(empty)})).validate()
    if os.geteuid() != 0:  # root reads everything
        locked = tmp_path / "locked"
        locked.mkdir(mode=0)
        try:
            with pytest.raises(EsgError) as err:
                create_connector(ConnectorSpec("files", "x", {"path": str(locked)})).validate()
            assert err.value.code == "EACCES"
        finally:
            locked.chmod(0o700)


def test_delta_is_refused_a_cursor_column_of_the_files():
    with pytest.raises(ConfigError, match="modification time"):
        filemodel.FileConnector._check_cursor("updated_at")


@pytest.mark.parametrize("rel, table", [
    ("energy/2024/01.csv", "energy"), ("fuel_2024-01.csv", "fuel"), ("fuel_2024-02.csv.gz", "fuel"),
    ("sales 20240131.parquet", "sales"), ("report_2024_Q1.xlsx", "report"), ("scope3.csv", "scope3"),
    ("desnz-2023-flat-file.xlsx", "desnz-2023-flat-file"), ("2024-01.csv", "root"), ("a.b.c/x.csv", "a_b_c"),
])
def test_table_names(rel, table):
    assert filemodel.table_name(rel, "root") == table


def test_stream_refs_round_trip():
    assert StreamRef.parse("fuel use", None).qualified == "fuel use"
