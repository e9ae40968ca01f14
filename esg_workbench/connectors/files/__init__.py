"""The file model shared by local folders, Amazon S3 and Azure Blob Storage.

Modules: model (files, stores, options), tables (which files form which table), text
(encodings, byte streams), formats (local number and date formats), columns (names and
types), a reader per format (csv_reader, jsonl_reader, parquet_reader, xlsx_reader, each
with infer() and read()), and connector (the Connector protocol: describe, plan, read).

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
    Dots in names become underscores. A file directly in the root whose table name is also
    a folder's (``readings.xlsx`` beside ``readings/``) is a table of its own named after
    its type as well (``readings_xlsx``). A workbook directly in the root with several
    sheets that hold a table (a header of two or more columns with rows below it) is one
    table per sheet, named ``workbook / sheet``, unless the option ``sheet`` picks one.
    Folders named ``key=value`` (Hive-style partitions, ``year=2024/month=01``) add their
    keys as columns: whole numbers, ISO dates, else text. Hidden files (``.x``), Excel lock files (``~$x``),
    folder markers and files of other types are ignored; the option ``pattern`` (a glob
    over the path below the root, e.g. ``*.csv``) narrows the files further.

Formats (by extension)
    CSV (``.csv``, ``.tsv``), Parquet (``.parquet``, ``.pq``), JSON lines (``.jsonl``,
    ``.ndjson``, ``.json``: one object per line) and Excel (``.xlsx``, ``.xlsm``); CSV and
    JSON lines may be gzip-compressed (``.csv.gz``, ``.jsonl.gz``). CSV: the delimiter is
    sniffed from the first lines (``,`` ``;`` tab ``|``) unless the option ``delimiter``
    says. The encoding is a BOM's (UTF-8, UTF-16, UTF-32), else the option ``encoding``,
    else UTF-8 when the bytes are UTF-8 (UTF-16 when they look like it), else Windows-1252
    with a warning in the run; text never lands as bytes. The header is the first line as
    wide as most lines below it (title lines above it are skipped), or ``header_row``
    (1-based). Totals rows at the end (first filled cell ``Total``, ``Sum``, ``Summe``,
    ``Gesamt``...) are skipped and the run says so; ``skip_footer`` drops more last lines.
    Text columns whose every value reads as a number or date in one local format only
    (``1.234,56``, ``1,234.56``, ``31.12.2024``, ``12/31/2024 13:45``) are read so; the
    options ``decimal``, ``thousands`` and ``date_format`` settle the rest. JSON lines:
    a field whose values are of several types is text (or ``column_types``'s type).
    Reading options may be set per table as ``TABLE.option`` (e.g. ``energy.decimal``). Excel: the sheet named by the option ``sheet`` (a name or a
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
    replaces all its earlier rows (the table's ``replace_key`` is ``_esg_file``). After
    every delta load the rows of a file deleted from the source, emptied to 0 bytes, or
    read without a data row (emptied down to its header: ``files_read_empty``) are marked
    ``_esg_deleted_at`` (sync/deletes.py, from ``listed_files``); a full load leaves them
    out. A sync says which files are
    new, deleted or emptied since the last landing, which tables under the root it left
    out (never discovered), and that a table whose files are all gone has nothing to read
    (sync/file_changes.py). A table none of whose first files can be read is described by
    its lineage columns alone (``unreadable`` holds why): its files are still planned, and
    each fails or lands on its own. S3 and Azure give modification times in
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

from esg_workbench.connectors.files.columns import (  # noqa: F401 (the package's names)
    check_columns,
    clean_names,
    conform,
    merge_types,
    normalize_type,
    type_family,
    value_misfit,
)
from esg_workbench.connectors.files.connector import LINEAGE_INFO, READERS, FileConnector  # noqa: F401
from esg_workbench.connectors.files.model import (  # noqa: F401
    ETAG,
    FILE,
    LINEAGE_COLUMNS,
    MODIFIED,
    READ_OPTIONS,
    ROW,
    TABLE_OPTIONS,
    BadFile,
    FileEntry,
    FileOptions,
    FileStore,
    file_format,
    parse_column_types,
    table_name,
)
