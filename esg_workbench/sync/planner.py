"""Chunk plans: half-open ranges over a stream's ordering key (DESIGN.md section 4)."""

from __future__ import annotations

from dataclasses import dataclass

from esg_workbench.core.specs import (
    DUCKDB_ROW_GROUP_ROWS,
    ChunkRange,
    ChunkStrategy,
    LoadSettings,
    LoadType,
    ReadScope,
    StreamRef,
)

INTEGER_TYPES = (int,)


@dataclass(frozen=True)
class Sizing:
    chunk_size: int
    window: str | None


def auto_sizing(rows: int) -> Sizing:
    """Chunk size and window by table volume. From 100,000 rows on, whole DuckDB row
    groups: such a chunk commits without a checkpoint's rewrite (see core/specs.py)."""
    if rows < 100_000:
        return Sizing(10_000, None)
    if rows <= 1_000_000:
        return Sizing(DUCKDB_ROW_GROUP_ROWS, "month")
    if rows <= 10_000_000:
        return Sizing(DUCKDB_ROW_GROUP_ROWS, "week")
    return Sizing(2 * DUCKDB_ROW_GROUP_ROWS, "day")


def uses_time_windows(settings: LoadSettings) -> bool:
    if settings.chunk_strategy is ChunkStrategy.TIME:
        return True
    if settings.chunk_strategy is ChunkStrategy.ID:
        return False
    return settings.load_type is LoadType.DELTA  # auto: deltas by time, full loads by id


def ordering_key(settings: LoadSettings, primary_key: list[str]) -> tuple[str, ...]:
    """(cursor, *pk) when rows are paged by cursor, else the primary key."""
    if settings.cursor_field and (settings.load_type is LoadType.DELTA or uses_time_windows(settings)):
        return (settings.cursor_field, *[k for k in primary_key if k != settings.cursor_field])
    return tuple(primary_key)


def plan(connector, stream: StreamRef, scope: ReadScope, settings: LoadSettings) -> tuple[list[ChunkRange], Sizing]:
    by_windows = uses_time_windows(settings) and bool(scope.key) and scope.cursor_field == scope.key[0]
    if len(scope.key) == 1 and not by_windows:  # one query gives the count and the key's range
        lo, hi, rows = connector.key_range(stream, scope)
    else:
        lo = hi = None
        rows = connector.count(stream, scope)
    sizing = auto_sizing(rows)
    sizing = Sizing(settings.chunk_size or sizing.chunk_size, settings.window or sizing.window or "month")
    chunks: list[ChunkRange] = []
    if scope.include_null_cursor and scope.cursor_field:
        nulls = connector.null_cursor_count(stream, scope.cursor_field)
        if nulls:
            chunks += _split(connector, stream, scope, ChunkRange(null_cursor=True), nulls, sizing.chunk_size)
    if rows == 0:  # a first or full load still reads it once: an empty table lands typed
        return chunks or ([ChunkRange()] if scope.after is None else []), sizing
    if not scope.key:  # no key: ranges of the source's row addresses (PostgreSQL: pages), else one chunk
        keyless = getattr(connector, "keyless_chunks", None)
        return chunks + (keyless(stream, scope, rows, sizing.chunk_size) if keyless else [ChunkRange()]), sizing
    if by_windows:
        chunks += _windows(connector, stream, scope, sizing)
    elif rows <= sizing.chunk_size:
        chunks.append(ChunkRange())
    else:
        chunks += _id_ranges(connector, stream, scope, rows, sizing.chunk_size, lo, hi)
    return chunks, sizing


def _between(bounds: list[tuple], outer: ChunkRange) -> list[ChunkRange]:
    edges = [outer.lower, *bounds, outer.upper]
    return [ChunkRange(lo, hi, outer.null_cursor) for lo, hi in zip(edges, edges[1:])]


def _split(connector, stream, scope, outer: ChunkRange, rows: int, chunk_size: int) -> list[ChunkRange]:
    if rows <= chunk_size:
        return [outer]
    return _between(connector.boundaries(stream, scope, chunk_size, within=outer), outer)


def _windows(connector, stream, scope, sizing: Sizing) -> list[ChunkRange]:
    counts = connector.window_counts(stream, scope, sizing.window)
    chunks: list[ChunkRange] = []
    for i, (start, rows) in enumerate(counts):
        lower = None if i == 0 else (start,)
        upper = (counts[i + 1][0],) if i + 1 < len(counts) else None
        chunks += _split(connector, stream, scope, ChunkRange(lower, upper), rows, sizing.chunk_size)
    return chunks


def _id_ranges(connector, stream, scope, rows: int, chunk_size: int, lo, hi) -> list[ChunkRange]:
    if len(scope.key) == 1:
        if isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool):
            span = hi - lo + 1
            if rows * 2 >= span:  # dense integers: plain arithmetic, no scan
                bounds = [(v,) for v in range(lo + chunk_size, hi + 1, chunk_size)]
                return _between(bounds, ChunkRange())
    return _split(connector, stream, scope, ChunkRange(), rows, chunk_size)
