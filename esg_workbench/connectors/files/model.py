"""Files, stores, table names and reading options: the parts every format shares."""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import re
from typing import Any, BinaryIO

import pyarrow as pa

from esg_workbench.connectors.registry import FILE_TABLE_OPTIONS
from esg_workbench.core.errors import ConfigError, SourceError
from esg_workbench.core.specs import ConnectorSpec

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
READ_OPTIONS = ("pattern", "sheet", "header_row", "delimiter", "encoding", "column_types",
                "decimal", "thousands", "date_format", "skip_footer")
#: of those, the ones that may also be set per table, as "TABLE.option"
TABLE_OPTIONS = FILE_TABLE_OPTIONS

_FORMATS = {
    ".csv": "csv", ".tsv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".xlsx": "xlsx", ".xlsm": "xlsx",
}
_GZIP_OK = {"csv", "jsonl"}
#: a totals row: its first filled cell is one of these words, alone; up to TOTALS_ROWS
#: such rows at the end of a CSV file or a sheet are skipped (and the run says so)
TOTALS = re.compile(r"^\s*(?:grand\s+|sub\s*)?(?:total|totals|sum|summe|gesamt|gesamtsumme|insgesamt|"
                    r"totaal|somme|suma|totale|summa)\s*[:.]?\s*$", re.I)
TOTALS_ROWS = 2
_DATE_SUFFIX = re.compile(
    r"^(?P<base>.*?\S)[\s_\-.]+"
    r"(?:19|20)\d{2}(?:[\-_.]?(?:0[1-9]|1[0-2]|[qQ][1-4]|[hH][12]))?(?:[\-_.]?(?:0[1-9]|[12]\d|3[01]))?$"
)
_PARTITION_FOLDER = re.compile(r"^[^=/]+=")
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


def is_ignored(rel: str) -> bool:
    parts = rel.split("/")
    return any(p.startswith(".") for p in parts) or parts[-1].startswith("~$") or not parts[-1]


def table_name(rel: str, root_name: str) -> str:
    """The table a file belongs to (see the module docstring)."""
    parts = rel.split("/")
    if len(parts) > 1:
        # key=value folders at the top (year=2024/...): the root itself is one partitioned table
        name = parts[0] if not _PARTITION_FOLDER.match(parts[0]) else root_name
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


_DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_SEPARATORS = {"comma": ",", "point": ".", "dot": ".", "space": " ", "apostrophe": "'", "none": "",
               "nbsp": "\u00a0"}


def _positive(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ConfigError(f"{name} must be a whole number from 1, not '{value}'.")
    return number


@dataclasses.dataclass(frozen=True)
class FileOptions:
    """The reading options of a connector, or of one of its tables (see for_table)."""

    pattern: str | None = None
    sheet: str | None = None
    header_row: int | None = None
    delimiter: str | None = None
    encoding: str | None = None  # None: detected (BOM, UTF-8, else Windows-1252 with a warning)
    column_types: dict = dataclasses.field(default_factory=dict)
    decimal: str | None = None  # None: detected per column where unambiguous
    thousands: str | None = None
    date_format: str | None = None
    skip_footer: int = 0
    #: per-table options as given ("energy.decimal" -> {"energy": {"decimal": ","}})
    tables: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_spec(cls, spec: ConnectorSpec) -> "FileOptions":
        tables: dict[str, dict[str, Any]] = {}
        for key, value in spec.options.items():
            table, dot, option = str(key).rpartition(".")
            if dot and table and option in TABLE_OPTIONS and value not in (None, ""):
                tables.setdefault(table, {})[option] = value
        base = cls._parse({k: spec.option(k) for k in READ_OPTIONS})
        for table, values in tables.items():
            cls._parse(values, f"{table}.")  # refuse a bad per-table option now, not at the first read
        return dataclasses.replace(base, tables=tables)

    def for_table(self, table: str) -> "FileOptions":
        """These options with the table's own ("TABLE.option") over the connector's."""
        own = self.tables.get(table)
        if not own:
            return self
        changed = self._parse(own, f"{table}.")
        values = {f.name: getattr(changed, f.name) for f in dataclasses.fields(self) if f.name in own}
        return dataclasses.replace(self, **values)

    @classmethod
    def _parse(cls, options: dict[str, Any], prefix: str = "") -> "FileOptions":
        def get(name: str) -> Any:
            value = options.get(name)
            return None if value in (None, "") else value

        header_row = get("header_row")
        if header_row is not None:
            header_row = _positive(header_row, f"{prefix}header_row")
        delimiter = get("delimiter")
        if delimiter is not None:
            delimiter = _DELIMITERS.get(str(delimiter).lower(), str(delimiter))
            if len(delimiter) != 1:
                raise ConfigError(f"{prefix}delimiter must be one character (or tab), not '{get('delimiter')}'.")
        encoding = get("encoding")
        if encoding is not None:
            encoding = str(encoding)
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise ConfigError(f"{prefix}encoding '{encoding}' is not known; write e.g. utf-8, cp1252, "
                                  "latin-1 or utf-16.") from None
        decimal, thousands = get("decimal"), get("thousands")
        if decimal is not None:
            decimal = _SEPARATORS.get(str(decimal).lower(), str(decimal))
            if decimal not in (",", "."):
                raise ConfigError(f"{prefix}decimal must be , or . (the decimal separator), not '{decimal}'.")
        if thousands is not None:
            thousands = _SEPARATORS.get(str(thousands).lower(), str(thousands))
            if thousands not in ("", ".", ",", " ", "'", "\u00a0", "\u202f"):
                raise ConfigError(f"{prefix}thousands must be . , ' or a space (or none), not '{thousands}'.")
            if thousands and thousands == decimal:
                raise ConfigError(f"{prefix}thousands and decimal cannot both be '{thousands}'.")
        date_format = get("date_format")
        if date_format is not None:
            date_format = str(date_format)
            try:
                dt.datetime.strptime(dt.datetime(2024, 12, 31, 13, 45, 6).strftime(date_format), date_format)
            except ValueError:
                raise ConfigError(f"{prefix}date_format '{date_format}' is not a date format; write e.g. "
                                  "%d.%m.%Y or %d/%m/%Y %H:%M.") from None
            if "%" not in date_format:
                raise ConfigError(f"{prefix}date_format '{date_format}' has no % fields; write e.g. %d.%m.%Y.")
        skip_footer = get("skip_footer")
        sheet = get("sheet")
        return cls(
            pattern=get("pattern"), sheet=None if sheet is None else str(sheet),
            header_row=header_row, delimiter=delimiter, encoding=encoding,
            column_types=parse_column_types(get("column_types")),
            decimal=decimal, thousands=thousands, date_format=date_format,
            skip_footer=0 if skip_footer is None or str(skip_footer) == "0" else _positive(skip_footer, f"{prefix}skip_footer"),
        )


@dataclasses.dataclass
class Sample:
    """What a reader made of a file's first part: its columns and types (text formats in
    the fields' metadata), rows and bytes sampled, and what it noticed on the way."""

    schema: pa.Schema
    rows: int
    sampled: int
    notes: tuple[str, ...] = ()
