"""The Connector protocol over a FileStore: listing, describing, planning a chunk per
file, reading a file with its lineage (see the package docstring)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import threading
from typing import Any, Iterator

import pyarrow as pa

from esg_workbench.connectors.files import csv_reader, jsonl_reader, parquet_reader, xlsx_reader
from esg_workbench.connectors.files.columns import merge_types, normalize_type, type_family
from esg_workbench.connectors.files.formats import TextFormat
from esg_workbench.connectors.files.model import (
    ETAG,
    FILE,
    INFER_FILES,
    LINEAGE_COLUMNS,
    MODIFIED,
    ROW,
    TIMESTAMP,
    BadFile,
    FileEntry,
    FileOptions,
    FileStore,
    Sample,
    is_ignored,
    file_format,
)
from esg_workbench.connectors.files.tables import TableFiles, group, partition_array, partition_columns
from esg_workbench.core.errors import ConfigError, EsgError, PermissionDenied, TableMissing
from esg_workbench.core.specs import (
    CancelToken,
    ChunkRange,
    ColumnInfo,
    ConnectorSpec,
    ReadScope,
    StreamRef,
    TableInfo,
)

#: a reader per format: infer(store, entry, gz, options) -> Sample | None, and
#: read(store, entry, gz, options, schema, cancel, limit, notes) -> batches
READERS = {"csv": csv_reader, "parquet": parquet_reader, "jsonl": jsonl_reader, "xlsx": xlsx_reader}


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


#: inferred file samples and workbook sheets by file version (see FileConnector._cached)
_INFERRED: dict[tuple, Any] = {}


@dataclasses.dataclass
class _Described:
    file_schema: pa.Schema  # the columns in the files
    partitions: dict[str, pa.DataType]  # key=value folder columns, after them
    estimate: int | None
    notes: list[str]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(list(self.file_schema) + [pa.field(k, t) for k, t in self.partitions.items()])


class FileConnector:
    """The Connector protocol over a FileStore (see the package docstring)."""

    #: files have no schemas: table names are taken whole
    schema = None

    def __init__(self, spec: ConnectorSpec, store: FileStore):
        self.spec = spec
        self.store = store
        self.options = FileOptions.from_spec(spec)
        self._listing: list[FileEntry] | None = None
        self._tables: dict[str, TableFiles] | None = None
        self._ignored = 0
        self._described: dict[str, _Described] = {}
        #: tables that could not be described, with their error (discovery lists them)
        self.unreadable: dict[str, str] = {}
        self._notes_lock = threading.Lock()
        self._run_notes: dict[str, list[str]] = {}
        self._read_empty: dict[str, set[str]] = {}

    # --- listing ------------------------------------------------------------------------

    def _entries(self, refresh: bool = False) -> list[FileEntry]:
        """Table files below the root. Listed once per connector instance (one sync or
        discovery), so a sync's plan and its upper bound come from the same listing."""
        if self._listing is None or refresh:
            with self.store.errors(f"Listing the files of {self.store.where}"):
                found = self.store.list()
            keep, ignored = [], 0
            for entry in found:
                if is_ignored(entry.rel) or file_format(entry.rel) is None or (
                        self.options.pattern and not fnmatch.fnmatch(entry.rel, self.options.pattern)):
                    ignored += 1
                    continue
                keep.append(entry)
            self._listing, self._ignored, self._tables = keep, ignored, None
        return self._listing

    def _groups(self) -> dict[str, TableFiles]:
        if self._tables is None:
            self._tables = group(self._entries(), self.store.root_name, self._sheets_of)
        return self._tables

    def _sheets_of(self, entry: FileEntry, table: str) -> list[str]:
        """The sheets of a root workbook that hold tables, unless a sheet is chosen."""
        options = self.options.for_table(table)
        if options.sheet:
            return []
        try:
            return self._cached("sheets", entry, options, lambda: xlsx_reader.sheet_tables(self.store, entry, options))
        except EsgError:
            return []  # a damaged workbook is one table, whose chunk says what is wrong

    def _table(self, stream: StreamRef) -> TableFiles:
        table = self._groups().get(stream.qualified)
        if table is None or not table.files:
            raise TableMissing(f"No files of table {stream.qualified} under {self.store.where} (any more).",
                               hint="The files may have been moved or deleted. Re-discover the connector.")
        return table

    def _files(self, stream: StreamRef) -> list[FileEntry]:
        return self._table(stream).files

    def _options(self, table: TableFiles) -> FileOptions:
        options = self.options.for_table(table.name)
        return dataclasses.replace(options, sheet=table.sheet) if table.sheet else options

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
        """Every table asked for. A table none of whose first files can be read is described
        by its lineage columns alone, its error kept in `unreadable` (and noted for the
        run): it stays in the sync's scope, its files are planned and fail their chunks
        with their own errors (so Retry failed chunks retries them), and it heals when they
        are fixed, without a new discovery."""
        groups = self._groups()
        names = sorted(groups) if streams is None else [s.qualified for s in streams]
        infos = []
        for name in names:
            if not groups.get(name):
                continue
            try:
                infos.append(self._describe(groups[name]))
            except (BadFile, PermissionDenied, TableMissing) as exc:  # this table's own trouble
                self.unreadable[name] = exc.describe()
                self._note(name, [f"its files could not be read: {exc.describe()}"])
                infos.append(self._info(name, [], None))
        return infos

    def notes(self, table: str) -> list[str]:
        """What discovery noticed about a table: encodings, header rows, number and date
        formats, name clashes, partition columns."""
        found = self._described.get(table)
        return list(found.notes) if found else []

    def _info(self, name: str, columns: list[ColumnInfo], estimate: int | None) -> TableInfo:
        return TableInfo(
            stream=StreamRef(None, name), columns=columns + list(LINEAGE_INFO), primary_key=[FILE, ROW],
            row_estimate=estimate, cursor_field=MODIFIED, replace_key=[FILE],
        )

    def _describe(self, table: TableFiles) -> TableInfo:
        found = self._infer(table)
        self._described[table.name] = found
        columns = [ColumnInfo(f.name, str(f.type), True, False, type_family(f.type)) for f in found.schema]
        return self._info(table.name, columns, found.estimate)

    def _infer(self, table: TableFiles) -> _Described:
        """The table's columns from its first readable files in path order (which stays
        the same when files are added or changed, so a table keeps its types)."""
        options = self._options(table)
        samples: list[Sample] = []
        first_error: EsgError | None = None
        rows = sampled = tried = 0
        for entry in sorted(table.files, key=lambda e: e.path):
            if len(samples) >= INFER_FILES or tried >= INFER_FILES + 5:
                break
            if entry.size == 0:
                continue
            tried += 1
            try:
                found = self._infer_file(entry, options)
            except BadFile as exc:
                first_error = first_error or exc
                continue
            if found is None:
                continue
            if samples and set(found.schema.names) != set(samples[0].schema.names):
                continue  # a file of another shape fails when it is read, with its columns named
            samples.append(found)
            rows += found.rows
            sampled += found.sampled
        if not samples:
            if first_error is not None:
                raise first_error
            raise BadFile(f"Table {table.name} has no file with a header line under {self.store.where}.")
        fields = []
        for first in samples[0].schema:
            type_ = first.type
            for other in samples[1:]:
                type_ = merge_types(type_, other.schema.field(first.name).type)
            override = options.column_types.get(first.name)
            fmt = TextFormat.of(first)
            meta = fmt.to_meta() if fmt is not None and (override is not None or type_ == first.type) else None
            fields.append(pa.field(first.name, override if override is not None else normalize_type(type_),
                                   metadata=meta))
        notes = [] if table.note is None else [table.note]
        for sample in samples:
            notes += [n for n in sample.notes if n not in notes]
        keys = self._partition_keys(table, samples[0].schema.names, options)
        if keys:
            notes.append("columns from key=value folders: " + ", ".join(f"{k} ({type_family(t)})" for k, t in keys.items()))
        total = sum(e.size for e in table.files)
        estimate = int(rows * total / sampled) if sampled else None
        return _Described(pa.schema(fields), keys, estimate, notes)

    def _cached(self, what: str, entry: FileEntry, options: FileOptions, compute):
        """`compute()` remembered per file version and options, as every sync describes
        its tables again."""
        key = (what, type(self.store).__name__, self.store.where, entry.path, entry.etag, entry.size,
               entry.modified, repr(options))
        if key in _INFERRED:
            _INFERRED[key] = _INFERRED.pop(key)  # most recently used last
            return _INFERRED[key]
        with self.store.errors(f"Reading {entry.path}"):
            found = compute()
        _INFERRED[key] = found
        while len(_INFERRED) > 256:
            _INFERRED.pop(next(iter(_INFERRED)))
        return found

    def _infer_file(self, entry: FileEntry, options: FileOptions) -> Sample | None:
        """What one file says of its table's columns, or None when it has no header."""
        fmt, gz = file_format(entry.rel)
        return self._cached("sample", entry, options, lambda: READERS[fmt].infer(self.store, entry, gz, options))

    def _table_described(self, stream: StreamRef) -> tuple[TableFiles, _Described]:
        table = self._table(stream)
        if stream.qualified not in self._described:
            self._describe(table)
        return table, self._described[stream.qualified]

    def sample(self, stream: StreamRef, limit: int) -> list[dict[str, Any]]:
        from esg_workbench.connectors.sql import json_safe

        try:
            table, described = self._table_described(stream)
        except (BadFile, PermissionDenied):
            return []  # an unreadable table has no rows to show; discovery lists its error
        out: list[dict[str, Any]] = []
        for entry in table.files:
            if len(out) >= limit:
                break
            try:
                for batch in self._read_entry(table, described, entry, entry.modified, None, limit=limit - len(out)):
                    out += batch.slice(0, limit - len(out)).to_pylist()
                    if len(out) >= limit:
                        break
            except BadFile:
                continue  # a broken file shows in its chunk; the sample shows the others
        return [{k: json_safe(v) for k, v in row.items()} for row in out]

    # --- what a sync should hear about ------------------------------------------------------------

    def current_files(self) -> dict[str, dict[str, int]]:
        """{table: {file: size}} as listed now."""
        return {name: {e.path: e.size for e in table.files} for name, table in self._groups().items()}

    def listed_files(self, table: str) -> dict[str, tuple[int, dt.datetime]]:
        """{file: (size, modification time)} of a table as listed now ({} when it has none)."""
        found = self._groups().get(table)
        return {e.path: (e.size, e.modified) for e in found.files} if found else {}

    def run_notes(self, table: str) -> list[str]:
        """Warnings of the files read for a table since the connector was opened."""
        with self._notes_lock:
            return list(self._run_notes.get(table, []))

    def files_read_empty(self, table: str) -> list[str]:
        """The files of a table read to their end since the connector was opened that
        held no data row (emptied down to their header): their chunks land nothing, so
        the rows they held before are marked deleted after the load (sync/deletes.py)."""
        with self._notes_lock:
            return sorted(self._read_empty.get(table, ()))

    def _note(self, table: str, notes: list[str]) -> None:
        with self._notes_lock:
            known = self._run_notes.setdefault(table, [])
            known += [n for n in notes if n not in known]

    # --- planning ------------------------------------------------------------------------------

    def cursor_max(self, stream: StreamRef, cursor_field: str) -> Any:
        self._check_cursor(cursor_field)
        return max((e.modified for e in self._files(stream)), default=None)

    def null_cursor_count(self, stream: StreamRef, cursor_field: str) -> int:
        return 0

    def count(self, stream: StreamRef, scope: ReadScope | None = None) -> int:
        info = self._describe(self._table(stream))
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
        """The rows of the chunk's file, as the file is now (see the package docstring)."""
        if chunk.lower is None or FILE not in scope.key:
            raise ConfigError(f"{stream.qualified}: this chunk {chunk.describe()} names no file; "
                              "start a new sync to plan the table again.")
        path = chunk.lower[scope.key.index(FILE)]
        planned = chunk.lower[scope.key.index(MODIFIED)] if MODIFIED in scope.key else None
        with self.store.errors(f"Reading {path}"):
            entry = self.store.stat(path)
        if entry is None:
            return  # deleted since the sync was planned (with its table, maybe): nothing of it to land
        table = self._table(stream)
        entry = dataclasses.replace(entry, rel=next((e.rel for e in table.files if e.path == path), entry.rel))
        try:
            table, described = self._table_described(stream)
        except (BadFile, PermissionDenied):  # no first file reads: this one is read as it is, or says why not
            described = self._described_by(table, entry)
        stamp = planned if planned is not None else entry.modified
        # a table planned while none of its files could be read has only lineage columns
        # in its scope: its columns come from the file, and the landing adds them
        columns = list(scope.columns) if not set(scope.columns) <= set(LINEAGE_COLUMNS) else []
        rows = 0
        for batch in self._read_entry(table, described, entry, stamp, cancel):
            rows += batch.num_rows
            yield batch.select([c for c in columns if c in batch.schema.names]) if columns else batch
        with self._notes_lock:  # read to its end: does it still hold rows?
            empty = self._read_empty.setdefault(stream.qualified, set())
            (empty.add if not rows else empty.discard)(path)

    def _described_by(self, table: TableFiles, entry: FileEntry) -> _Described:
        """A table's columns from one file alone (its own error when it cannot be read)."""
        options = self._options(table)
        sample = self._infer_file(entry, options)
        if sample is None:
            raise BadFile(f"{entry.path} has no header line.")
        schema = pa.schema([pa.field(f.name, options.column_types.get(f.name, normalize_type(f.type)),
                                     metadata=f.metadata) for f in sample.schema])
        return _Described(schema, self._partition_keys(table, schema.names, options), None, list(sample.notes))

    @staticmethod
    def _partition_keys(table: TableFiles, names: list[str], options: FileOptions) -> dict[str, pa.DataType]:
        """The key=value folder columns of a table whose files hold columns `names`."""
        taken = {n.lower() for n in names}  # a file's own column wins (names ignore case)
        return {k: options.column_types.get(k, t) for k, t in partition_columns(table.files).items()
                if k.lower() not in taken and not k.lower().startswith("_esg_")}

    def _read_entry(self, table: TableFiles, described: _Described, entry: FileEntry, stamp: dt.datetime,
                    cancel: CancelToken | None, limit: int | None = None) -> Iterator[pa.RecordBatch]:
        """The file's batches with their partition columns and lineage; `limit` lets a
        sample stop early."""
        fmt, gz = file_format(entry.rel)
        row = 0
        notes: list[str] = []
        with self.store.errors(f"Reading {entry.path}"):
            for item in READERS[fmt].read(self.store, entry, gz, self._options(table), described.file_schema, cancel,
                                          limit=limit, notes=notes):
                if isinstance(item, tuple):  # Excel: rows keep their sheet positions
                    batch, positions = item
                    rows = pa.array(positions, pa.int64())
                else:
                    batch = item
                    rows = pa.array(range(row + 1, row + 1 + batch.num_rows), pa.int64())
                row += batch.num_rows
                for key, type_ in described.partitions.items():
                    batch = batch.append_column(key, partition_array(entry, key, type_, batch.num_rows))
                yield _lineage(batch, rows, entry, stamp)
        if notes and limit is None:
            self._note(table.name, notes)

    def close(self) -> None:
        self.store.close()
