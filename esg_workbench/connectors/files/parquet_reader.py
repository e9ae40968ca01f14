"""Parquet: the footer for the columns (only the file's last 64 KiB from object stores),
row groups in batches for the rows."""

from __future__ import annotations

import io

import pyarrow as pa

from esg_workbench.connectors.files.columns import check_columns, clean_names, conform
from esg_workbench.connectors.files.model import BATCH_ROWS, BadFile, FileEntry, FileStore, Sample
from esg_workbench.core.errors import EsgError


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


def infer(store, entry, gz, options) -> Sample:
    pf = _parquet_file(store, entry, footer_only=True)
    names, _ = _parquet_renames(pf.schema_arrow.names)
    return Sample(pa.schema([(n, f.type) for n, f in zip(names, pf.schema_arrow)]), pf.metadata.num_rows,
                  max(1, entry.size))


def read(store, entry, gz, options, schema, cancel, limit=None, notes=None):
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
