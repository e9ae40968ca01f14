"""Excel workbooks (.xlsx, .xlsm) through openpyxl: which sheet, where its header is,
cells as typed values. A workbook directly in the root may hold several tables, one per
sheet (see sheet_tables)."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pyarrow as pa

from esg_workbench.connectors.files.columns import (
    check_columns,
    clean_names,
    conform,
    kinds_type,
    to_type,
    value_kind,
    value_misfit,
)
from esg_workbench.connectors.files.model import (
    BATCH_ROWS,
    TOTALS,
    TOTALS_ROWS,
    INFER_SHEET_ROWS,
    BadFile,
    FileEntry,
    FileOptions,
    FileStore,
    Sample,
)
from esg_workbench.core.errors import EsgError

_EXCEL_ERRORS = {"#N/A", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!", "#GETTING_DATA", "#SPILL!", "#CALC!"}


def _workbook(store: FileStore, entry: FileEntry):
    import openpyxl

    local = store.local_path(entry)
    try:
        return openpyxl.load_workbook(local or io.BytesIO(store.read_all(entry)), read_only=True, data_only=True)
    except EsgError:
        raise
    except Exception as exc:  # zipfile, XML and openpyxl errors alike: the file is damaged
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadFile(f"{entry.path} is not a readable Excel workbook (damaged, or not .xlsx?): {detail[:200]}") from None


def _pick_sheet(workbook, entry: FileEntry, options: FileOptions):
    sheets = workbook.worksheets
    if options.sheet:
        wanted = options.sheet.strip()
        for ws in sheets:
            if ws.title == wanted:
                return ws
        for ws in sheets:
            if ws.title.lower() == wanted.lower():
                return ws
        if wanted.isdigit() and 1 <= int(wanted) <= len(sheets):
            return sheets[int(wanted) - 1]
        raise BadFile(f"{entry.path} has no sheet '{wanted}'; its sheets: {', '.join(ws.title for ws in sheets)}.",
                      hint="Correct the connector option sheet, then use Retry failed chunks.")
    visible = [ws for ws in sheets if getattr(ws, "sheet_state", "visible") == "visible"] or sheets

    def size(ws) -> int:
        try:
            return (ws.max_row or 0) * (ws.max_column or 0)
        except Exception:
            return 0

    return max(visible, key=size)  # max() keeps the first of equals


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        if value.strip() in _EXCEL_ERRORS:
            return None
        return value if value.strip() else None
    return value


def _find_header(first_rows: list[tuple]) -> int:
    """The index of the header among the first rows of a sheet."""
    filled = [sum(1 for v in row if v is not None) for row in first_rows]
    widest = max(filled, default=0)
    for i, row in enumerate(first_rows):
        cells = [v for v in row if v is not None]
        if cells and all(isinstance(v, str) for v in cells) and len(cells) * 2 >= widest:
            return i
    return next((i for i, n in enumerate(filled) if n), 0)


def _is_totals(values: tuple) -> bool:
    first = next((v for v in values if v is not None), None)
    return isinstance(first, str) and bool(TOTALS.match(first))


def _sheet_rows(ws, options: FileOptions, limit: int | None = None, totals: list[int] | None = None):
    """(names, the header's sheet row, iterator of (sheet row, values)) of a sheet, or
    None when it holds no table. Totals rows at its end are left out (their sheet rows
    go to `totals`)."""
    rows = (tuple(_cell(v) for v in row) for row in ws.iter_rows(values_only=True))
    first: list[tuple] = []
    for row in rows:
        first.append(row)
        if len(first) >= (options.header_row or 50):
            break
    if options.header_row:
        if len(first) < options.header_row:
            return None
        header_at = options.header_row - 1
    else:
        if not any(any(v is not None for v in r) for r in first):
            return None
        header_at = _find_header(first)
    header = first[header_at]
    width = max((i + 1 for i, v in enumerate(header) if v is not None), default=0)
    if not width:
        return None
    from openpyxl.utils import get_column_letter

    # an unnamed column is named by its letter, as the analyst sees it in Excel
    names = clean_names([f"column_{get_column_letter(i + 1)}" if v is None else v
                         for i, v in enumerate(header[:width])])

    def data():
        count = 0
        held: list[tuple[int, tuple]] = []  # the last rows, until it is known they are no totals
        for number, row in enumerate(itertools.chain(first[header_at + 1:], rows), start=header_at + 2):
            values = row[:width]
            if not any(v is not None for v in values):
                continue  # blank rows carry nothing
            held.append((number, values + (None,) * (width - len(values))))
            if len(held) > TOTALS_ROWS:
                yield held.pop(0)
                count += 1
                if limit is not None and count >= limit:
                    return
        while held and len(totals if totals is not None else ()) < TOTALS_ROWS and _is_totals(held[-1][1]):
            number, _ = held.pop()
            if totals is not None:
                totals.insert(0, number)
        for item in held:
            if limit is not None and count >= limit:
                return
            yield item
            count += 1

    return names, header_at + 1, data()


def _sheet_batch(entry: FileEntry, names: list[str], columns: list[list], numbers: list[int],
                 schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for name, column in zip(names, columns):
        target = schema.field(name).type
        values = []
        for value, number in zip(column, numbers):
            try:
                values.append(None if value is None else to_type(value, target))
            except (ValueError, TypeError, ArithmeticError):
                raise value_misfit(f"{entry.path}, sheet row {number}", name, value, target) from None
        arrays.append(pa.array(values, target))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([schema.field(n) for n in names]))


def infer(store, entry, gz, options) -> Sample | None:
    workbook = _workbook(store, entry)
    try:
        found = _sheet_rows(_pick_sheet(workbook, entry, options), options, limit=INFER_SHEET_ROWS)
        if found is None:
            return None
        names, _, rows = found
        columns: list[list] = [[] for _ in names]
        count = 0
        for _, values in rows:
            count += 1
            for column, value in zip(columns, values):
                column.append(value)
    finally:
        workbook.close()
    types = [kinds_type({value_kind(v) for v in column if v is not None}) for column in columns]
    sampled = entry.size if count < INFER_SHEET_ROWS else entry.size // 2
    return Sample(pa.schema(list(zip(names, types))), count, max(1, sampled))


def read(store, entry, gz, options, schema, cancel, limit=None, notes=None):
    """Yields (batch, positions): a sheet's rows keep their place (_esg_row = sheet row -
    header row) although blank rows are skipped."""
    workbook = _workbook(store, entry)
    try:
        totals: list[int] = []
        sheet = _pick_sheet(workbook, entry, options)
        found = _sheet_rows(sheet, options, limit=limit, totals=totals)
        if found is None:
            return
        names, header_row, rows = found
        check_columns(entry.path, names, schema)
        columns: list[list] = [[] for _ in names]
        numbers: list[int] = []
        for number, values in rows:
            numbers.append(number)
            for column, value in zip(columns, values):
                column.append(value)
            if len(numbers) >= BATCH_ROWS:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                batch = _sheet_batch(entry, names, columns, numbers, schema)
                yield conform(batch, schema, entry.path, 0), [n - header_row for n in numbers]
                columns = [[] for _ in names]
                numbers = []
        if numbers:
            batch = _sheet_batch(entry, names, columns, numbers, schema)
            yield conform(batch, schema, entry.path, 0), [n - header_row for n in numbers]
        if totals and notes is not None:
            notes.append(f"{entry.path}: skipped the totals row{'s' if len(totals) > 1 else ''} at the end of sheet "
                         f"'{sheet.title}' (sheet row {', '.join(map(str, totals))}).")
    finally:
        workbook.close()


def sheet_tables(store: FileStore, entry: FileEntry, options: FileOptions) -> list[str]:
    """The visible sheets of a workbook that hold a table: a header of two or more named
    columns (no "Label:" cells) with rows below it that fill at least half of it on average
    (a cover page of notes holds none)."""
    workbook = _workbook(store, entry)
    try:
        out = []
        for ws in workbook.worksheets:
            if getattr(ws, "sheet_state", "visible") != "visible":
                continue
            found = _sheet_rows(ws, options, limit=20)
            if found is None:
                continue
            names, header_at, rows = found
            header = [n for n in names if not n.startswith("column_")]
            if len(header) < 2 or any(n.rstrip().endswith(":") for n in header):
                continue  # "Status: Final" lines of a cover page are no header
            filled = [sum(v is not None for v in values) for _, values in rows]
            if filled and sum(filled) * 2 >= len(filled) * len(header):
                out.append(ws.title)
        return out
    finally:
        workbook.close()
