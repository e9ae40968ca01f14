"""source_schema_cache: discovered tables, their columns, keys, estimates and samples."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.specs import ColumnInfo, Drift, ForeignKey, StreamRef, TableInfo
from esg_workbench.workspace import concurrency
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import source_schema_cache as cache


def _where(workspace: Workspace, connector_id: str, stream: StreamRef | None = None):
    conds = [cache.c.organization_id == workspace.organization_id, cache.c.connector_id == connector_id]
    if stream is not None:
        conds.append(cache.c.table_name == stream.table)
        conds.append(cache.c.schema_name.is_(None) if stream.schema is None else cache.c.schema_name == stream.schema)
    return conds


def _info(row) -> TableInfo:
    return TableInfo(
        stream=StreamRef(row.schema_name, row.table_name),
        columns=[ColumnInfo.from_json(c) for c in json.loads(row.columns)],
        primary_key=json.loads(row.primary_key),
        foreign_keys=[ForeignKey(tuple(f[0]), f[1], f[2], tuple(f[3])) for f in json.loads(row.foreign_keys)],
        row_estimate=row.row_estimate,
        sample_rows=None if row.sample_rows is None else json.loads(row.sample_rows),
    )


def save(workspace: Workspace, conn: sa.Connection, connector_id: str, tables: list[TableInfo],
         *, complete: bool) -> dict[str, Drift]:
    """Store discovered tables; return the drift of each table seen before.
    With `complete`, tables no longer in the source are removed from the cache and
    reported as dropped entirely. Samples of an unchanged table are kept.

    Two discoveries of one connector at once (two analysts, or a discovery and a sync)
    take turns: the second waits for the first to commit, then compares with and replaces
    what the first stored. Without the wait each would delete only the rows it saw and
    both would insert, leaving every table twice in the cache."""
    concurrency.xact_lock(workspace, conn, "schema-cache", connector_id)
    previous = {StreamRef(r.schema_name, r.table_name): r
                for r in conn.execute(sa.select(cache).where(*_where(workspace, connector_id)))}
    drift: dict[str, Drift] = {}
    now = utcnow()
    rows = []
    for info in tables:
        old = previous.pop(info.stream, None)
        change = Drift.between(_info(old).columns, info.columns) if old is not None else Drift()
        if change:
            drift[info.stream.qualified] = change
        keep_samples = old is not None and not change  # samples of an old shape would mislead
        rows.append(dict(
            organization_id=workspace.organization_id, connector_id=connector_id,
            schema_name=info.stream.schema, table_name=info.stream.table,
            columns=json.dumps([c.to_json() for c in info.columns]),
            primary_key=json.dumps(info.primary_key),
            foreign_keys=json.dumps([dataclasses.astuple(f) for f in info.foreign_keys]),
            row_estimate=info.row_estimate,
            drift=json.dumps(dataclasses.asdict(change)) if change else None,
            discovered_at=now,
            sample_rows=old.sample_rows if keep_samples else None,
            sampled_at=old.sampled_at if keep_samples else None,
        ))
    # Replace rather than update row by row: a few statements for thousands of tables.
    if complete:
        conn.execute(sa.delete(cache).where(*_where(workspace, connector_id)))
        for stream, old in previous.items():
            drift[stream.qualified] = Drift(dropped=tuple(c.name for c in _info(old).columns))
    else:
        for info in tables:
            conn.execute(sa.delete(cache).where(*_where(workspace, connector_id, info.stream)))
    for start in range(0, len(rows), 500):
        conn.execute(sa.insert(cache).values(rows[start:start + 500]))
    return drift


def save_samples(workspace: Workspace, conn: sa.Connection, connector_id: str, stream: StreamRef,
                 rows: list[dict[str, Any]]) -> None:
    conn.execute(sa.update(cache).where(*_where(workspace, connector_id, stream)).values(
        sample_rows=json.dumps(rows, ensure_ascii=False), sampled_at=utcnow()))


def load(workspace: Workspace, conn: sa.Connection, connector_id: str,
         stream: StreamRef | None = None) -> list[TableInfo]:
    rows = conn.execute(sa.select(cache).where(*_where(workspace, connector_id, stream))
                        .order_by(cache.c.schema_name, cache.c.table_name))
    return [_info(r) for r in rows]


def drift_of(workspace: Workspace, conn: sa.Connection, connector_id: str) -> dict[str, Drift]:
    rows = conn.execute(sa.select(cache.c.schema_name, cache.c.table_name, cache.c.drift)
                        .where(*_where(workspace, connector_id), cache.c.drift.is_not(None)))
    out = {}
    for r in rows:
        d = json.loads(r.drift)
        out[StreamRef(r.schema_name, r.table_name).qualified] = Drift(
            tuple(d["added"]), tuple(d["dropped"]), tuple(tuple(x) for x in d["retyped"]))
    return out
