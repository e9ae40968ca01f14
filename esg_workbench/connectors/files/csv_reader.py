"""CSV (and TSV): encoding, delimiter, header row, local number and date formats, and
totals rows at the end, then Arrow's CSV reader for the rows."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections import Counter
from typing import Iterator

import pyarrow as pa

from esg_workbench.connectors.files import formats
from esg_workbench.connectors.files.columns import clean_names, conform, check_columns, value_misfit
from esg_workbench.connectors.files.model import (
    CSV_BLOCK,
    INFER_BYTES,
    BadFile,
    FileEntry,
    FileOptions,
    FileStore,
    TOTALS,
    TOTALS_ROWS,
    Sample,
)
from esg_workbench.connectors.files.text import (
    Encoding,
    HoldLastLines,
    Replay,
    Utf8Stream,
    detect_encoding,
    not_in_encoding,
    read_head,
    sequential,
)

_DELIMITERS = (",", ";", "\t", "|")
#: lines of a file looked at for its delimiter and header row
HEAD_LINES = 60


@dataclasses.dataclass
class CsvLayout:
    names: list[str]
    delimiter: str
    skip: int  # lines above the data (preamble and header)
    encoding: Encoding
    found_header: bool = False  # the header row was detected below line 1


def _records(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """(last line of the record, record) of the complete lines of a head."""
    if "\n" in text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # the last line may be cut
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    out = []
    try:
        for record in reader:
            out.append((reader.line_num, record))
    except csv.Error:
        pass
    return out


def _widths(records: list[tuple[int, list[str]]]) -> Counter:
    return Counter(len(r) for _, r in records if any(c.strip() for c in r))


def sniff_delimiter(text: str, path: str) -> str:
    """The delimiter that splits the most lines into the same number (above one) of values."""
    if path.lower().endswith((".tsv", ".tsv.gz")):
        return "\t"
    best, score = ",", (False, 0, 0)
    for delimiter in _DELIMITERS:
        widths = _widths(_records(text, delimiter))
        if not widths:
            continue
        width, count = max(widths.items(), key=lambda wc: (wc[0] > 1, wc[1], wc[0]))
        candidate = (width > 1, count, width)
        if candidate > score:
            best, score = delimiter, candidate
    return best


def _header_at(records: list[tuple[int, list[str]]]) -> int:
    """The index of the header among a head's records: the first, not all numbers, that
    has as many filled cells as most rows, or as many values as most rows with more than
    half of them filled. Title lines above it ("Report", "Mandant: 100;;;") fill fewer."""
    counts = Counter(sum(1 for c in r if c.strip()) for _, r in records)
    counts.pop(0, None)
    widths = _widths(records)
    if not counts or not widths:
        return 0
    usual = max(counts.items(), key=lambda fc: (fc[1], fc[0]))[0]
    width = max(widths.items(), key=lambda wc: (wc[1], wc[0]))[0]
    for i, (_, record) in enumerate(records):
        filled = [c for c in record if c.strip()]
        wide = len(filled) >= usual or (len(record) >= width and len(filled) * 2 > width)
        if filled and wide and not all(re.fullmatch(r"[\d.,\s+-]+", c) for c in filled):
            return i
    return 0


def layout_of(head: bytes, complete: bool, entry: FileEntry, options: FileOptions) -> CsvLayout | None:
    encoding = detect_encoding(head, entry.path, options.encoding, complete)
    text = head[encoding.bom:].decode(encoding.name, errors="replace")
    lines = (options.header_row or 0) + HEAD_LINES
    cut = -1
    for _ in range(lines):  # the layout is told from the first lines, not the whole MiB
        cut = text.find("\n", cut + 1)
        if cut < 0:
            break
    if cut >= 0:
        text = text[:cut + 1]
    if options.header_row:
        lines = text.splitlines()
        if len(lines) < options.header_row or not lines[options.header_row - 1].strip():
            return None  # nothing at the header line
        delimiter = options.delimiter or sniff_delimiter(lines[options.header_row - 1], entry.path)
        records = _records(text, delimiter)
        index = next((i for i, (end, _) in enumerate(records) if end >= options.header_row), None)
        if index is None:
            return None
        end, header = records[index]
        return CsvLayout(_names(header, records[index + 1:]), delimiter, end, encoding)
    if not text.strip():
        return None  # an empty file
    delimiter = options.delimiter or sniff_delimiter(text, entry.path)
    records = _records(text if "\n" in text else text + "\n", delimiter)
    records = [(end, r) for end, r in records if any(c.strip() for c in r)]
    if not records:
        return None
    index = _header_at(records)
    end, header = records[index]
    return CsvLayout(_names(header, records[index + 1:]), delimiter, end, encoding, found_header=end > 1)


def _names(header: list[str], rows: list[tuple[int, list[str]]]) -> list[str]:
    """The header's names, and names by position for values past its end that most rows
    have (rows that end in a delimiter the header does not have)."""
    widths = _widths(rows)
    width = max(widths.items(), key=lambda wc: (wc[1], wc[0]))[0] if widths else 0
    return clean_names(header + [""] * (width - len(header)))


def _is_totals(line: bytes, delimiter: str) -> bool:
    try:
        record = next(csv.reader([line.decode("utf-8", errors="replace").rstrip("\r")], delimiter=delimiter))
    except (csv.Error, StopIteration):
        return False
    filled = [c for c in record if c.strip()]
    return bool(filled) and bool(TOTALS.match(filled[0]))


class _Footer:
    """Drops the last `skip_footer` lines and then totals rows, and says what it dropped."""

    def __init__(self, entry: FileEntry, layout: CsvLayout, options: FileOptions):
        self.entry, self.layout, self.options = entry, layout, options
        self.note: str | None = None

    @property
    def keep(self) -> int:
        return self.options.skip_footer + TOTALS_ROWS

    def __call__(self, lines: list[bytes]) -> int:
        n = min(self.options.skip_footer, len(lines))
        totals = 0
        while totals < TOTALS_ROWS and n + totals < len(lines) and \
                _is_totals(lines[len(lines) - n - totals - 1], self.layout.delimiter):
            totals += 1
        if totals:
            shown = "; ".join(repr(line.decode("utf-8", errors="replace").strip())
                              for line in lines[len(lines) - n - totals:len(lines) - n])
            self.note = f"{self.entry.path}: skipped the totals row at its end ({shown[:200]})."
        if n:
            self.note = ((self.note + " ") if self.note else f"{self.entry.path}: ") + \
                f"skipped its last {n} line{'s' if n > 1 else ''} (skip_footer)."
        return n + totals


def _open(store: FileStore, entry: FileEntry, gz: bool, options: FileOptions):
    """(UTF-8 stream positioned at the file's start, layout, footer), or None for an
    empty file."""
    raw = sequential(store, entry, gz)
    try:
        # the encoding is told from the first MiB: what Arrow's types are inferred from
        head, complete = read_head(raw, (options.header_row or HEAD_LINES) + 1, min_bytes=INFER_BYTES)
        layout = layout_of(head, complete, entry, options)
    except BaseException:
        raw.close()
        raise
    if layout is None:
        raw.close()
        return None
    stream = Replay(head[layout.encoding.bom:], raw) if layout.encoding.is_utf8 \
        else Utf8Stream(Replay(head, raw), layout.encoding, entry.path)
    footer = _Footer(entry, layout, options)
    return HoldLastLines(stream, footer.keep, footer), layout, footer


def _arrow_reader(stream, layout: CsvLayout, types: dict | None, block_size: int):
    import pyarrow.csv as pacsv

    return pacsv.open_csv(
        pa.PythonFile(stream, mode="r"),
        read_options=pacsv.ReadOptions(column_names=layout.names, skip_rows=layout.skip, encoding="utf8",
                                       block_size=block_size),
        parse_options=pacsv.ParseOptions(delimiter=layout.delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types=types or {}, strings_can_be_null=True,
                                             quoted_strings_can_be_null=True),
    )


_CSV_PARSE = re.compile(r"CSV parse error: (?:Row #\d+: )?(.*)", re.S)
_CSV_CONVERT = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to ([^:]+): invalid value '(.*)'", re.S)


def _line_of(store: FileStore, entry: FileEntry, gz: bool, layout: CsvLayout, wrong) -> int | None:
    """The line where the first record for which `wrong(record)` holds starts (read again
    with Python's csv module: only when something is wrong)."""
    try:
        csv.field_size_limit(2**31 - 1)
        raw = store.open(entry)
        if gz:
            import gzip

            raw = gzip.GzipFile(fileobj=raw)
        name = "utf-8-sig" if layout.encoding.is_utf8 else layout.encoding.name
        with io.TextIOWrapper(raw, encoding=name, errors="replace", newline="") as text:
            reader = csv.reader(text, delimiter=layout.delimiter)
            while reader.line_num < layout.skip:
                if next(reader, None) is None:
                    return None
            start = reader.line_num + 1
            for record in reader:
                if wrong(record):
                    return start  # where the record starts (a quoted value may span lines)
                start = reader.line_num + 1
    except Exception:  # the line is a courtesy: the file's own error still stands
        return None
    return None


def _problem(store: FileStore, entry: FileEntry, gz: bool, layout: CsvLayout, exc: Exception,
             schema: pa.Schema | None) -> BadFile:
    """The Arrow error of a CSV file, with the line it is on."""
    message = str(exc).strip()
    if "invalid UTF8" in message or "UTF-8" in message:
        return not_in_encoding(entry.path, layout.encoding)
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
    line = _line_of(store, entry, gz, layout, wrong)
    where = f"{entry.path}, line {line}" if line else entry.path
    if convert:
        name = layout.names[int(convert.group(1))]
        target = schema.field(name).type if schema is not None and name in schema.names else pa.string()
        return value_misfit(where, name, convert.group(3), target)
    detail = parse.group(1) if parse else message.splitlines()[0]
    detail = re.sub(r"^Expected (\d+) columns, got (\d+)", r"expected \1 values, found \2", detail)
    shown = {"\t": "tab"}.get(layout.delimiter, layout.delimiter)
    return BadFile(f"{where}: malformed CSV row: {' '.join(detail.split())[:300]}",
                   hint=f"The header was taken from line {layout.skip} and values split at '{shown}'. Fix the "
                        "file, or set the options header_row and delimiter if those are wrong; then sync again "
                        "(or use Retry failed chunks).")


def _local_formats(text: pa.RecordBatch, inferred: pa.RecordBatch, options: FileOptions) -> tuple[pa.Schema, list[str]]:
    """The inferred schema with text columns that read as local numbers or dates retyped
    (their format in the field's metadata), and what was found, for discovery. A file
    whose numbers elsewhere have decimal commas reads "1.000" as a thousand, not as one."""
    forced = options.decimal is not None or options.thousands is not None or options.date_format is not None
    found: list[str] = []
    detected: dict[str, tuple] = {}

    def values(name: str) -> list:
        return text.column(text.schema.get_field_index(name)).to_pylist()

    for field in inferred.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        if pa.types.is_string(field.type) or pa.types.is_null(field.type) or (forced and numeric):
            result = formats.detect(values(field.name), options)
            if isinstance(result, tuple):
                detected[field.name] = result
            elif result == "ambiguous":
                found.append(f"column '{field.name}' is kept as text: its values read as numbers or dates in more "
                             "than one way (set the options decimal, thousands or date_format)")
    commas = any(f.kind == "number" and f.decimal == "," for f, _ in detected.values())
    if commas and options.decimal is None:
        as_file = dataclasses.replace(options, decimal=",")
        for field in inferred.schema:
            if field.name not in detected and pa.types.is_floating(field.type):
                result = formats.detect(values(field.name), as_file)
                if isinstance(result, tuple):
                    detected[field.name] = result
    fields = []
    for field in inferred.schema:
        if field.name in detected:
            fmt, type_ = detected[field.name]
            fields.append(pa.field(field.name, type_, metadata=fmt.to_meta()))
            found.append(f"column '{field.name}': {fmt.describe()}")
        else:
            fields.append(field)
            if pa.types.is_floating(field.type) and not forced and _three_decimals(values(field.name)):
                found.append(f"column '{field.name}' is read with a decimal point (1.000 is one); if its points "
                             "separate thousands, set the option thousands=.")
    return pa.schema(fields), found


def _three_decimals(values: list) -> bool:
    filled = [v.strip() for v in values if v and v.strip()]
    return bool(filled) and all(re.fullmatch(r"[+-]?\d{1,3}\.\d{3}", v) for v in filled)


def infer(store, entry, gz, options) -> Sample | None:
    opened = _open(store, entry, gz, options)
    if opened is None:
        return None
    stream, layout, footer = opened
    try:
        data = stream.read(INFER_BYTES)
        more = bool(stream.read(1))
    finally:
        stream.close()
    if more:
        data = data[:data.rfind(b"\n") + 1]
    try:
        inferred = _arrow_reader(io.BytesIO(data), layout, None, max(len(data) + 1, 1 << 16)).read_next_batch()
        text = _arrow_reader(io.BytesIO(data), layout, {n: pa.string() for n in layout.names},
                             max(len(data) + 1, 1 << 16)).read_next_batch()
    except StopIteration:
        return Sample(pa.schema([(n, pa.null()) for n in layout.names]), 0, entry.size)
    except pa.ArrowInvalid as exc:
        raise _problem(store, entry, gz, layout, exc, None) from None
    if any(pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in inferred.schema):
        raise not_in_encoding(entry.path, layout.encoding)  # text never lands as bytes
    schema, found = _local_formats(text, inferred, options)
    notes = []
    if layout.encoding.note:
        notes.append(layout.encoding.note)
    elif not layout.encoding.is_utf8 or layout.encoding.bom:
        notes.append(f"encoding {layout.encoding.name}" + (" (byte order mark)" if layout.encoding.bom else ""))
    if layout.found_header:
        notes.append(f"header on line {layout.skip} (the {layout.skip - 1} line{'s' if layout.skip > 2 else ''} "
                     "above it skipped)")
    notes += found
    if footer.note and not more:
        notes.append(footer.note.split(": ", 1)[1])
    sampled = entry.size if not more else INFER_BYTES // (4 if gz else 1)
    return Sample(schema, inferred.num_rows, max(1, sampled), tuple(notes))


def read(store, entry, gz, options, schema: pa.Schema, cancel, limit=None, notes=None) -> Iterator[pa.RecordBatch]:
    opened = _open(store, entry, gz, options)
    if opened is None:
        return
    stream, layout, footer = opened
    try:
        check_columns(entry.path, layout.names, schema)
        parsers = {f.name: formats.TextFormat.of(f) for f in schema if formats.TextFormat.of(f)}
        types = {f.name: pa.string() if f.name in parsers else f.type for f in schema}
        row = 0
        try:
            reader = _arrow_reader(stream, layout, types, CSV_BLOCK)
            while True:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                if parsers:
                    batch = _parse_columns(store, entry, gz, layout, batch, schema, parsers)
                yield conform(batch, schema, entry.path, row)
                row += batch.num_rows
        except pa.ArrowInvalid as exc:
            raise _problem(store, entry, gz, layout, exc, schema) from None
        if footer.note and notes is not None:
            notes.append(footer.note)
        if layout.encoding.note and notes is not None:
            notes.append(layout.encoding.note)
    finally:
        stream.close()


def _parse_columns(store, entry, gz, layout: CsvLayout, batch: pa.RecordBatch, schema: pa.Schema,
                   parsers: dict) -> pa.RecordBatch:
    arrays = []
    for name, array in zip(batch.schema.names, batch.columns):
        fmt = parsers.get(name)
        if fmt is not None:
            target = schema.field(name).type
            try:
                array = fmt.parse(array, target)
            except ValueError as exc:
                value = array[exc.args[0]].as_py()
                column = layout.names.index(name)
                line = _line_of(store, entry, gz, layout, lambda r: len(r) > column and r[column] == value)
                where = f"{entry.path}, line {line}" if line else entry.path
                raise value_misfit(where, name, value, target) from None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
