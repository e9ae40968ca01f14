"""Files as analysts get them (issue 17), the same through a local folder, S3 (moto's
server) and Azure Blob (Azurite): European CSV exports with preambles and totals rows,
Windows-1252 and UTF-16 text, JSON lines of mixed types, Hive-partitioned Parquet,
workbooks of several sheets, a root file beside a folder of its name, one broken file
among good ones, files added, deleted and emptied after discovery.

The sample files are made here, small, in the shapes the issue names."""

from __future__ import annotations

import datetime as dt
import io
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from esg_workbench.connectors.registry import create_connector
from esg_workbench.core.errors import ConfigError
from esg_workbench.core.specs import ConnectorSpec, SyncStatus
from esg_workbench.sync import operations
from tests.emulators import azurite, moto_s3  # noqa: F401  (fixtures)
from tests.test_connector_files import by_stream, engine, parquet_bytes, rows, ws  # noqa: F401  (ws: a fixture)

# --- the three places files come from --------------------------------------------------------


class Place:
    """A folder, a bucket prefix or a container prefix: put, delete, and the connector."""

    kind = ""
    secret: str | None = None

    def put(self, rel: str, data: bytes) -> None:
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        raise NotImplementedError

    def options(self) -> dict:
        raise NotImplementedError

    def path(self, rel: str) -> str:
        """The file's _esg_file."""
        return f"esg/{rel}"

    def tick(self) -> None:
        """Object stores keep modification times in whole seconds: a change must fall in a later one."""
        time.sleep(1.05 - time.time() % 1 + 0.05)


class Local(Place):
    kind = "files"

    def __init__(self, root: Path):
        self.root = root

    def put(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        newest = max((p.stat().st_mtime for p in self.root.rglob("*") if p.is_file() and p != path), default=1.7e9)
        stamp = max(newest, 1.7e9) + 1
        os.utime(path, (stamp, stamp))

    def delete(self, rel: str) -> None:
        (self.root / rel).unlink()

    def options(self) -> dict:
        return {"path": str(self.root)}

    def path(self, rel: str) -> str:
        return rel

    def tick(self) -> None:
        pass  # put() gives every file a later modification time


class S3(Place):
    kind = "s3"

    def __init__(self, moto):
        self.moto = moto
        self.bucket = f"esg-{uuid.uuid4().hex[:12]}"
        moto.client().create_bucket(Bucket=self.bucket)
        self.secret = moto.admin_secret

    def put(self, rel: str, data: bytes) -> None:
        self.moto.client().put_object(Bucket=self.bucket, Key=f"esg/{rel}", Body=data)

    def delete(self, rel: str) -> None:
        self.moto.client().delete_object(Bucket=self.bucket, Key=f"esg/{rel}")

    def options(self) -> dict:
        return self.moto.options(self.bucket, prefix="esg")


class Azure(Place):
    kind = "azure_blob"

    def __init__(self, emulator):
        self.container = f"esg-{uuid.uuid4().hex[:12]}"
        self.client = emulator.service().create_container(self.container)
        self.secret = emulator.connection_string

    def put(self, rel: str, data: bytes) -> None:
        self.client.upload_blob(f"esg/{rel}", data, overwrite=True)

    def delete(self, rel: str) -> None:
        self.client.delete_blob(f"esg/{rel}")

    def options(self) -> dict:
        return {"container": self.container, "prefix": "esg/"}


@pytest.fixture(params=["local", "s3", "azure"])
def place(request, tmp_path):
    if request.param == "local":
        root = tmp_path / "from the portal"
        root.mkdir()
        return Local(root)
    if request.param == "s3":
        return S3(request.getfixturevalue("moto_s3"))
    return Azure(request.getfixturevalue("azurite"))


def connect(ws, place: Place, **options) -> str:
    name = f"src-{uuid.uuid4().hex[:6]}"
    config = {**place.options(), **options}
    if place.secret is not None:
        config["password_in_keyring"] = True
    operations.add_connector(ws, name, place.kind, config)
    return name


def discover(ws, place: Place, name: str, **kw):
    return operations.discover_connector(ws, name, engine=engine(ws, place.secret), **kw)


def run(ws, place: Place, name: str, **kw):
    from esg_workbench.sync.engine import SyncRequest

    return engine(ws, place.secret).run(SyncRequest(connector=name, **kw))


def failed(ws, name: str) -> str:
    """The errors of the connector's failed chunks."""
    return "\n".join(c["error"] for c in operations.connector_status(ws, name)["failed_chunks"])


def notes_of(result, table: str) -> str:
    return "\n".join(by_stream(result)[table].warnings)


# --- the files -------------------------------------------------------------------------------

#: a German ERP export: title lines, ';', decimal commas, thousands points, dd.mm.yyyy, a
#: totals row, Windows-1252 umlauts
ERP = ("Energieverbrauch Standorte\r\n"
       "Exportiert am 02.01.2025 von SAP\r\n"
       "\r\n"
       "Werk;Menge kWh;Datum;Betrag EUR;Kostenstelle\r\n"
       "München;1.234,56;31.12.2024;1.000;0815\r\n"
       "Köln Süd;7,5;01.01.2025;250;0816\r\n"
       "Düsseldorf;12.000;15.01.2025;4.000;0817\r\n"
       "Summe;13.242,06;;5.250;\r\n")


def test_a_german_erp_export_lands_numbers_dates_and_umlauts_without_its_totals(ws, place):
    place.put("energie/werke.csv", ERP.encode("cp1252"))
    name = connect(ws, place)
    found = discover(ws, place, name, sample_rows=5)
    (info,) = found.tables
    types = {c.name: c.type for c in info.columns if not c.name.startswith("_esg_")}
    assert types == {"Werk": "string", "Menge kWh": "double", "Datum": "date32[day]", "Betrag EUR": "int64",
                     "Kostenstelle": "int64"}
    shown = "\n".join(found.notes["energie"])
    assert "Windows-1252" in shown and "header on line 4" in shown
    assert "column 'Menge kWh': numbers written like 1.234,56" in shown
    assert "column 'Datum': dates written like 31.12.2024 (%d.%m.%Y)" in shown
    assert info.sample_rows[0]["Werk"] == "München" and info.sample_rows[0]["Menge kWh"] == 1234.56

    result = run(ws, place, name)
    assert result.status is SyncStatus.SUCCESS, result.error
    assert by_stream(result)["energie"].rows_written == 3
    assert rows(ws, by_stream(result)["energie"].raw_table, ["Werk", "Menge kWh", "Datum", "Betrag EUR", "_esg_row"]) == [
        ("München", 1234.56, dt.date(2024, 12, 31), 1000, 1),
        ("Köln Süd", 7.5, dt.date(2025, 1, 1), 250, 2),
        ("Düsseldorf", 12000.0, dt.date(2025, 1, 15), 4000, 3)]
    said = notes_of(result, "energie")
    assert "skipped the totals row at its end ('Summe;13.242,06;;5.250;')" in said
    assert "read as Windows-1252" in said and "encoding" in said

    # a declared type uses the detected format instead of refusing the values
    typed = connect(ws, place, column_types="Menge kWh:decimal(12,2), Kostenstelle:text")
    result = run(ws, place, typed)
    assert result.status is SyncStatus.SUCCESS, result.error
    from decimal import Decimal

    assert rows(ws, by_stream(result)["energie"].raw_table, ["Menge kWh", "Kostenstelle"]) == [
        (Decimal("1234.56"), "0815"), (Decimal("7.50"), "0816"), (Decimal("12000.00"), "0817")]


def test_encodings_are_detected_or_refused_by_name_never_landed_as_bytes(ws, place):
    text = "site,supplier,kwh\nZ1,Müller GmbH,1.5\nZ2,Société Générale,2\n"
    place.put("bom/a.csv", b"\xef\xbb\xbf" + text.encode())
    place.put("utf16/a.csv", text.encode("utf-16"))  # with its byte order mark
    place.put("utf16le/a.csv", text.encode("utf-16-le"))  # without one
    place.put("latin/a.csv", text.encode("latin-1"))
    name = connect(ws, place)
    result = run(ws, place, name)
    assert result.status is SyncStatus.SUCCESS, result.error
    for table in ("bom", "utf16", "utf16le", "latin"):
        assert rows(ws, by_stream(result)[table].raw_table, ["supplier", "kwh"]) == [
            ("Müller GmbH", 1.5), ("Société Générale", 2.0)], table
    assert "read as Windows-1252" in notes_of(result, "latin")
    assert notes_of(result, "bom") == "" and notes_of(result, "utf16") == ""

    # bytes that are neither UTF-8 nor Windows-1252: refused, naming the option
    place.put("unknown/a.csv", b"site,name\nZ1,\x81\x8d\x8f\x90\n")
    other = connect(ws, place)
    found = discover(ws, place, other)
    assert "unknown" in found.unreadable and "encoding" in found.unreadable["unknown"]
    result = run(ws, place, other, tables=["unknown"])
    assert result.status is SyncStatus.FAILED and "option encoding" in failed(ws, other)
    # the wrong encoding set by hand: refused, not landed as bytes
    wrong = connect(ws, place, **{"latin.encoding": "utf-8"})
    result = run(ws, place, wrong, tables=["latin"])
    assert result.status is SyncStatus.FAILED and "is not valid utf-8 text" in failed(ws, wrong)
    # ... and read once the encoding is set for that table
    fixed = connect(ws, place, **{"unknown.encoding": "cp437"})
    result = run(ws, place, fixed, tables=["unknown"])
    assert result.status is SyncStatus.SUCCESS, result.error
    assert rows(ws, result.streams[0].raw_table, ["name"]) == [("üìÅÉ",)]


def test_options_decimal_thousands_date_format_and_skip_footer_per_connector_or_table(ws, place):
    # "1,500" reads as 1.5 or as 1500; 03/04/2024 as March or April: only the options can tell
    place.put("ambiguous/a.csv", b"site;amount;day\nA;1,500;03/04/2024\nB;2,250;05/06/2024\n")
    place.put("footer/a.csv", b"site,kwh\nA,1\nB,2\n\nPrinted 2025-01-02\nPage 1 of 1\n")
    name = connect(ws, place)
    found = discover(ws, place, name)
    amb = {c.name: c.type for c in next(t for t in found.tables if t.stream.table == "ambiguous").columns}
    assert amb["amount"] == "string" and amb["day"] == "string"
    assert "read as numbers or dates in more than one way" in "\n".join(found.notes["ambiguous"])
    assert "footer" in found.unreadable or run(ws, place, name, tables=["footer"]).status is not SyncStatus.SUCCESS

    tuned = connect(ws, place, **{"ambiguous.decimal": ",", "ambiguous.date_format": "%d/%m/%Y",
                                  "footer.skip_footer": "2"})
    result = run(ws, place, tuned)
    assert result.status is SyncStatus.SUCCESS, result.error
    assert rows(ws, by_stream(result)["ambiguous"].raw_table, ["site", "amount", "day"]) == [
        ("A", 1.5, dt.date(2024, 4, 3)), ("B", 2.25, dt.date(2024, 6, 5))]
    assert rows(ws, by_stream(result)["footer"].raw_table, ["site", "kwh"]) == [("A", 1), ("B", 2)]
    assert "skipped its last 2 lines (skip_footer)" in notes_of(result, "footer")

    # a declared type without the separators: refused, with the options named
    typed = connect(ws, place, column_types="amount:float")
    result = run(ws, place, typed, tables=["ambiguous"])
    assert result.status is SyncStatus.FAILED
    assert "'1,500' is not a number" in failed(ws, typed) and "decimal=, thousands=." in failed(ws, typed)

    thousands = connect(ws, place, decimal=".", thousands=",")
    result = run(ws, place, thousands, tables=["ambiguous"])
    assert rows(ws, result.streams[0].raw_table, ["amount"]) == [(1500,), (2250,)]

    for bad in ({"decimal": ";"}, {"thousands": "x"}, {"date_format": "day"}, {"skip_footer": "-1"},
                {"energy.header_row": "0"}, {"decimal": ",", "thousands": ","}):
        with pytest.raises(ConfigError):
            create_connector(ConnectorSpec("files", "x", {"path": "/nowhere", **bad}))


def test_json_lines_with_mixed_types_land_as_text_or_the_declared_type(ws, place):
    place.put("meters/a.jsonl", b'{"meter": "M1", "value": 12, "read": "2024-01-01"}\n'
                                b'{"meter": "M2", "value": "n/a"}\n'
                                b'{"meter": "M3", "value": 3.5, "extra": {"k": [1, 2]}}\n')
    place.put("counts/a.jsonl", b'{"n": 1}\n{"n": "2"}\n{"n": 3}\n')
    place.put("broken/a.jsonl", b'{"n": 1}\n{"n": 2\n{"n": 3}\n')
    name = connect(ws, place, **{"counts.column_types": "n:integer"})
    result = run(ws, place, name)
    streams = by_stream(result)
    assert rows(ws, streams["meters"].raw_table, ["meter", "value", "extra"]) == [
        ("M1", "12", None), ("M2", "n/a", None), ("M3", "3.5", '{"k": [1, 2]}')]
    assert rows(ws, streams["counts"].raw_table, ["n"]) == [(1,), (2,), (3,)]
    # only a line that is not JSON is called malformed, by its number
    assert f"{place.path('broken/a.jsonl')}, line 2: malformed JSON line" in failed(ws, name)
    assert result.status is SyncStatus.PARTIAL_SUCCESS


@pytest.mark.parametrize("rel, table", [
    ("readings/year=2024/month=01/part-0.parquet", "readings"), ("year=2024/part-0.parquet", "root"),
    ("a=b.c/x.csv", "root"),
])
def test_partitioned_folders_name_their_table(rel, table):
    from esg_workbench.connectors.files import table_name

    assert table_name(rel, "root") == table


def test_hive_partition_folders_become_typed_columns(ws, place):
    for year, month, day in ((2024, "01", "2024-01-31"), (2024, "02", "2024-02-29"), (2025, "01", "2025-01-31")):
        place.put(f"readings/year={year}/month={month}/day={day}/part-0.parquet",
                  parquet_bytes(pa.table({"site": ["A", "B"], "kwh": [1.0, 2.0]})))
    place.put("readings/year=2025/month=__HIVE_DEFAULT_PARTITION__/day=2025-02-01/part-0.parquet",
              parquet_bytes(pa.table({"site": ["C"], "kwh": [3.0]})))
    name = connect(ws, place)
    (info,) = discover(ws, place, name).tables
    assert [(c.name, c.family) for c in info.columns[:5]] == [
        ("site", "text"), ("kwh", "float"), ("year", "integer"), ("month", "integer"), ("day", "date")]
    result = run(ws, place, name)
    assert result.status is SyncStatus.SUCCESS, result.error
    assert rows(ws, result.streams[0].raw_table, ["year", "month", "day", "site"], order="year, month, site") == [
        (2024, 1, dt.date(2024, 1, 31), "A"), (2024, 1, dt.date(2024, 1, 31), "B"),
        (2024, 2, dt.date(2024, 2, 29), "A"), (2024, 2, dt.date(2024, 2, 29), "B"),
        (2025, 1, dt.date(2025, 1, 31), "A"), (2025, 1, dt.date(2025, 1, 31), "B"),
        (2025, None, dt.date(2025, 2, 1), "C")]
    # a key's type set by hand
    typed = connect(ws, place, column_types="month:text, year:float")
    result = run(ws, place, typed)
    assert result.status is SyncStatus.SUCCESS, result.error
    assert rows(ws, result.streams[0].raw_table, ["year", "month"], order="year, month")[:2] == [
        (2024.0, "01"), (2024.0, "01")]


def _workbook(sheets: dict[str, list[list]]) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, lines in sheets.items():
        sheet = book.create_sheet(title)
        for line in lines:
            sheet.append(line)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def test_workbook_sheets_are_tables_with_dates_and_a_file_beside_its_folder_stays_apart(ws, place):
    place.put("readings.xlsx", _workbook({
        "Cover": [["Readings 2024"], ["Status:", "final"], ["Owner:", "Facilities"]],
        "Strom": [["Standort", "Tag", "kWh"], ["A", dt.datetime(2024, 1, 1), 5], ["B", dt.datetime(2024, 1, 2), 6.5],
                  [None, None, None], ["Gesamt", None, 11.5]],
        "Gas": [["Standort", "abgelesen", "m3"], ["A", dt.datetime(2024, 1, 1, 7, 30), 1]],
    }))
    place.put("readings/2024-01.csv", b"site,kwh\nA,1\n")
    place.put("fleet.xlsx", _workbook({"Only": [["car", "km"], ["X1", 10]]}))
    name = connect(ws, place)
    found = discover(ws, place, name)
    tables = {t.stream.table: t for t in found.tables}
    assert sorted(tables) == ["fleet", "readings", "readings_xlsx / Gas", "readings_xlsx / Strom"]
    assert "beside the folder readings/" in "\n".join(found.notes["readings_xlsx / Strom"])
    assert [(c.name, c.type) for c in tables["readings_xlsx / Strom"].columns[:3]] == [
        ("Standort", "string"), ("Tag", "date32[day]"), ("kWh", "double")]
    assert tables["readings_xlsx / Gas"].column("abgelesen").type == "timestamp[us]"
    result = run(ws, place, name)
    assert result.status is SyncStatus.SUCCESS, result.error
    streams = by_stream(result)
    assert rows(ws, streams["readings_xlsx / Strom"].raw_table, ["Standort", "Tag", "kWh"]) == [
        ("A", dt.date(2024, 1, 1), 5.0), ("B", dt.date(2024, 1, 2), 6.5)]
    assert "skipped the totals row at the end of sheet 'Strom' (sheet row 5)" in notes_of(result, "readings_xlsx / Strom")
    assert rows(ws, streams["readings"].raw_table, ["site", "kwh"]) == [("A", 1)]
    assert rows(ws, streams["fleet"].raw_table, ["car", "km"]) == [("X1", 10)]
    # the option sheet picks one sheet: the workbook is one table again
    picked = connect(ws, place, **{"readings_xlsx.sheet": "Gas"})
    names = sorted(t.stream.table for t in discover(ws, place, picked).tables)
    assert names == ["fleet", "readings", "readings_xlsx"]


def test_one_broken_file_does_not_stop_discovery_and_its_table_heals_without_rediscovery(ws, place):
    place.put("energy/a.csv", b"site,kwh\nA,1\n")
    place.put("trips/a.jsonl", b'{"who": "x", "km": 1}\nnot json at all\n')
    place.put("water/a.parquet", b"PAR1 this is not parquet")
    name = connect(ws, place)
    found = discover(ws, place, name, sample_rows=3)
    assert sorted(t.stream.table for t in found.tables) == ["energy", "trips", "water"]
    assert next(t for t in found.tables if t.stream.table == "energy").sample_rows[0]["site"] == "A"
    assert [c.name for c in next(t for t in found.tables if t.stream.table == "trips").columns][0] == "_esg_file"
    assert "line 2: malformed JSON line" in found.unreadable["trips"]
    assert "is not a readable Parquet file" in found.unreadable["water"]

    first = run(ws, place, name)
    assert first.status is SyncStatus.PARTIAL_SUCCESS
    streams = by_stream(first)
    assert streams["energy"].rows_written == 1
    assert (streams["trips"].chunks_failed, streams["water"].chunks_failed) == (1, 1)
    assert "its files could not be read" in notes_of(first, "trips")
    errors = failed(ws, name)
    assert f"{place.path('trips/a.jsonl')}, line 2: malformed JSON line" in errors
    assert f"{place.path('water/a.parquet')} is not a readable Parquet file" in errors

    # fixed, the file lands by Retry failed chunks, with the columns it brings
    place.tick()
    place.put("trips/a.jsonl", b'{"who": "x", "km": 1}\n{"who": "y", "km": 2.5}\n')
    retried = run(ws, place, name, retry_failed=True)
    assert by_stream(retried)["trips"].rows_written == 2 and by_stream(retried)["water"].chunks_failed == 1
    assert rows(ws, by_stream(first)["trips"].raw_table, ["who", "km"]) == [("x", 1.0), ("y", 2.5)]
    # ... or by the next sync, without a new discovery
    place.put("water/a.parquet", parquet_bytes(pa.table({"site": ["A"], "m3": [1.0]})))
    healed = run(ws, place, name)
    assert healed.status is SyncStatus.SUCCESS, healed.error
    assert "added site, m3" in (by_stream(healed)["water"].drift or "")
    assert rows(ws, by_stream(healed)["trips"].raw_table, ["who", "km"]) == [("x", 1.0), ("y", 2.5)]
    assert rows(ws, by_stream(healed)["water"].raw_table, ["site", "m3"]) == [("A", 1.0)]


def test_new_deleted_and_emptied_files_are_reported_and_a_gone_table_does_not_fail_syncs(ws, place):
    place.put("energy/2024-01.csv", b"site,kwh\nA,1\n")
    place.put("energy/2024-02.csv", b"site,kwh\nB,2\n")
    place.put("fuel.csv", b"litres\n5\n")
    name = connect(ws, place, load_type="delta")
    discover(ws, place, name)
    assert run(ws, place, name).status is SyncStatus.SUCCESS

    place.tick()
    place.put("energy/2024-03.csv", b"site,kwh\nC,3\n")
    place.put("water.csv", b"site,m3\nA,1\n")  # a new table, after discovery
    place.delete("energy/2024-01.csv")
    place.put("energy/2024-02.csv", b"")  # emptied
    second = run(ws, place, name)
    assert second.status is SyncStatus.SUCCESS, second.error
    said = notes_of(second, "energy")
    assert f"1 new file since the last sync: {place.path('energy/2024-03.csv')}" in said
    # the rows of the deleted and the emptied file are marked deleted, named with their counts
    assert (f"1 file deleted from the source: the rows of {place.path('energy/2024-01.csv')} (1 row) were marked "
            "deleted (_esg_deleted_at)") in said
    assert f"1 file emptied to 0 bytes: the rows of {place.path('energy/2024-02.csv')} (1 row) were marked" in said
    assert by_stream(second)["energy"].rows_deleted == 2
    assert rows(ws, by_stream(second)["energy"].raw_table, ["site", "_esg_deleted_at"], order="site")[0][1] is not None
    assert [r[1] is None for r in rows(ws, by_stream(second)["energy"].raw_table, ["site", "_esg_deleted_at"],
                                       order="site")] == [False, False, True]  # A, B marked; C landed
    assert "not synced: a new table" in notes_of(second, "water") and "Discover the connector" in notes_of(second, "water")

    full = run(ws, place, name, load_type="full")
    assert full.status is SyncStatus.SUCCESS, full.error
    assert rows(ws, by_stream(full)["energy"].raw_table, ["site"]) == [("C",)]

    place.tick()
    place.delete("fuel.csv")
    said = []
    for marked in (1, 0):  # every later sync: a note, not a partial success; its rows marked once
        gone = run(ws, place, name)
        assert gone.status is SyncStatus.SUCCESS, gone.error
        assert "all its files were deleted" in notes_of(gone, "fuel")
        assert by_stream(gone)["fuel"].rows_deleted == marked
        said.append(notes_of(gone, "fuel"))
    assert f"1 file deleted from the source: the rows of {place.path('fuel.csv')} (1 row) were marked" in said[0]


# --- the detectors, case by case -----------------------------------------------------------------


@pytest.mark.parametrize("values, found", [
    (["1.234,56", "7,5", "12.000"], ("number", ",", ".", "float64")),
    (["1,234.56", "7.5", "12,000"], ("number", ".", ",", "float64")),
    (["1.234", "5.678.901"], ("number", ",", ".", "int64")),
    (["1 234", "12 000 000"], ("number", ".", " ", "int64")),
    (["1,5", "-2,25", "+3"], ("number", ",", "", "float64")),
    (["1\u202f234,5", "12\u00a0000"], None),  # two kinds of space: not one format
    (["1\u00a0234,5", "12\u00a0000"], ("number", ",", "\u00a0", "float64")),
    ([" 31.12.2024 ", "01.01.2025"], ("date", "%d.%m.%Y")),
    (["1'234.50", "12.5"], ("number", ".", "'", "float64")),
    (["1,500", "2,250"], "ambiguous"),  # 1.5 or 1500
    (["31.12.2024", "01.01.2025"], ("date", "%d.%m.%Y")),
    (["13/01/2024", "01/02/2024"], ("date", "%d/%m/%Y")),
    (["01/13/2024", "02/01/2024"], ("date", "%m/%d/%Y")),
    (["01/02/2024", "03/04/2024"], "ambiguous"),  # day first or month first
    (["31.12.2024 13:45", "01.01.2025 00:00"], ("timestamp", "%d.%m.%Y %H:%M")),
    (["Müller", "12,5"], None),
    (["12", "13"], None),  # plain whole numbers: Arrow's own reading stands
    (["1.2.3", "4,5"], None),
])
def test_local_number_and_date_formats_are_found_only_when_unambiguous(values, found):
    from esg_workbench.connectors.files import formats
    from esg_workbench.connectors.files.model import FileOptions

    result = formats.detect(values + [None, ""], FileOptions())
    if found is None or found == "ambiguous":
        assert result == found
        return
    fmt, type_ = result
    if fmt.kind == "number":
        assert (fmt.kind, fmt.decimal, fmt.thousands, str(type_).replace("double", "float64")) == found
    else:
        assert (fmt.kind, fmt.date_format) == found
    parsed = fmt.parse(pa.array(values + [None]), type_).to_pylist()
    assert parsed[-1] is None and None not in parsed[:-1]


def test_a_value_that_does_not_read_in_the_detected_format_names_its_line(ws, tmp_path):
    root = tmp_path / "src"
    place = Local(root)
    root.mkdir()
    # types come from the first three files (in path order); the fourth is read as they say
    place.put("energy/a.csv", b"site;kwh\nA;1.234,5\nB;7,5\n")
    place.put("energy/b.csv", b"site;kwh\nC;2\n")
    place.put("energy/c.csv", b"site;kwh\nD;3,25\n")
    place.put("energy/d.csv", b"site;kwh\nE;2,5\nF;lots\n")
    name = connect(ws, place, load_type="delta")
    result = run(ws, place, name)
    assert result.status is SyncStatus.PARTIAL_SUCCESS
    errors = [c["error"] for c in operations.connector_status(ws, name)["failed_chunks"]]
    assert len(errors) == 1 and "energy/d.csv, line 3, column 'kwh': 'lots' is not a number" in errors[0]
    assert rows(ws, result.streams[0].raw_table, ["site", "kwh"]) == [("A", 1234.5), ("B", 7.5), ("C", 2.0), ("D", 3.25)]


def test_header_detection_keeps_line_one_when_rows_carry_trailing_delimiters(ws, tmp_path):
    root = tmp_path / "src"
    place = Local(root)
    root.mkdir()
    place.put("a/x.csv", b"site,kwh\nA,1,\nB,2,\n")  # data rows end in a delimiter, the header not
    place.put("b/x.csv", b"Report\n\nsite;kwh\nA;1\n")
    place.put("c/x.csv", "site,kwh\n".encode() + ("Zürich,1\n" * 120_000).encode() + "Müller,2\n".encode("cp1252"))
    place.put("d/x.csv", "site,kwh\nZürich,1\n".encode() + "Müller,2\n".encode("cp1252"))
    name = connect(ws, place)
    found = discover(ws, place, name, sample_rows=2)
    tables = {t.stream.table: t for t in found.tables}
    assert [c.name for c in tables["a"].columns[:3]] == ["site", "kwh", "column_3"]
    assert [c.name for c in tables["b"].columns[:2]] == ["site", "kwh"]
    result = run(ws, place, name)
    assert by_stream(result)["a"].rows_written == 2 and by_stream(result)["b"].rows_written == 1
    # valid UTF-8 for its first MiB, then a Windows-1252 byte: refused by name, not landed as bytes
    error = failed(ws, name)
    assert "is not valid utf-8 text" in error and "option encoding" in error
    # UTF-8 letters and Windows-1252 bytes in one file: no encoding reads it right, so none is guessed
    assert "mixes UTF-8 text with bytes that are not UTF-8" in found.unreadable["d"]
    assert "d/x.csv mixes UTF-8 text" in error


def test_the_cli_shows_what_discovery_detected_and_what_a_sync_noticed(tmp_path):
    from tests.test_cli import cli

    root = tmp_path / "exports"
    place = Local(root)
    root.mkdir()
    place.put("energie/werke.csv", ERP.encode("cp1252"))
    place.put("trips/a.jsonl", b"not json\n")
    workspace = str(tmp_path / "cli.duckdb")
    added = cli(workspace, "connector", "add", "exports", "--type", "files", "--option", f"path={root}",
                "--option", "trips.encoding=utf-8")
    assert added.returncode == 0, added.stderr
    found = cli(workspace, "connector", "discover", "exports")
    assert found.returncode == 0, found.stderr
    assert "energie: column 'Menge kWh': numbers written like 1.234,56 (decimal ',', thousands '.')" in found.stdout
    assert "energie: header on line 4" in found.stdout
    assert "Could not read trips (it stays in the sync, which tries it again): " in found.stdout
    assert "trips/a.jsonl, line 1: malformed JSON line" in found.stdout
    synced = cli(workspace, "sync", "exports")
    assert synced.returncode != 0  # trips cannot be read: a partial success
    assert "note: energie/werke.csv: skipped the totals row at its end" in synced.stdout
    assert "note: its files could not be read: " in synced.stdout and "malformed JSON line" in synced.stdout


def test_on_a_postgresql_workspace_too(tmp_path, pg_database):
    from esg_workbench.workspace import open_workspace
    from tests.conftest import PG_HOST, PG_PORT, PG_USER

    root = tmp_path / "exports"
    place = Local(root)
    root.mkdir()
    place.put("energie/werke.csv", ERP.encode("cp1252"))
    place.put("energie/werke-2.csv", ERP.replace("München", "Bonn").encode("cp1252"))
    workspace = open_workspace(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}")
    try:
        name = connect(workspace, place, load_type="delta")
        discover(workspace, place, name)
        first = run(workspace, place, name)
        assert first.status is SyncStatus.SUCCESS, first.error
        table = by_stream(first)["energie"].raw_table
        assert rows(workspace, table, ["Werk", "Menge kWh", "Datum"])[:2] == [
            ("Bonn", 1234.56, dt.date(2024, 12, 31)), ("Köln Süd", 7.5, dt.date(2025, 1, 1))]
        place.delete("energie/werke-2.csv")
        place.put("energie/werke-3.csv", ERP.encode("cp1252"))
        second = run(workspace, place, name)
        assert second.status is SyncStatus.SUCCESS, second.error
        said = notes_of(second, "energie")
        assert "1 new file since the last sync: energie/werke-3.csv" in said
        assert ("1 file deleted from the source: the rows of energie/werke-2.csv (3 rows) were marked deleted"
                in said)
        assert len(rows(workspace, table, ["Werk"])) == 9
        assert sum(r[0] is None for r in rows(workspace, table, ["_esg_deleted_at"])) == 6
    finally:
        workspace.close()


@pytest.mark.parametrize("text, header, skipped", [
    ("site,kwh\nA,1\n", ["site", "kwh"], 1),
    ("site,,note\nA,1,x\nB,2,y\n", ["site", "column_2", "note"], 1),  # an unnamed column is no title line
    ("site,kwh\nA,1,\nB,2,\n", ["site", "kwh", "column_3"], 1),
    ("Report\n\nsite;kwh\nA;1\n", ["site", "kwh"], 3),
    ("Bericht;;;\nMandant: 100;Werk: 2;;\nsite;kwh;day;note\nA;1;2024-01-01;x\nB;2;2024-01-02;y\n",
     ["site", "kwh", "day", "note"], 3),
    ("kwh\n1\n2\n", ["kwh"], 1),
])
def test_header_rows_are_found_below_title_lines_only(text, header, skipped):
    from esg_workbench.connectors.files import csv_reader
    from esg_workbench.connectors.files.model import FileEntry, FileOptions

    entry = FileEntry("x.csv", "x.csv", len(text), dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
    layout = csv_reader.layout_of(text.encode(), True, entry, FileOptions())
    assert (layout.names, layout.skip) == (header, skipped)


def test_a_database_table_without_permission_does_not_stop_discovery(ws, pg_conn, pg_database):
    """The same promise for databases: the others are discovered and sampled, the one that
    cannot be read is listed with its error."""
    from tests.conftest import PG_HOST, PG_PORT

    role = f"esg_reader_{uuid.uuid4().hex[:8]}"
    pg_conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        pg_conn.execute("CREATE TABLE open_t (id int PRIMARY KEY, kwh numeric(8,2)); INSERT INTO open_t VALUES (1, 2.5);"
                        "CREATE TABLE closed_t (id int PRIMARY KEY, kwh numeric(8,2))")
        pg_conn.execute(f'GRANT SELECT ON open_t TO "{role}"')
        operations.add_connector(ws, "pg", "postgres", {"host": PG_HOST, "port": PG_PORT, "database": pg_database,
                                                       "username": role, "schema": "public"})
        found = operations.discover_connector(ws, "pg", sample_rows=5)
        tables = {t.stream.table: t for t in found.tables}
        assert sorted(tables) == ["closed_t", "open_t"]  # closed_t is described: it stays in the sync's scope
        assert len(tables["open_t"].sample_rows) == 1 and tables["open_t"].sample_rows[0]["id"] == 1
        assert tables["closed_t"].sample_rows is None
        assert "permission" in found.unreadable["public.closed_t"]
    finally:
        pg_conn.execute(f'DROP OWNED BY "{role}"')
        pg_conn.execute(f'DROP ROLE "{role}"')
