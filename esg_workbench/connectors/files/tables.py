"""Which files form which table: names from folders and files, a root file beside a folder
of the same name kept apart, a workbook's sheets as tables of their own, and Hive-style
`key=value` folders as columns."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from urllib.parse import unquote

import pyarrow as pa

from esg_workbench.connectors.files.model import FileEntry, file_format, table_name

_PARTITION = re.compile(r"^([^=/]+)=(.*)$")
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_INTEGER = re.compile(r"^[+-]?\d{1,18}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclasses.dataclass
class TableFiles:
    """A table and its files (in key order); `sheet` when it is one sheet of a workbook."""

    name: str
    files: list[FileEntry]
    sheet: str | None = None
    note: str | None = None  # how its name came about, when that needs saying


def partitions(rel: str) -> dict[str, str | None]:
    """{key: value} of a file's `key=value` folders (below its table's folder)."""
    out: dict[str, str | None] = {}
    for part in rel.split("/")[:-1]:
        match = _PARTITION.match(part)
        if match:
            value = unquote(match.group(2))
            out[unquote(match.group(1))] = None if value in ("", _HIVE_NULL) else value
    return out


def _partition_type(values: list[str | None]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(_INTEGER.match(v) for v in present):
        return pa.int64()
    if present and all(_DATE.match(v) for v in present):
        try:
            for v in present:
                dt.date.fromisoformat(v)
            return pa.date32()
        except ValueError:
            pass
    return pa.string()


def partition_columns(files: list[FileEntry]) -> dict[str, pa.DataType]:
    """The partition columns of a table's files, typed by all their values: whole
    numbers, ISO dates, else text. Listing order of keys is kept."""
    values: dict[str, list[str | None]] = {}
    for entry in files:
        for key, value in partitions(entry.rel).items():
            values.setdefault(key, []).append(value)
    return {key: _partition_type(found) for key, found in values.items()}


def partition_array(entry: FileEntry, key: str, type_: pa.DataType, rows: int) -> pa.Array:
    """A file's value of a partition key as a column of `rows` values of the key's type
    (inferred, or set by column_types)."""
    text = partitions(entry.rel).get(key)
    try:
        value = pa.scalar(text, pa.string()).cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        from esg_workbench.connectors.files.columns import value_misfit

        raise value_misfit(f"{entry.path}, folder {key}={text}", key, text, type_) from None
    return pa.repeat(value, rows)


def group(entries: list[FileEntry], root_name: str, sheets_of) -> dict[str, TableFiles]:
    """Tables by name. `sheets_of(entry, table)` lists the sheets of a root workbook that
    hold a table (called only for a workbook directly in the root, alone in its table)."""
    folders: dict[str, list[FileEntry]] = {}
    roots: dict[str, list[FileEntry]] = {}
    for entry in entries:
        if "/" in entry.rel:
            folders.setdefault(table_name(entry.rel, root_name), []).append(entry)
        else:
            roots.setdefault(table_name(entry.rel, root_name), []).append(entry)
    tables = {name: TableFiles(name, files) for name, files in folders.items()}
    for name, files in roots.items():
        note = None
        if name in folders:
            # readings.xlsx beside the folder readings/: two tables, the file's named by its type
            kinds = sorted({file_format(e.rel)[0] for e in files})
            new = f"{name}_{'_'.join(kinds)}"
            note = (f"{', '.join(e.rel for e in files[:3])} sit{'s' if len(files) == 1 else ''} beside the folder "
                    f"{name}/, which is table {name}: this is table {new}.")
            name = new
        workbooks = [e for e in files if file_format(e.rel)[0] == "xlsx"]
        if len(workbooks) == 1 and len(files) == 1:
            sheets = sheets_of(workbooks[0], name)
            if len(sheets) > 1:  # one table per sheet that holds one
                for sheet in sheets:
                    tables[f"{name} / {' '.join(sheet.split())}"] = TableFiles(
                        f"{name} / {' '.join(sheet.split())}", files, sheet=sheet, note=note)
                continue
        tables[name] = TableFiles(name, files, note=note)
    for table in tables.values():
        table.files.sort(key=lambda e: e.key)
    return tables
