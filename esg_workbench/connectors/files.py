"""The file model shared by local folders, Amazon S3 and Azure Blob Storage.

A *store* (local_files, s3, azure_blob) lists files below a root (a folder, a bucket and
prefix, a container and prefix) and opens them. Everything else is here, the same for all
three: which files form which table, the table's columns, reading a file as Arrow
batches, and planning one chunk per file.

Tables
    A file in a subfolder of the root belongs to the table named after that subfolder
    (all files below it, at any depth: ``energy/2024/01.csv`` is table ``energy``). A file
    directly in the root is a table of its own, named after the file without its extension
    and without a trailing date (``fuel_2024-01.csv`` and ``fuel_2024-02.csv`` are both
    table ``fuel``; ``desnz-2023-flat-file.xlsx`` is table ``desnz-2023-flat-file``).
    Dots in names become underscores. Hidden files (``.x``), Excel lock files (``~$x``),
    folder markers and files of other types are ignored; the option ``pattern`` (a glob
    over the path below the root, e.g. ``*.csv``) narrows the files further.

Formats (by extension)
    CSV (``.csv``, ``.tsv``), Parquet (``.parquet``, ``.pq``), JSON lines (``.jsonl``,
    ``.ndjson``, ``.json``: one object per line) and Excel (``.xlsx``, ``.xlsm``); CSV and
    JSON lines may be gzip-compressed (``.csv.gz``, ``.jsonl.gz``). CSV: the delimiter is
    sniffed from the header line (``,`` ``;`` tab ``|``) unless the option ``delimiter``
    says; ``encoding`` defaults to UTF-8 (a BOM is skipped); ``header_row`` (1-based) skips
    lines above the header. Excel: the sheet named by the option ``sheet`` (a name or a
    1-based number), else the workbook's largest sheet (a cover page is usually small);
    the header row is ``header_row``, else the first of the first 50 rows whose filled
    cells are all text and at least half as many as the widest row's (so title lines
    above a table are skipped). Excel error values (``#N/A``...) read as empty.

Columns and types
    A table's columns and types are inferred from its first files (up to three in path
    order, which stays the same as files are added or changed; CSV and JSON lines from
    their first MiB, sheets from their first 20,000 rows) and checked on every other file:
    a file whose columns differ, or whose value does not fit a column's type, fails its
    chunk with the file, line or row and column named, and the other files land. Where the
    first files disagree, whole numbers and fractions make a float column, dates and
    date-times a timestamp column, anything else a text column. The option
    ``column_types`` sets types by hand where the first files mislead, e.g.
    ``kwh:float, site_code:text`` (text, integer, float, decimal(p,s), boolean, date,
    timestamp, timestamptz). Nested JSON or Parquet values land as JSON text.

    Every landed row carries four lineage columns: ``_esg_file`` (the file's path in its
    store), ``_esg_row`` (the row's position below the header: 1 is the first data row;
    in a sheet, the sheet row is the header row plus ``_esg_row``), ``_esg_modified``
    (the file's last-modified time, UTC) and ``_esg_etag`` (the version of the file read).

Chunks and delta loads
    A chunk is one file. The ordering key is (``_esg_modified``, ``_esg_file``,
    ``_esg_row``); a chunk's range runs from its file's (modified, path) to the next
    file's, so the engine's checkpoint after a chunk is that file's last row. A delta sync
    reads only the files modified after the checkpoint: files already landed are not
    landed again, a new file lands alone, and a changed file (new modification time)
    replaces all its earlier rows (the table's ``replace_key`` is ``_esg_file``). A file
    deleted from the source keeps its rows until the next full load; a file emptied down
    to its header keeps its earlier rows too. S3 and Azure give modification times in
    whole seconds: a file rewritten within the second it was last read is seen as
    unchanged; the ``lookback`` setting (e.g. ``2s``) re-reads such recent files.

    A chunk reads its file as it is when the chunk runs (retry after fixing a broken file
    lands the fixed version); its rows then carry the modification time the sync planned
    with, so the sync's checkpoint stays within its plan, and the next delta sync reads
    the file once more with its new time.

Memory is bounded by the largest file: a chunk is held in memory before it is landed.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import fnmatch
import io
import itertools
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, BinaryIO, Iterator

import pyarrow as pa

from esg_workbench.core.errors import ConfigError, EsgError, SourceError, TableMissing
from esg_workbench.core.specs import (
    CancelToken,
    ChunkRange,
    ColumnInfo,
    ConnectorSpec,
    ReadScope,
    StreamRef,
    TableInfo,
)

FILE, ROW, MODIFIED, ETAG = "_esg_file", "_esg_row", "_esg_modified", "_esg_etag"
LINEAGE_COLUMNS = (FILE, ROW, MODIFIED, ETAG)
UTC = dt.timezone.utc
TIMESTAMP = pa.timestamp("us", tz="UTC")

#: how many files a table's columns are inferred from, and how much of a CSV/JSON file
INFER_FILES = 3
INFER_BYTES = 1 << 20
#: rows of a sheet used for inference (whole sheets are read when landing)
INFER_SHEET_ROWS = 20_000
CSV_BLOCK = 4 << 20
BATCH_ROWS = 65_536

#: options a file connector understands besides its location
READ_OPTIONS = ("pattern", "sheet", "header_row", "delimiter", "encoding", "column_types")

_FORMATS = {
    ".csv": "csv", ".tsv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".xlsx": "xlsx", ".xlsm": "xlsx",
}
_GZIP_OK = {"csv", "jsonl"}
_EXCEL_ERRORS = {"#N/A", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!", "#GETTING_DATA", "#SPILL!", "#CALC!"}
_DATE_SUFFIX = re.compile(
    r"^(?P<base>.*?\S)[\s_\-.]+"
    r"(?:19|20)\d{2}(?:[\-_.]?(?:0[1-9]|1[0-2]|[qQ][1-4]|[hH][12]))?(?:[\-_.]?(?:0[1-9]|[12]\d|3[01]))?$"
)
_ALL_DATE = re.compile(r"^(?:19|20)\d{2}(?:[\-_.]?\d{1,2}){0,2}$")


class BadFile(SourceError):
    """A file that cannot be read as its table's files are: malformed, truncated, other
    columns, a value that does not fit. Not transient: the file must be fixed."""

    hint = "Fix or replace the file, then use Retry failed chunks: the table's other files have landed."


# --- files and stores ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileEntry:
    path: str  # the file's name in its store: landed as _esg_file, named in messages
    rel: str  # the path below the connector's folder or prefix ("/"-separated)
    size: int
    modified: dt.datetime  # UTC, microseconds
    etag: str | None = None

    @property
    def key(self) -> tuple:
        return (self.modified, self.path)


def file_format(name: str) -> tuple[str, bool] | None:
    """(format, gzip) of a file name, or None when it is no table file."""
    lower = name.lower()
    gz = lower.endswith(".gz")
    if gz:
        lower = lower[:-3]
    dot = lower.rfind(".")
    fmt = _FORMATS.get(lower[dot:]) if dot >= 0 else None
    if fmt is None or (gz and fmt not in _GZIP_OK):
        return None
    return fmt, gz


def _ignored(rel: str) -> bool:
    parts = rel.split("/")
    return any(p.startswith(".") for p in parts) or parts[-1].startswith("~$") or not parts[-1]


def table_name(rel: str, root_name: str) -> str:
    """The table a file belongs to (see the module docstring)."""
    parts = rel.split("/")
    if len(parts) > 1:
        name = parts[0]
    else:
        stem = parts[0]
        if stem.lower().endswith(".gz"):
            stem = stem[:-3]
        stem = stem.rsplit(".", 1)[0] if "." in stem else stem
        match = _DATE_SUFFIX.match(stem)
        name = match.group("base") if match else ("" if _ALL_DATE.match(stem) else stem)
    name = " ".join(name.replace(".", "_").split())
    return name or root_name.replace(".", "_") or "files"


class FileStore:
    """Where the files are. Subclasses list and open; errors() turns their library's
    exceptions into SourceErrors that say what is wrong."""

    #: the root as shown to the user, e.g. s3://bucket/prefix/
    where: str = ""
    #: a name for tables of files that sit directly in the root and are named by a date
    root_name: str = "files"

    def check(self) -> None:
        """Raise a SourceError when the root cannot be used (missing, no access)."""

    def list(self) -> list[FileEntry]:
        raise NotImplementedError

    def stat(self, path: str) -> FileEntry | None:
        """The file as it is now, or None when it no longer exists."""
        raise NotImplementedError

    def open(self, entry: FileEntry) -> BinaryIO:
        """The file's bytes, read sequentially (the version `entry` names where the store
        can tell versions apart)."""
        raise NotImplementedError

    def read_all(self, entry: FileEntry) -> bytes:
        with self.open(entry) as f:
            return f.read()

    def read_tail(self, entry: FileEntry, size: int) -> bytes:
        """The last `size` bytes (a Parquet footer)."""
        return self.read_all(entry)[-size:]

    def local_path(self, entry: FileEntry) -> str | None:
        return None

    def errors(self, what: str):
        raise NotImplementedError

    def close(self) -> None:
        pass


# --- options -----------------------------------------------------------------------------

_TYPE_WORDS = {
    "text": pa.string(), "string": pa.string(), "varchar": pa.string(),
    "integer": pa.int64(), "int": pa.int64(), "bigint": pa.int64(),
    "float": pa.float64(), "double": pa.float64(), "number": pa.float64(), "real": pa.float64(),
    "boolean": pa.bool_(), "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"), "datetime": pa.timestamp("us"),
    "timestamptz": TIMESTAMP,
}


def parse_column_types(text: str | None) -> dict[str, pa.DataType]:
    """'kwh:float, code:text, amount:decimal(18,4)' -> {name: Arrow type}."""
    if not text:
        return {}
    out: dict[str, pa.DataType] = {}
    for part in re.split(r"[;,](?![^()]*\))", str(text)):
        part = part.strip()
        if not part:
            continue
        sep = ":" if ":" in part else "="
        name, _, word = part.rpartition(sep)
        name, word = name.strip(), word.strip().lower()
        decimal = re.fullmatch(r"(?:decimal|numeric)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", word)
        if decimal:
            precision, scale = int(decimal.group(1)), int(decimal.group(2))
            if not 1 <= precision <= 76 or scale > precision:
                raise ConfigError(f"column_types: '{part}' is not a valid decimal type.")
            out[name] = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
        elif name and word in _TYPE_WORDS:
            out[name] = _TYPE_WORDS[word]
        else:
            raise ConfigError(
                f"column_types: '{part}' is not 'column:type'.",
                hint="Write e.g. kwh:float, site_code:text (types: text, integer, float, decimal(p,s), "
                     "boolean, date, timestamp, timestamptz).")
    return out


@dataclasses.dataclass(frozen=True)
class FileOptions:
    pattern: str | None = None
    sheet: str | None = None
    header_row: int | None = None
    delimiter: str | None = None
    encoding: str = "utf-8"
    column_types: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: ConnectorSpec) -> "FileOptions":
        header_row = spec.option("header_row")
        if header_row is not None:
            try:
                header_row = int(header_row)
            except (TypeError, ValueError):
                header_row = 0
            if header_row < 1:
                raise ConfigError(f"header_row must be a line number from 1, not '{spec.option('header_row')}'.")
        delimiter = spec.option("delimiter")
        if delimiter is not None:
            delimiter = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(str(delimiter).lower(), str(delimiter))
            if len(delimiter) != 1:
                raise ConfigError(f"delimiter must be one character (or tab), not '{spec.option('delimiter')}'.")
        encoding = str(spec.option("encoding", "utf-8"))
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ConfigError(f"encoding '{encoding}' is not known; write e.g. utf-8, cp1252 or latin-1.") from None
        sheet = spec.option("sheet")
        return cls(
            pattern=spec.option("pattern"), sheet=None if sheet is None else str(sheet),
            header_row=header_row, delimiter=delimiter, encoding=encoding,
            column_types=parse_column_types(spec.option("column_types")),
        )


# --- names and types ------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def clean_names(raw: list[Any]) -> list[str]:
    """Column names as landed: whitespace folded, empty ones named by position,
    duplicates (ignoring case, as DuckDB does) numbered, lineage names kept free."""
    out: list[str] = []
    seen: set[str] = set()
    for i, value in enumerate(raw):
        name = " ".join(_text(value).split()) if value is not None else ""
        name = name or f"column_{i + 1}"
        if name.lower().startswith("_esg_"):
            name = "source" + name
        base, n = name, 2
        while name.lower() in seen:
            name, n = f"{base}_{n}", n + 1
        seen.add(name.lower())
        out.append(name)
    return out


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_map(t)


def normalize_type(t: pa.DataType) -> pa.DataType:
    """The type a column lands with: no null, dictionary, nested or odd-unit types."""
    if pa.types.is_null(t) or _is_nested(t):
        return pa.string()
    if pa.types.is_dictionary(t):
        return normalize_type(t.value_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_time(t):
        return pa.time64("us")
    return t


def merge_types(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """A type holding values of both (int and float: float; date and timestamp:
    timestamp); text where there is none."""
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    def temporal(t: pa.DataType) -> bool:
        return pa.types.is_date(t) or pa.types.is_timestamp(t)

    if temporal(a) and temporal(b):
        return pa.timestamp("us", tz=getattr(a, "tz", None) or getattr(b, "tz", None))
    try:
        merged = pa.unify_schemas([pa.schema([("x", a)]), pa.schema([("x", b)])],
                                  promote_options="permissive").field("x").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.string()
    if pa.types.is_string(merged) or pa.types.is_large_string(merged) or pa.types.is_floating(merged) \
            or pa.types.is_integer(merged) or pa.types.is_decimal(merged) or pa.types.is_timestamp(merged):
        return merged
    return pa.string()


def type_family(t: pa.DataType) -> str:
    checks = (
        (pa.types.is_boolean, "boolean"), (pa.types.is_integer, "integer"), (pa.types.is_floating, "float"),
        (pa.types.is_decimal, "decimal"), (pa.types.is_date, "date"), (pa.types.is_time, "time"),
        (pa.types.is_string, "text"), (pa.types.is_large_string, "text"),
        (pa.types.is_binary, "binary"), (pa.types.is_large_binary, "binary"),
    )
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    return next((family for check, family in checks if check(t)), "other")


def _json_text(array: pa.Array) -> pa.Array:
    from esg_workbench.connectors.sql import json_safe

    return pa.array([None if v is None else json.dumps(json_safe(v), ensure_ascii=False) for v in array.to_pylist()],
                    pa.string())


def _first_bad(array: pa.Array, target: pa.DataType, safe: bool) -> int:
    """The index of the first value that does not cast (by bisection over prefixes)."""
    lo, hi = 0, len(array)  # a prefix of length lo casts, one of length hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            array.slice(0, mid).cast(target, safe=safe)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            hi = mid
    return hi - 1


def _type_words(t: pa.DataType) -> str:
    family = type_family(t)
    return {"integer": "a whole number", "float": "a number", "decimal": f"a decimal number ({t})",
            "boolean": "true or false", "date": "a date", "timestamp": "a date and time",
            "timestamptz": "a date and time with a zone", "time": "a time of day"}.get(family, str(t))


def value_misfit(where: str, column: str, value: Any, target: pa.DataType) -> BadFile:
    return BadFile(
        f"{where}, column '{column}': {value!r} is not {_type_words(target)}, the column's type "
        f"(inferred from the table's first files).",
        hint=f"Fix the value, or set the column's type in the connector option column_types "
             f"(e.g. {column}:text), then use Retry failed chunks.")


def conform(batch: pa.RecordBatch, schema: pa.Schema, where: str, row0: int,
            renames: dict[str, str] | None = None, missing_ok: bool = False) -> pa.RecordBatch:
    """The batch's columns in the table's order and types. `renames` maps landed names
    to the file's own; `row0` is the position of the batch's first row in the file."""
    arrays = []
    names = batch.schema.names
    for field in schema:
        source = (renames or {}).get(field.name, field.name)
        if source not in names:
            if not missing_ok:
                raise BadFile(f"{where} has no column '{field.name}'.")
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        array = batch.column(names.index(source))
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if _is_nested(array.type):
            array = _json_text(array)
        if array.type != field.type:
            # timestamps of a finer unit are cut to microseconds, as the workspace keeps them
            safe = not (pa.types.is_timestamp(array.type) and pa.types.is_timestamp(field.type))
            try:
                array = array.cast(field.type, safe=safe)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                i = _first_bad(array, field.type, safe)
                raise value_misfit(f"{where}, row {row0 + i + 1}", field.name, array[i].as_py(), field.type) from None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def check_columns(where: str, found: list[str], schema: pa.Schema, missing_ok: bool = False) -> None:
    expected = schema.names
    missing = [n for n in expected if n not in found]
    extra = [n for n in found if n not in expected]
    if extra or (missing and not missing_ok):
        parts = []
        if missing and not missing_ok:
            parts.append("missing " + ", ".join(f"'{n}'" for n in missing))
        if extra:
            parts.append("not in the table " + ", ".join(f"'{n}'" for n in extra))
        raise BadFile(
            f"{where}: its columns differ from its table's (inferred from the table's first files): "
            + "; ".join(parts) + ".",
            hint="Give the file the same header as the table's other files (or move it to a folder of its "
                 "own: each subfolder is a table), then use Retry failed chunks.")


# --- reading formats ---------------------------------------------------------------------------


class _Replay:
    """A stream whose first bytes were read already (to find the header): they are
    handed out again before the rest."""

    def __init__(self, head: bytes, rest):
        self._head = head
        self._rest = rest
        self.closed = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                out, self._head = self._head + self._rest.read(), b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._rest.read(n)

    def close(self) -> None:
        self.closed = True
        self._rest.close()


def _sequential(store: FileStore, entry: FileEntry, gz: bool):
    """A decompressed byte stream of the file (an Arrow stream for gzip)."""
    raw = store.open(entry)
    if not gz:
        return raw
    return pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "gzip")


def _read_head(stream, lines: int, limit: int = 16 << 20) -> bytes:
    """At least `lines` complete lines (or all of a short file), in 64 KiB steps."""
    head = b""
    while head.count(b"\n") < lines and len(head) < limit:
        block = stream.read(1 << 16)
        if not block:
            break
        head += bytes(block)
    return head


def _sniff_delimiter(line: str, suffix: str) -> str:
    if suffix.endswith(".tsv") or suffix.endswith(".tsv.gz"):
        return "\t"
    counts = {d: line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _py_encoding(encoding: str) -> str:
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


@dataclasses.dataclass
class _CsvLayout:
    names: list[str]
    delimiter: str
    skip: int  # rows above the data (preamble and header)


def _csv_layout(head: bytes, entry: FileEntry, options: FileOptions) -> _CsvLayout | None:
    text = head.decode(_py_encoding(options.encoding), errors="replace")
    header_row = options.header_row or 1
    lines = text.splitlines()
    if len(lines) < header_row or not lines[header_row - 1].strip():
        return None  # an empty file, or nothing at the header line
    delimiter = options.delimiter or _sniff_delimiter(lines[header_row - 1], entry.path.lower())
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for _ in range(header_row - 1):
            next(reader)
        header = next(reader)
    except (StopIteration, csv.Error):
        return None
    return _CsvLayout(clean_names(header), delimiter, header_row)


def _csv_reader(stream, layout: _CsvLayout, options: FileOptions, types: dict | None, block_size: int):
    import pyarrow.csv as pacsv

    encoding = options.encoding if _py_encoding(options.encoding) != "utf-8-sig" else "utf8"
    return pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(column_names=layout.names, skip_rows=layout.skip, encoding=encoding,
                                       block_size=block_size),
        parse_options=pacsv.ParseOptions(delimiter=layout.delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types=types or {}, strings_can_be_null=True,
                                             quoted_strings_can_be_null=True),
    )


_CSV_PARSE = re.compile(r"CSV parse error: (?:Row #\d+: )?(.*)", re.S)
_CSV_CONVERT = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to ([^:]+): invalid value '(.*)'", re.S)


def _csv_problem(store: FileStore, entry: FileEntry, gz: bool, layout: _CsvLayout, options: FileOptions,
                 exc: Exception, schema: pa.Schema | None) -> BadFile:
    """The Arrow error of a CSV file, with the line it is on (found by reading the file
    again with Python's csv module: only when something is wrong)."""
    message = str(exc).strip()
    convert = _CSV_CONVERT.search(message)
    parse = _CSV_PARSE.search(message)
    width = len(layout.names)
    if convert:
        column, value = int(convert.group(1)), convert.group(3)
        def wrong(record: list[str]) -> bool:
            return len(record) > column and record[column] == value
    else:
        def wrong(record: list[str]) -> bool:
            return bool(record) and len(record) != width
    line = None
    try:
        csv.field_size_limit(2**31 - 1)
        raw = store.open(entry)
        if gz:
            import gzip

            raw = gzip.GzipFile(fileobj=raw)
        with io.TextIOWrapper(raw, encoding=_py_encoding(options.encoding), errors="replace", newline="") as text:
            reader = csv.reader(text, delimiter=layout.delimiter)
            for _ in range(layout.skip):
                next(reader, None)
            start = reader.line_num + 1
            for record in reader:
                if wrong(record):
                    line = start  # where the record starts (a quoted value may span lines)
                    break
                start = reader.line_num + 1
    except Exception:  # the line is a courtesy: the file's own error still stands
        line = None
    where = f"{entry.path}, line {line}" if line else entry.path
    if convert:
        name = layout.names[int(convert.group(1))]
        target = schema.field(name).type if schema is not None and name in schema.names else pa.string()
        return value_misfit(where, name, convert.group(3), target)
    detail = parse.group(1) if parse else message.splitlines()[0]
    detail = re.sub(r"^Expected (\d+) columns, got (\d+)", r"expected \1 values, found \2", detail)
    return BadFile(f"{where}: malformed CSV row: {' '.join(detail.split())[:300]}")


def _infer_csv(store, entry, gz, options) -> tuple[pa.Schema, int, int] | None:
    stream = _sequential(store, entry, gz)
    try:
        head = _read_head(stream, (options.header_row or 1) + 1)
        layout = _csv_layout(head, entry, options)
        if layout is None:
            return None
        try:
            reader = _csv_reader(pa.PythonFile(_Replay(head, stream), mode="r"), layout, options, None, INFER_BYTES)
            batch = reader.read_next_batch()
        except StopIteration:
            return pa.schema([(n, pa.null()) for n in layout.names]), 0, entry.size
        except pa.ArrowInvalid as exc:
            raise _csv_problem(store, entry, gz, layout, options, exc, None) from None
        try:
            reader.read_next_batch()
            sampled = INFER_BYTES // (4 if gz else 1)  # the first MiB (of text: gzip makes about a quarter)
        except StopIteration:
            sampled = entry.size  # the whole file
        return batch.schema, batch.num_rows, max(1, sampled)
    finally:
        stream.close()


def _read_csv(store, entry, gz, options, schema: pa.Schema, cancel, limit=None) -> Iterator[pa.RecordBatch]:
    stream = _sequential(store, entry, gz)
    try:
        head = _read_head(stream, (options.header_row or 1) + 1)
        layout = _csv_layout(head, entry, options)
        if layout is None:
            return
        check_columns(entry.path, layout.names, schema)
        types = {f.name: f.type for f in schema}
        try:
            reader = _csv_reader(pa.PythonFile(_Replay(head, stream), mode="r"), layout, options, types, CSV_BLOCK)
            while True:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                yield conform(batch, schema, entry.path, 0)
        except pa.ArrowInvalid as exc:
            raise _csv_problem(store, entry, gz, layout, options, exc, schema) from None
    finally:
        stream.close()


def _parquet_file(store: FileStore, entry: FileEntry, footer_only: bool):
    import pyarrow.parquet as pq

    local = store.local_path(entry)
    try:
        if local is not None:
            return pq.ParquetFile(local)
        if footer_only and entry.size > (1 << 16):
            tail = store.read_tail(entry, 1 << 16)
            try:
                return pq.ParquetFile(_TailFile(tail, entry.size))
            except _OutsideTail:
                pass
        return pq.ParquetFile(pa.BufferReader(store.read_all(entry)))
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        if isinstance(exc, EsgError):
            raise
        raise _parquet_problem(entry, exc) from None


class _OutsideTail(Exception):
    pass


class _TailFile(io.RawIOBase):
    """The end of a remote file, enough for Parquet's footer; reading elsewhere raises."""

    def __init__(self, tail: bytes, size: int):
        self._tail, self._size, self._start, self._pos = tail, size, size - len(tail), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: offset, 1: self._pos + offset, 2: self._size + offset}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        if self._pos < self._start:
            raise _OutsideTail()
        data = self._tail[self._pos - self._start:self._pos - self._start + len(buffer)]
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)


def _parquet_problem(entry: FileEntry, exc: Exception) -> BadFile:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BadFile(f"{entry.path} is not a readable Parquet file (truncated or damaged?): {detail[:300]}")


def _parquet_renames(names: list[str]) -> tuple[list[str], dict[str, str]]:
    cleaned = clean_names(names)
    return cleaned, {new: old for new, old in zip(cleaned, names) if new != old}


def _infer_parquet(store, entry, gz, options):
    pf = _parquet_file(store, entry, footer_only=True)
    names, _ = _parquet_renames(pf.schema_arrow.names)
    return pa.schema([(n, f.type) for n, f in zip(names, pf.schema_arrow)]), pf.metadata.num_rows, max(1, entry.size)


def _read_parquet(store, entry, gz, options, schema, cancel, limit=None):
    pf = _parquet_file(store, entry, footer_only=False)
    names, renames = _parquet_renames(pf.schema_arrow.names)
    check_columns(entry.path, names, schema)
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=[renames.get(n, n) for n in schema.names]):
            if cancel is not None:
                cancel.raise_if_cancelled()
            yield conform(batch, schema, entry.path, row, renames)
            row += batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        if isinstance(exc, EsgError):
            raise
        raise _parquet_problem(entry, exc) from None


_JSON_ROW = re.compile(r"(.*) in row (\d+)$", re.S)


def _json_problem(entry: FileEntry, exc: Exception) -> BadFile:
    message = str(exc).strip()
    match = _JSON_ROW.match(message)
    detail = (match.group(1) if match else message).replace("JSON parse error: ", "")
    where = f"{entry.path}, line {int(match.group(2)) + 1}" if match else entry.path  # Arrow counts from 0
    return BadFile(f"{where}: malformed JSON line: {detail.splitlines()[0][:300]}",
                   hint="Each line must be one JSON object (JSON lines). Fix the file, then use Retry failed chunks.")


def _json_table(data: bytes, entry: FileEntry) -> pa.Table:
    import pyarrow.json as pajson

    block = min(max(len(data) + 1, 1 << 16), 2**31 - 1)
    try:
        return pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=block))
    except pa.ArrowInvalid as exc:
        raise _json_problem(entry, exc) from None


def _infer_jsonl(store, entry, gz, options):
    stream = _sequential(store, entry, gz)
    try:
        head = bytes(stream.read(INFER_BYTES))
        more = bool(stream.read(1))
    finally:
        stream.close()
    if more:
        head = head[:head.rfind(b"\n") + 1]
    if not head.strip():
        return None
    table = _json_table(head, entry)
    names = clean_names(table.column_names)
    sampled = entry.size if not more else len(head) // (4 if gz else 1)
    return pa.schema([(n, f.type) for n, f in zip(names, table.schema)]), table.num_rows, max(1, sampled)


def _read_jsonl(store, entry, gz, options, schema, cancel, limit=None):
    stream = _sequential(store, entry, gz)
    try:
        data = bytes(stream.read())
    finally:
        stream.close()
    if not data.strip():
        return
    table = _json_table(data, entry)
    names = clean_names(table.column_names)
    check_columns(entry.path, names, schema, missing_ok=True)  # a key absent from every line is empty
    renames = {new: old for new, old in zip(names, table.column_names) if new != old}
    row = 0
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        if cancel is not None:
            cancel.raise_if_cancelled()
        yield conform(batch, schema, entry.path, row, renames, missing_ok=True)
        row += batch.num_rows


# --- Excel ---------------------------------------------------------------------------------------


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


def _sheet_rows(ws, options: FileOptions, limit: int | None = None):
    """(names, the header's sheet row, iterator of (sheet row, values)) of a sheet, or
    None when it holds no table."""
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
        for number, row in enumerate(itertools.chain(first[header_at + 1:], rows), start=header_at + 2):
            values = row[:width]
            if not any(v is not None for v in values):
                continue  # blank rows carry nothing
            yield number, values + (None,) * (width - len(values))
            count += 1
            if limit is not None and count >= limit:
                return

    return names, header_at + 1, data()


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, (float, Decimal)):
        return "float"
    if isinstance(value, (dt.datetime, dt.date)):
        return "ts"
    if isinstance(value, dt.time):
        return "time"
    return "str"


def _kinds_type(kinds: set[str]) -> pa.DataType:
    if not kinds:
        return pa.null()
    if kinds == {"int"}:
        return pa.int64()
    if kinds <= {"int", "float"}:
        return pa.float64()
    if kinds == {"ts"}:
        return pa.timestamp("us")
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"time"}:
        return pa.time64("us")
    return pa.string()


def _to_type(value: Any, target: pa.DataType) -> Any:
    """A cell's value as the column's type; raises ValueError when it does not fit."""
    if pa.types.is_string(target):
        return _text(value)
    if isinstance(value, str):
        text = value.strip()
        if pa.types.is_integer(target) or pa.types.is_floating(target) or pa.types.is_decimal(target):
            try:
                value = Decimal(text)  # a number stored as text
            except InvalidOperation:
                raise ValueError(value) from None
        elif pa.types.is_timestamp(target) or pa.types.is_date(target):
            value = dt.datetime.fromisoformat(text)
        elif pa.types.is_boolean(target) and text.lower() in ("true", "false"):
            return text.lower() == "true"
        else:
            raise ValueError(value)
    if pa.types.is_boolean(target):
        if isinstance(value, bool):
            return value
        raise ValueError(value)
    if isinstance(value, bool):
        raise ValueError(value)
    if pa.types.is_integer(target):
        if isinstance(value, int):
            return value
        if isinstance(value, (float, Decimal)) and value == int(value):
            return int(value)
        raise ValueError(value)
    if pa.types.is_floating(target):
        if isinstance(value, (int, float, Decimal)):
            return float(value)
        raise ValueError(value)
    if pa.types.is_decimal(target):
        if isinstance(value, (int, float, Decimal)):
            return Decimal(str(value)).quantize(Decimal(1).scaleb(-target.scale))
        raise ValueError(value)
    if pa.types.is_timestamp(target):
        if not isinstance(value, dt.datetime):
            if not isinstance(value, dt.date):
                raise ValueError(value)
            value = dt.datetime(value.year, value.month, value.day)
        return value.replace(tzinfo=UTC) if target.tz and value.tzinfo is None else value
    if pa.types.is_date(target):
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        raise ValueError(value)
    if pa.types.is_time(target):
        if isinstance(value, dt.time):
            return value
        raise ValueError(value)
    return value


def _sheet_batch(entry: FileEntry, names: list[str], columns: list[list], numbers: list[int],
                 schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for name, column in zip(names, columns):
        target = schema.field(name).type
        values = []
        for value, number in zip(column, numbers):
            try:
                values.append(None if value is None else _to_type(value, target))
            except (ValueError, TypeError, ArithmeticError):
                raise value_misfit(f"{entry.path}, sheet row {number}", name, value, target) from None
        arrays.append(pa.array(values, target))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([schema.field(n) for n in names]))


def _infer_xlsx(store, entry, gz, options):
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
    types = [_kinds_type({_kind(v) for v in column if v is not None}) for column in columns]
    sampled = entry.size if count < INFER_SHEET_ROWS else entry.size // 2
    return pa.schema(list(zip(names, types))), count, max(1, sampled)


def _read_xlsx(store, entry, gz, options, schema, cancel, limit=None):
    """Yields (batch, positions): a sheet's rows keep their place (_esg_row = sheet row -
    header row) although blank rows are skipped."""
    workbook = _workbook(store, entry)
    try:
        found = _sheet_rows(_pick_sheet(workbook, entry, options), options, limit=limit)
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
    finally:
        workbook.close()


_READERS = {
    "csv": (_infer_csv, _read_csv),
    "parquet": (_infer_parquet, _read_parquet),
    "jsonl": (_infer_jsonl, _read_jsonl),
    "xlsx": (_infer_xlsx, _read_xlsx),
}


# --- the connector ------------------------------------------------------------------------------


def _lineage(batch: pa.RecordBatch, rows: pa.Array, entry: FileEntry, stamp: dt.datetime) -> pa.RecordBatch:
    n = batch.num_rows
    arrays = list(batch.columns) + [
        pa.repeat(pa.scalar(entry.path, pa.string()), n),
        rows,
        pa.repeat(pa.scalar(stamp, TIMESTAMP), n),
        pa.repeat(pa.scalar(entry.etag, pa.string()), n),
    ]
    names = batch.schema.names + list(LINEAGE_COLUMNS)
    return pa.RecordBatch.from_arrays(arrays, names=names)


LINEAGE_INFO = [
    ColumnInfo(FILE, "string", nullable=False, primary_key=True, family="text"),
    ColumnInfo(ROW, "int64", nullable=False, primary_key=True, family="integer"),
    ColumnInfo(MODIFIED, "timestamp[us, tz=UTC]", nullable=False, family="timestamptz"),
    ColumnInfo(ETAG, "string", nullable=True, family="text"),
]


#: inferred file schemas by file version (see FileConnector._infer_file)
_INFERRED: dict[tuple, Any] = {}


class FileConnector:
    """The Connector protocol over a FileStore (see the module docstring)."""

    #: files have no schemas: table names are taken whole
    schema = None

    def __init__(self, spec: ConnectorSpec, store: FileStore):
        self.spec = spec
        self.store = store
        self.options = FileOptions.from_spec(spec)
        self._listing: list[FileEntry] | None = None
        self._ignored = 0
        self._schemas: dict[str, pa.Schema] = {}

    # --- listing ------------------------------------------------------------------------

    def _entries(self, refresh: bool = False) -> list[FileEntry]:
        """Table files below the root. Listed once per connector instance (one sync or
        discovery), so a sync's plan and its upper bound come from the same listing."""
        if self._listing is None or refresh:
            with self.store.errors(f"Listing the files of {self.store.where}"):
                found = self.store.list()
            keep, ignored = [], 0
            for entry in found:
                if _ignored(entry.rel) or file_format(entry.rel) is None or (
                        self.options.pattern and not fnmatch.fnmatch(entry.rel, self.options.pattern)):
                    ignored += 1
                    continue
                keep.append(entry)
            self._listing, self._ignored = keep, ignored
        return self._listing

    def _groups(self) -> dict[str, list[FileEntry]]:
        groups: dict[str, list[FileEntry]] = {}
        for entry in self._entries():
            groups.setdefault(table_name(entry.rel, self.store.root_name), []).append(entry)
        for files in groups.values():
            files.sort(key=lambda e: e.key)
        return groups

    def _files(self, stream: StreamRef) -> list[FileEntry]:
        files = self._groups().get(stream.qualified)
        if not files:
            raise TableMissing(f"No files of table {stream.qualified} under {self.store.where} (any more).",
                               hint="The files may have been moved or deleted. Re-discover the connector.")
        return files

    # --- validate and discover --------------------------------------------------------------

    def validate(self) -> str:
        with self.store.errors(f"Connecting to {self.store.where}"):
            self.store.check()
        entries = self._entries(refresh=True)
        tables = len(self._groups())
        text = f"Connected. {len(entries)} files in {tables} tables under {self.store.where}."
        if not entries:
            text = f"Connected, but {self.store.where} holds no CSV, Excel, Parquet or JSON lines files yet."
        if self._ignored:
            text += f" {self._ignored} other file{' is' if self._ignored == 1 else 's are'} ignored."
        return text

    def list_streams(self) -> list[StreamRef]:
        return [StreamRef(None, name) for name in sorted(self._groups())]

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        groups = self._groups()
        names = sorted(groups) if streams is None else [s.qualified for s in streams]
        infos = []
        for name in names:
            if groups.get(name):
                infos.append(self._describe(name, groups[name]))
        return infos

    def _describe(self, name: str, files: list[FileEntry]) -> TableInfo:
        schema, estimate = self._infer(name, files)
        self._schemas[name] = schema
        columns = [ColumnInfo(f.name, str(f.type), True, False, type_family(f.type)) for f in schema]
        return TableInfo(
            stream=StreamRef(None, name), columns=columns + list(LINEAGE_INFO), primary_key=[FILE, ROW],
            row_estimate=estimate, cursor_field=MODIFIED, replace_key=[FILE],
        )

    def _infer(self, name: str, files: list[FileEntry]) -> tuple[pa.Schema, int]:
        """The table's columns from its first readable files in path order (which stays
        the same when files are added or changed, so a table keeps its types)."""
        schemas: list[pa.Schema] = []
        first_error: EsgError | None = None
        rows = sampled = tried = 0
        for entry in sorted(files, key=lambda e: e.path):
            if len(schemas) >= INFER_FILES or tried >= INFER_FILES + 5:
                break
            if entry.size == 0:
                continue
            tried += 1
            try:
                found = self._infer_file(entry)
            except BadFile as exc:
                first_error = first_error or exc
                continue
            if found is None:
                continue
            schema, n, nbytes = found
            if schemas and set(schema.names) != set(schemas[0].names):
                continue  # a file of another shape fails when it is read, with its columns named
            schemas.append(schema)
            rows += n
            sampled += nbytes
        if not schemas:
            if first_error is not None:
                raise first_error
            raise BadFile(f"Table {name} has no file with a header line under {self.store.where}.")
        types = {f.name: f.type for f in schemas[0]}
        for schema in schemas[1:]:
            for f in schema:
                types[f.name] = merge_types(types[f.name], f.type)
        for column, override in self.options.column_types.items():
            if column in types:
                types[column] = override
        schema = pa.schema([(n, normalize_type(t) if n not in self.options.column_types else t)
                            for n, t in types.items()])
        total = sum(e.size for e in files)
        estimate = int(rows * total / sampled) if sampled else None
        return schema, estimate

    def _infer_file(self, entry: FileEntry):
        """(schema, rows sampled, bytes sampled) of one file, or None when it has no
        header; remembered per file version, as every sync describes its tables again."""
        key = (type(self.store).__name__, self.store.where, entry.path, entry.etag, entry.size, entry.modified,
               repr(self.options))
        if key in _INFERRED:
            _INFERRED[key] = _INFERRED.pop(key)  # most recently used last
            return _INFERRED[key]
        fmt, gz = file_format(entry.rel)
        with self.store.errors(f"Reading {entry.path}"):
            found = _READERS[fmt][0](self.store, entry, gz, self.options)
        _INFERRED[key] = found
        while len(_INFERRED) > 256:
            _INFERRED.pop(next(iter(_INFERRED)))
        return found

    def _schema(self, stream: StreamRef) -> pa.Schema:
        if stream.qualified not in self._schemas:
            self._describe(stream.qualified, self._files(stream))
        return self._schemas[stream.qualified]

    def sample(self, stream: StreamRef, limit: int) -> list[dict[str, Any]]:
        from esg_workbench.connectors.sql import json_safe

        schema = self._schema(stream)
        out: list[dict[str, Any]] = []
        for entry in self._files(stream):
            if len(out) >= limit:
                break
            try:
                for batch in self._read_entry(entry, schema, entry.modified, None, limit=limit - len(out)):
                    out += batch.slice(0, limit - len(out)).to_pylist()
                    if len(out) >= limit:
                        break
            except BadFile:
                continue  # a broken file shows in its chunk; the sample shows the others
        return [{k: json_safe(v) for k, v in row.items()} for row in out]

    # --- planning ------------------------------------------------------------------------------

    def cursor_max(self, stream: StreamRef, cursor_field: str) -> Any:
        self._check_cursor(cursor_field)
        return max((e.modified for e in self._files(stream)), default=None)

    def null_cursor_count(self, stream: StreamRef, cursor_field: str) -> int:
        return 0

    def count(self, stream: StreamRef, scope: ReadScope | None = None) -> int:
        info = self._describe(stream.qualified, self._files(stream))
        return info.row_estimate or 0

    @staticmethod
    def _check_cursor(cursor_field: str | None) -> None:
        if cursor_field not in (None, MODIFIED):
            raise ConfigError(
                f"File sources track changes by each file's modification time ({MODIFIED}), "
                f"not by a column such as '{cursor_field}'.",
                hint="Clear the connector's cursor_field.")

    @staticmethod
    def _file_key(entry: FileEntry, key: tuple[str, ...]) -> tuple:
        values = []
        for column in key:
            if column == MODIFIED:
                values.append(entry.modified)
            elif column == FILE:
                values.append(entry.path)
            else:
                break
        return tuple(values)

    def plan_chunks(self, stream: StreamRef, scope: ReadScope, settings) -> tuple[list[ChunkRange], Any]:
        """One chunk per file, in key order, within the sync's scope."""
        from esg_workbench.sync.planner import Sizing

        self._check_cursor(scope.cursor_field)
        if FILE not in scope.key or any(k not in (MODIFIED, FILE, ROW) for k in scope.key):
            raise ConfigError(f"{stream.qualified}: files are read in the order of {MODIFIED} and {FILE}.",
                              hint="Clear the connector's cursor_field.")
        keys = []
        for entry in self._files(stream):
            if entry.size == 0:
                continue  # nothing to land
            if scope.cursor_max is not None and MODIFIED in scope.key and entry.modified > scope.cursor_max:
                continue  # changed after the sync started: the next sync reads it
            k = self._file_key(entry, scope.key)
            if self._after(k, scope):
                keys.append(k)
        keys.sort()
        ranges = [ChunkRange(k, keys[i + 1] if i + 1 < len(keys) else None) for i, k in enumerate(keys)]
        return ranges, Sizing(chunk_size=0, window=None)  # chunk_size 0: a file per chunk

    @staticmethod
    def _after(k: tuple, scope: ReadScope) -> bool:
        after = scope.after
        if after is None:
            return True
        if len(after) > len(k):  # the checkpoint is a file's last row: that file is landed
            return k > tuple(after[:len(k)])
        head = k[:len(after)]
        return head > tuple(after) or (scope.after_inclusive and head == tuple(after))

    # --- reading ---------------------------------------------------------------------------------

    def read(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange,
             cancel: CancelToken | None = None) -> Iterator[pa.RecordBatch]:
        """The rows of the chunk's file, as the file is now (see the module docstring)."""
        if chunk.lower is None or FILE not in scope.key:
            raise ConfigError(f"{stream.qualified}: this chunk {chunk.describe()} names no file; "
                              "start a new sync to plan the table again.")
        path = chunk.lower[scope.key.index(FILE)]
        planned = chunk.lower[scope.key.index(MODIFIED)] if MODIFIED in scope.key else None
        schema = self._schema(stream)
        with self.store.errors(f"Reading {path}"):
            entry = self.store.stat(path)
        if entry is None:
            return  # deleted since the sync was planned: nothing of it to land
        stamp = planned if planned is not None else entry.modified
        columns = list(scope.columns)
        for batch in self._read_entry(entry, schema, stamp, cancel):
            yield batch.select([c for c in columns if c in batch.schema.names]) if columns else batch

    def _read_entry(self, entry: FileEntry, schema: pa.Schema, stamp: dt.datetime,
                    cancel: CancelToken | None, limit: int | None = None) -> Iterator[pa.RecordBatch]:
        """The file's batches with their lineage; `limit` lets a sample stop early."""
        fmt, gz = file_format(entry.rel)
        reader = _READERS[fmt][1]
        row = 0
        with self.store.errors(f"Reading {entry.path}"):
            for item in reader(self.store, entry, gz, self.options, schema, cancel, limit=limit):
                if isinstance(item, tuple):  # Excel: rows keep their sheet positions
                    batch, positions = item
                    rows = pa.array(positions, pa.int64())
                else:
                    batch = item
                    rows = pa.array(range(row + 1, row + 1 + batch.num_rows), pa.int64())
                row += batch.num_rows
                yield _lineage(batch, rows, entry, stamp)

    def close(self) -> None:
        self.store.close()
