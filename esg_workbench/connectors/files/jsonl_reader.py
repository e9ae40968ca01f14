"""JSON lines: one object per line. Arrow's JSON reader reads the usual file; a file it
refuses (a field that is a number on one line and text on another, say) is read line by
line with Python's json module, which also names the line that is truly malformed."""

from __future__ import annotations

import json
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
from esg_workbench.connectors.files.model import BATCH_ROWS, INFER_BYTES, BadFile, FileEntry, Sample
from esg_workbench.connectors.files.text import detect_encoding, not_in_encoding, sequential

_HINT = "Each line must be one JSON object (JSON lines). Fix the file, then use Retry failed chunks."


def _utf8(data: bytes, complete: bool, entry: FileEntry, options) -> tuple[bytes, str | None]:
    """The bytes as UTF-8 (Arrow's JSON reader reads nothing else), and a note when the
    encoding was guessed."""
    encoding = detect_encoding(data, entry.path, options.encoding, complete)
    if encoding.is_utf8 and not encoding.bom:
        return data, encoding.note
    import codecs

    decoder = codecs.getincrementaldecoder(encoding.name)(errors="strict")
    try:
        text = decoder.decode(data[encoding.bom:], final=complete)
    except UnicodeDecodeError as exc:
        raise not_in_encoding(entry.path, encoding, exc.start + encoding.bom) from None
    return text.encode("utf-8"), encoding.note


def _read(store, entry: FileEntry, gz: bool, options, limit: int | None) -> tuple[bytes, bool, str | None]:
    stream = sequential(store, entry, gz)
    try:
        data = bytes(stream.read(limit)) if limit else bytes(stream.read())
        more = bool(stream.read(1)) if limit else False
    finally:
        stream.close()
    data, note = _utf8(data, not more, entry, options)
    if more:
        data = data[:data.rfind(b"\n") + 1]
    return data, more, note


def _arrow_table(data: bytes) -> pa.Table | None:
    import pyarrow.json as pajson

    block = min(max(len(data) + 1, 1 << 16), 2**31 - 1)
    try:
        return pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=block))
    except pa.ArrowInvalid:
        return None  # read line by line: a type that changes, or a line that is truly malformed


def _objects(data: bytes, entry: FileEntry) -> tuple[list[str], list[tuple[int, dict]]]:
    """The names (in order of first appearance) and (line, object) of every line."""
    names: dict[str, None] = {}
    rows = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise BadFile(f"{entry.path}, line {number}: malformed JSON line: {str(exc)[:300]}", hint=_HINT) from None
        if not isinstance(value, dict):
            raise BadFile(f"{entry.path}, line {number}: malformed JSON line: a {type(value).__name__}, "
                          "not an object", hint=_HINT)
        for key in value:
            names.setdefault(key, None)
        rows.append((number, value))
    return list(names), rows


def _kind(value: Any) -> str:
    return "nested" if isinstance(value, (dict, list)) else value_kind(value)


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _python_table(data: bytes, entry: FileEntry, schema: pa.Schema | None = None) -> pa.Table:
    """The lines as a table: with the table's schema, values made to fit its types; without,
    each field typed by its values (text where they differ)."""
    keys, rows = _objects(data, entry)
    names = clean_names(keys)
    arrays = []
    for key, name in zip(keys, names):
        values = [row.get(key) for _, row in rows]
        if schema is not None and name in schema.names:
            target = schema.field(name).type
        else:
            kinds = {_kind(v) for v in values if v is not None}
            target = pa.string() if "nested" in kinds or "str" in kinds else kinds_type(kinds)
        out = []
        for (number, _), value in zip(rows, values):
            try:
                out.append(None if value is None else _json_text(value) if pa.types.is_string(target)
                           else to_type(value, target))
            except (ValueError, TypeError, ArithmeticError):
                raise value_misfit(f"{entry.path}, line {number}", name, value, target) from None
        arrays.append(pa.array(out, target if not pa.types.is_null(target) else pa.null()))
    return pa.table(arrays, names=keys) if arrays else pa.table({})


def infer(store, entry, gz, options) -> Sample | None:
    data, more, note = _read(store, entry, gz, options, INFER_BYTES)
    if not data.strip():
        return None
    table = _arrow_table(data)
    if table is None:
        table = _python_table(data, entry)
    names = clean_names(table.column_names)
    sampled = entry.size if not more else len(data) // (4 if gz else 1)
    return Sample(pa.schema([(n, f.type) for n, f in zip(names, table.schema)]), table.num_rows, max(1, sampled),
                  (note,) if note else ())


def read(store, entry, gz, options, schema, cancel, limit=None, notes=None):
    data, _, note = _read(store, entry, gz, options, None)
    if note and notes is not None:
        notes.append(note)
    if not data.strip():
        return
    table = _arrow_table(data)
    if table is None:
        table = _python_table(data, entry, schema)
    names = clean_names(table.column_names)
    check_columns(entry.path, names, schema, missing_ok=True)  # a key absent from every line is empty
    renames = {new: old for new, old in zip(names, table.column_names) if new != old}
    row = 0
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        if cancel is not None:
            cancel.raise_if_cancelled()
        yield conform(batch, schema, entry.path, row, renames, missing_ok=True)
        row += batch.num_rows
