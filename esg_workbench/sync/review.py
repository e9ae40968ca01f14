"""Failed chunks as a review queue: list them, retry one or a selection, or ignore one
with a reason.

A chunk whose reads kept failing is marked ``failed`` in the ledger and the sync goes
on (DESIGN.md section 4). Here every such chunk is shown with its table, key range,
error, attempts and first and last failure. A retry runs the engine's retry of failed
chunks for the chosen ones only. Ignoring records the analyst's reason in the chunk and
in the audit chain; the chunk stays failed, so the data of its range is still missing:
:func:`incomplete_ranges` (which the KPI side calls) keeps naming it until a retry
lands it or a later sync replaces its plan (the chunk is then superseded). The review
stays on the chunk's ledger row as its history.

No Qt: the Failed chunks view and ``esg-workbench chunks`` share it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError, NotFound
from esg_workbench.core.specs import ChunkRange, ChunkStatus, ProgressEvent
from esg_workbench.workspace import connectors_store
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import connector_sync_chunks as chunks
from esg_workbench.workspace.schema import connector_sync_state as state
# the KPI side reads the missing ranges from the workspace layer; re-exported here for callers of the review
from esg_workbench.workspace.sync_records import (  # noqa: F401 (IncompleteRange, incomplete_ranges: this module's API)
    REVIEW_IGNORED,
    IncompleteRange,
    incomplete_ranges,
    stored_key,
)

IGNORED = REVIEW_IGNORED
MAX_REASON = 2000


@dataclass
class FailedChunk:
    id: int
    connector: str
    connector_id: str
    stream: str  # the source table
    range: ChunkRange
    error: str | None
    attempts: int
    first_failed_at: dt.datetime | None  # naive UTC; None: failed before this was recorded
    last_failed_at: dt.datetime
    sync_id: int  # the run that planned it
    retryable: bool  # still part of its stream's current plan
    review_status: str | None = None  # None: unreviewed | 'ignored'
    review_reason: str | None = None
    reviewed_by: str | None = None
    reviewed_at: dt.datetime | None = None

    @property
    def ignored(self) -> bool:
        return self.review_status == IGNORED

    @property
    def range_text(self) -> str:
        return self.range.describe()

    def to_json(self) -> dict[str, Any]:
        def iso(v):
            return None if v is None else v.isoformat()

        return {"id": self.id, "connector": self.connector, "table": self.stream, "range": self.range_text,
                "error": self.error, "attempts": self.attempts, "first_failed_at": iso(self.first_failed_at),
                "last_failed_at": iso(self.last_failed_at), "run_id": self.sync_id, "retryable": self.retryable,
                "review": self.review_status or "unreviewed", "reason": self.review_reason,
                "reviewed_by": self.reviewed_by, "reviewed_at": iso(self.reviewed_at)}


def _query(ws: Workspace):
    active = (sa.select(state.c.active_sync_id).where(state.c.organization_id == ws.organization_id,
                                                       state.c.connector_id == chunks.c.connector_id,
                                                       state.c.stream == chunks.c.stream)
              .scalar_subquery())
    return sa.select(chunks, (active == chunks.c.sync_id).label("current")).where(
        chunks.c.organization_id == ws.organization_id, chunks.c.status == ChunkStatus.FAILED.value)


def list_failed(ws: Workspace, *, connector: str | None = None, unreviewed_only: bool = False,
                ids: Iterable[int] | None = None) -> list[FailedChunk]:
    """Failed chunks, the most recently failed first."""
    with ws.read() as conn:
        names = {r.id: r.name for r in connectors_store.list_all(ws, conn)}
        query = _query(ws)
        if connector is not None:
            query = query.where(chunks.c.connector_id == connectors_store.get(ws, conn, connector).id)
        if unreviewed_only:
            query = query.where(chunks.c.review_status.is_(None))
        if ids is not None:
            query = query.where(chunks.c.id.in_(list(ids)))
        rows = conn.execute(query.order_by(chunks.c.updated_at.desc(), chunks.c.id.desc())).all()
    return [FailedChunk(
        id=r.id, connector=names.get(r.connector_id, r.connector_id), connector_id=r.connector_id, stream=r.stream,
        range=ChunkRange(stored_key(r.lower_bound), stored_key(r.upper_bound), bool(r.null_cursor)), error=r.error,
        attempts=r.attempts, first_failed_at=r.first_failed_at, last_failed_at=r.updated_at, sync_id=r.sync_id,
        retryable=bool(r.current), review_status=r.review_status, review_reason=r.review_reason,
        reviewed_by=r.reviewed_by, reviewed_at=r.reviewed_at) for r in rows]


def _chosen(ws: Workspace, ids: Iterable[int]) -> list[FailedChunk]:
    wanted = sorted({int(i) for i in ids})
    if not wanted:
        raise ConfigError("No chunk was chosen.", hint="Pick chunks by id: esg-workbench chunks list shows them.")
    found = list_failed(ws, ids=wanted)
    missing = sorted(set(wanted) - {c.id for c in found})
    if missing:
        raise NotFound(f"No failed chunk with id {', '.join(map(str, missing))}: nothing was changed.",
                       hint="It may have landed or been replaced by a later sync; "
                            "esg-workbench chunks list shows the failed ones.")
    return found


def ignore(ws: Workspace, ids: Iterable[int], reason: str, *, actor: str | None = None) -> list[FailedChunk]:
    """Mark failed chunks ignored with the analyst's reason (audited). Their ranges stay
    incomplete until they land."""
    reason = (reason or "").strip()
    if not reason:
        raise ConfigError("Ignoring a failed chunk needs a reason.",
                          hint="Say why its rows may stay missing, e.g. 'archived site, no data expected'.")
    if len(reason) > MAX_REASON:
        raise ConfigError(f"A reason can be at most {MAX_REASON} characters long.")
    found = _chosen(ws, ids)
    now = utcnow()
    who = chain.default_actor(ws, actor)
    with ws.transaction() as conn:
        conn.execute(sa.update(chunks).where(chunks.c.organization_id == ws.organization_id,
                                             chunks.c.id.in_([c.id for c in found]),
                                             chunks.c.status == ChunkStatus.FAILED.value)
                     .values(review_status=IGNORED, review_reason=reason, reviewed_by=who, reviewed_at=now))
        for c in found:
            chain.append(ws, conn, "chunk.ignore", actor=actor, metadata={
                "chunk_id": c.id, "connector_id": c.connector_id, "connector": c.connector, "table": c.stream,
                "range": c.range_text, "run_id": c.sync_id, "reason": reason})
    return list_failed(ws, ids=[c.id for c in found])


def reopen(ws: Workspace, ids: Iterable[int], *, actor: str | None = None) -> list[FailedChunk]:
    """Take back an ignore: the chunks are unreviewed again (audited)."""
    found = _chosen(ws, ids)
    with ws.transaction() as conn:
        conn.execute(sa.update(chunks).where(chunks.c.organization_id == ws.organization_id,
                                             chunks.c.id.in_([c.id for c in found]))
                     .values(review_status=None, review_reason=None, reviewed_by=None, reviewed_at=None))
        for c in found:
            chain.append(ws, conn, "chunk.reopen", actor=actor, metadata={
                "chunk_id": c.id, "connector": c.connector, "table": c.stream, "range": c.range_text})
    return list_failed(ws, ids=[c.id for c in found])


def retry_requests(ws: Workspace, ids: Iterable[int]) -> list:
    """The engine requests that retry the chosen failed chunks, one per connector (named
    by its name, as the app's sync jobs know it). A chunk a later sync replaced cannot be
    retried alone: refused before anything runs."""
    from esg_workbench.sync.engine import SyncRequest

    found = _chosen(ws, ids)
    stale = [c for c in found if not c.retryable]
    if stale:
        raise ConfigError(
            f"Chunk {', '.join(str(c.id) for c in stale)} belongs to a plan a later sync of its table replaced: "
            "it cannot be retried alone. Nothing was run.",
            hint="Sync the table again (its new plan covers the range), or ignore the chunk with a reason.")
    by_connector: dict[str, list[FailedChunk]] = {}
    for c in found:
        by_connector.setdefault(c.connector, []).append(c)
    return [SyncRequest(connector=name, tables=sorted({c.stream for c in group}), retry_failed=True,
                        chunk_ids=tuple(c.id for c in group)) for name, group in by_connector.items()]


def retry(ws: Workspace, ids: Iterable[int], *, retry_delays: tuple[float, ...] | None = None,
          on_progress: Callable[[ProgressEvent], None] | None = None, cancel=None) -> list:
    """Retry the chosen failed chunks now (one engine run per connector); the SyncResults."""
    from esg_workbench.sync.engine import DEFAULT_RETRY_DELAYS, SyncEngine

    requests = retry_requests(ws, ids)
    engine = SyncEngine(ws, retry_delays=retry_delays or DEFAULT_RETRY_DELAYS, on_progress=on_progress, cancel=cancel)
    return [engine.run(request) for request in requests]


def counts(ws: Workspace) -> dict[str, int]:
    """{'unreviewed': n, 'ignored': m} over the organization's failed chunks."""
    with ws.read() as conn:
        rows = conn.execute(sa.select(chunks.c.review_status, sa.func.count()).where(
            chunks.c.organization_id == ws.organization_id, chunks.c.status == ChunkStatus.FAILED.value)
            .group_by(chunks.c.review_status)).all()
    result = {"unreviewed": 0, IGNORED: 0}
    for status, n in rows:
        key = status or "unreviewed"
        result[key] = result.get(key, 0) + int(n)
    return result
