"""Small, targeted workspace reads for the panels (no Qt here: they run in workers).

The schema browser loads one level at a time, so these queries fetch only what a level
shows: schema names, then table names with estimates and drift, then one table's
columns. A database with thousands of tables never has all its columns parsed at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.specs import ColumnInfo, Drift, StreamRef
from esg_workbench.workspace import schema_cache, sync_records
from esg_workbench.workspace.database import Workspace
from esg_workbench.workspace.schema import connector_sync_chunks as chunks
from esg_workbench.workspace.schema import connector_sync_logs as logs
from esg_workbench.workspace.schema import connectors as connectors_table
from esg_workbench.workspace.schema import esg_ingestion_audit as audit
from esg_workbench.workspace.schema import source_schema_cache as cache


@dataclass
class TableRow:
    schema: str | None
    name: str
    row_estimate: int | None
    columns: int
    primary_key: list[str]
    drift: Drift | None = None

    @property
    def qualified(self) -> str:
        return StreamRef(self.schema, self.name).qualified


@dataclass
class ConnectorOverview:
    """What the connector list shows for one connector."""

    id: str
    name: str
    type: str
    status: str
    status_message: str | None
    config: dict[str, Any] = field(default_factory=dict)
    resumable: bool = False
    failed_chunks: int = 0


def _org(workspace: Workspace, table: sa.Table):
    return table.c.organization_id == workspace.organization_id


def connectors_overview(workspace: Workspace) -> list[ConnectorOverview]:
    from esg_workbench.workspace.schema import connector_sync_state as state

    with workspace.read() as conn:
        rows = conn.execute(sa.select(connectors_table).where(_org(workspace, connectors_table))
                            .order_by(connectors_table.c.name)).all()
        active = conn.execute(sa.select(state.c.connector_id, state.c.active_sync_id).where(
            _org(workspace, state), state.c.active_sync_id.is_not(None))).all()
        failed: dict[str, int] = {}
        for connector_id, sync_id in active:
            n = conn.execute(sa.select(sa.func.count()).select_from(chunks).where(
                chunks.c.sync_id == sync_id, chunks.c.status == "failed")).scalar() or 0
            failed[connector_id] = failed.get(connector_id, 0) + int(n)
        resumable = {r.id for r in rows if not sync_records.resume_point(workspace, conn, r.id).empty}
    return [ConnectorOverview(r.id, r.name, r.type, r.status, r.status_message, json.loads(r.config),
                              r.id in resumable, failed.get(r.id, 0)) for r in rows]


def schemas(workspace: Workspace, connector_id: str) -> list[tuple[str | None, int]]:
    """(schema name, number of tables) of a connector's cached tables."""
    with workspace.read() as conn:
        rows = conn.execute(sa.select(cache.c.schema_name, sa.func.count()).where(
            _org(workspace, cache), cache.c.connector_id == connector_id,
        ).group_by(cache.c.schema_name).order_by(cache.c.schema_name)).all()
    return [(r[0], int(r[1])) for r in rows]


def tables(workspace: Workspace, connector_id: str, schema: str | None) -> list[TableRow]:
    where = [_org(workspace, cache), cache.c.connector_id == connector_id,
             cache.c.schema_name.is_(None) if schema is None else cache.c.schema_name == schema]
    with workspace.read() as conn:
        rows = conn.execute(sa.select(cache.c.schema_name, cache.c.table_name, cache.c.row_estimate,
                                      cache.c.columns, cache.c.primary_key, cache.c.drift)
                            .where(*where).order_by(cache.c.table_name)).all()
    out = []
    for r in rows:
        drift = None
        if r.drift:
            d = json.loads(r.drift)
            drift = Drift(tuple(d["added"]), tuple(d["dropped"]), tuple(tuple(x) for x in d["retyped"]))
        out.append(TableRow(r.schema_name, r.table_name, r.row_estimate, len(json.loads(r.columns)),
                            json.loads(r.primary_key), drift))
    return out


def columns(workspace: Workspace, connector_id: str, schema: str | None, table: str) -> list[ColumnInfo]:
    with workspace.read() as conn:
        found = schema_cache.load(workspace, conn, connector_id, StreamRef(schema, table))
    return found[0].columns if found else []


def runs(workspace: Workspace, limit: int = 500) -> list[dict[str, Any]]:
    """Sync runs, newest first, with the connector's name."""
    with workspace.read() as conn:
        names = dict(conn.execute(sa.select(connectors_table.c.id, connectors_table.c.name)
                                  .where(_org(workspace, connectors_table))).all())
        found = sync_records.runs(workspace, conn, None, limit)
    for r in found:
        r["connector"] = names.get(r["connector_id"], f"(removed {r['connector_id'][:8]})")
    return found


def run_chunks(workspace: Workspace, run_id: int) -> list[dict[str, Any]]:
    """The chunk ledger a run planned or worked on (a resume works on an older plan)."""
    from esg_workbench.core.keys import decode_key
    from esg_workbench.core.specs import ChunkRange

    with workspace.read() as conn:
        rows = conn.execute(sa.select(chunks).where(
            _org(workspace, chunks), sa.or_(chunks.c.sync_id == run_id, chunks.c.last_run_id == run_id),
        ).order_by(chunks.c.stream, chunks.c.seq)).all()
    out = []
    for r in rows:
        rng = ChunkRange(decode_key(json.loads(r.lower_bound)), decode_key(json.loads(r.upper_bound)), r.null_cursor)
        out.append({"stream": r.stream, "seq": r.seq + 1, "range": rng.describe(), "status": r.status,
                    "attempts": r.attempts, "rows": r.rows_written, "planned_by": r.sync_id,
                    "last_run": r.last_run_id, "error": r.error})
    return out


def audit_entries(workspace: Workspace, limit: int = 1000) -> list[dict[str, Any]]:
    """The newest entries, each with `connector`: the name of the connector its metadata
    names (the id where the connector is gone), so that nobody has to look ids up."""
    with workspace.read() as conn:
        rows = conn.execute(sa.select(audit).where(_org(workspace, audit))
                            .order_by(audit.c.id.desc()).limit(limit)).all()
        names = dict(conn.execute(sa.select(connectors_table.c.id, connectors_table.c.name)
                                  .where(_org(workspace, connectors_table))).all())
    entries = []
    for r in rows:
        entry = dict(r._mapping)
        try:
            connector_id = json.loads(entry["metadata"] or "{}").get("connector_id")
        except (TypeError, ValueError, AttributeError):  # metadata is whatever was written: show it as it is
            connector_id = None
        entry["connector"] = names.get(connector_id, connector_id or "")
        entries.append(entry)
    return entries


def audit_entry(workspace: Workspace, entry_id: int) -> dict[str, Any] | None:
    with workspace.read() as conn:
        row = conn.execute(sa.select(audit).where(_org(workspace, audit), audit.c.id == entry_id)).first()
    return dict(row._mapping) if row else None


def is_empty(workspace: Workspace) -> bool:
    with workspace.read() as conn:
        return not conn.execute(sa.select(connectors_table.c.id).where(_org(workspace, connectors_table)).limit(1)).first()


def running_syncs(workspace: Workspace) -> int:
    with workspace.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(logs).where(
            _org(workspace, logs), logs.c.status == "running")).scalar() or 0)


def table_names(workspace: Workspace, connector_id: str) -> list[tuple[str, int | None]]:
    """(qualified name, row estimate) of every cached table of a connector."""
    with workspace.read() as conn:
        rows = conn.execute(sa.select(cache.c.schema_name, cache.c.table_name, cache.c.row_estimate).where(
            _org(workspace, cache), cache.c.connector_id == connector_id,
        ).order_by(cache.c.schema_name, cache.c.table_name)).all()
    return [(StreamRef(r.schema_name, r.table_name).qualified, r.row_estimate) for r in rows]


def sync_status(workspace: Workspace, name: str) -> dict[str, Any]:
    """connector_status plus the cached tables, in one worker call."""
    from esg_workbench.sync import operations

    status = operations.connector_status(workspace, name)
    record = operations.get_connector(workspace, name)
    status["tables"] = table_names(workspace, record.id)
    status["config"] = record.config
    from esg_workbench.sync import table_settings

    status["table_settings"] = {t.stream: t.to_json() for t in table_settings.list_table_settings(workspace, name)}
    return status


def search(workspace: Workspace, text: str, limit: int = 100) -> list[tuple[str, str | None, str, list[str]]]:
    """Cached tables whose name, or one of whose column names, contains `text` (any case):
    (connector id, schema, table, matching column names), at most `limit` tables. The
    schema filter uses it to find what the tree has not loaded yet."""
    needle = text.strip().lower()
    if not needle:
        return []
    with workspace.read() as conn:
        rows = conn.execute(sa.select(cache.c.connector_id, cache.c.schema_name, cache.c.table_name, cache.c.columns)
                            .where(_org(workspace, cache),
                                   sa.or_(sa.func.lower(cache.c.table_name).contains(needle, autoescape=True),
                                          sa.func.lower(cache.c.columns).contains(needle, autoescape=True)))
                            .order_by(cache.c.connector_id, cache.c.schema_name, cache.c.table_name)).all()
    found = []
    for r in rows:
        columns = [c["name"] for c in json.loads(r.columns) if needle in c["name"].lower()]
        if needle in r.table_name.lower() or columns:  # (the JSON also holds types: check the names)
            found.append((r.connector_id, r.schema_name, r.table_name, columns))
            if len(found) >= limit:
                break
    return found


@dataclass
class DiscoveryFindings:
    """What one discovery noticed: per table what a file source detected (encoding, header
    row, number and date formats, skipped totals) and the tables it could not read, with
    why. Kept by the schema browser for the discovery just made (not stored)."""

    notes: dict[str, list[str]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, result) -> DiscoveryFindings:
        return cls(dict(result.notes), dict(result.unreadable))

    def error_of(self, qualified: str) -> str | None:
        return self.unreadable.get(qualified)

    def table_text(self, qualified: str) -> str:
        """The lines shown under a table's samples: its read error, else what was detected."""
        error = self.unreadable.get(qualified)
        if error is not None:
            return f"Could not read {qualified}: {error}"
        notes = self.notes.get(qualified)
        return ("Detected: " + "\n".join(notes)) if notes else ""

    def details(self) -> str:
        """Unreadable tables with their first error line, and where formats were detected ('' if neither)."""
        parts = []
        if self.unreadable:
            listed = "; ".join(f"{t} ({e.splitlines()[0]})" for t, e in list(self.unreadable.items())[:3])
            more = "…" if len(self.unreadable) > 3 else ""
            parts.append(f"{len(self.unreadable)} could not be read: {listed}{more}")
        if self.notes:
            parts.append(f"formats detected in {len(self.notes)} table{'s' if len(self.notes) != 1 else ''}"
                         " (select a table to see them)")
        return "; ".join(parts)

    def summary(self, name: str, tables: int) -> str:
        """The message after a first discovery: how many tables, then the details."""
        details = self.details()
        return f"{name}: {tables} table{'s' if tables != 1 else ''} discovered" + (f"; {details}." if details else ".")


def rediscover(workspace: Workspace, name: str, connector_id: str):
    """Discover a connector again: (DiscoveryResult, tables new since the last discovery)."""
    from esg_workbench.sync import operations

    before = {qualified for qualified, _ in table_names(workspace, connector_id)}
    result = operations.discover_connector(workspace, name)
    added = sorted(t.stream.qualified for t in result.tables if t.stream.qualified not in before)
    return result, added


# --- what the window watches for changes made elsewhere -------------------------------------


@dataclass
class LevelSnapshot:
    """A connector's catalog as far as the tree has it open: its schemas, the tables of the
    open schemas, the columns of the open tables. Read in a worker; the schema browser
    merges it into the tree in place, so open levels and the selection stay."""

    stamp: tuple
    schemas: list[tuple[str | None, int]]
    tables: dict[str | None, list[TableRow]] = field(default_factory=dict)
    columns: dict[tuple[str | None, str], list[ColumnInfo]] = field(default_factory=dict)


def catalog_stamps(workspace: Workspace, conn: sa.Connection | None = None) -> dict[str, tuple]:
    """Per connector id: what changes when its catalog does (a discovery anywhere, an edit
    of its definition): (cached tables, newest discovery, definition's updated_at)."""
    def read(c: sa.Connection) -> dict[str, tuple]:
        cached = {r[0]: (int(r[1]), str(r[2])) for r in c.execute(
            sa.select(cache.c.connector_id, sa.func.count(), sa.func.max(cache.c.discovered_at))
            .where(_org(workspace, cache)).group_by(cache.c.connector_id))}
        edited = c.execute(sa.select(connectors_table.c.id, connectors_table.c.updated_at)
                           .where(_org(workspace, connectors_table))).all()
        return {cid: (*cached.get(cid, (0, "None")), str(updated)) for cid, updated in edited}

    if conn is not None:
        return read(conn)
    with workspace.read() as c:
        return read(c)


def catalog_stamp(workspace: Workspace, connector_id: str) -> tuple:
    return catalog_stamps(workspace).get(connector_id, (0, "None", "None"))


def level_snapshot(workspace: Workspace, connector_id: str, open_schemas: list[str | None],
                   open_tables: list[tuple[str | None, str]]) -> LevelSnapshot:
    """The levels the tree has open, read again (see LevelSnapshot)."""
    stamp = catalog_stamp(workspace, connector_id)
    return LevelSnapshot(stamp, schemas(workspace, connector_id),
                         {s: tables(workspace, connector_id, s) for s in open_schemas},
                         {(s, t): columns(workspace, connector_id, s, t) for s, t in open_tables})


def mapping_versions(workspace: Workspace, conn: sa.Connection | None = None) -> dict[str, int]:
    """The newest saved version of every mapping."""
    from esg_workbench.workspace.schema import mappings

    def read(c: sa.Connection) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in c.execute(
            sa.select(mappings.c.name, sa.func.max(mappings.c.version))
            .where(_org(workspace, mappings)).group_by(mappings.c.name))}

    if conn is not None:
        return read(conn)
    with workspace.read() as c:
        return read(c)


@dataclass
class WatchState:
    """One look at the workspace (every WATCH_MS): what the connector views, the schema
    tree and the mapping canvas show, each compared with what they last saw."""

    connectors: tuple
    catalogs: dict[str, tuple]
    mappings: dict[str, int]


def watch_state(workspace: Workspace) -> WatchState:
    found = fingerprint(workspace)
    with workspace.read() as conn:
        return WatchState(found, catalog_stamps(workspace, conn), mapping_versions(workspace, conn))


def fingerprint(workspace: Workspace) -> tuple:
    """What the connector views show, in a few small reads: it changes when a connector is
    added, edited, renamed, removed, validated, discovered or synced, in this window or
    another one (or another process on a shared workspace). The window polls it."""
    with workspace.read() as conn:
        connectors = conn.execute(sa.select(connectors_table.c.id, connectors_table.c.name, connectors_table.c.status,
                                            connectors_table.c.updated_at)
                                  .where(_org(workspace, connectors_table)).order_by(connectors_table.c.id)).all()
        discovered = conn.execute(sa.select(sa.func.count(), sa.func.max(cache.c.discovered_at))
                                  .where(_org(workspace, cache))).one()
        last_run = conn.execute(sa.select(sa.func.max(logs.c.id), sa.func.count())
                                .where(_org(workspace, logs), logs.c.status == "running")).one()
        newest = conn.execute(sa.select(sa.func.max(logs.c.id)).where(_org(workspace, logs))).scalar()
    return tuple(tuple(r) for r in connectors), tuple(discovered), tuple(last_run), newest
