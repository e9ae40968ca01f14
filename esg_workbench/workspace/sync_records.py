"""Sync runs, the chunk ledger and checkpoints (connector_sync_logs, _chunks, _state)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.keys import decode_key, encode_key
from esg_workbench.core.specs import ChunkRange, ChunkStatus, SyncStatus
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import connector_sync_chunks as chunks
from esg_workbench.workspace.schema import connector_sync_logs as logs
from esg_workbench.workspace.schema import connector_sync_state as state


# --- runs ---------------------------------------------------------------------------------

def start_run(workspace: Workspace, conn: sa.Connection, connector_id: str, load_type: str, mode: str,
              plan_sync_id: int | None = None, request: dict[str, Any] | None = None) -> int:
    """A new run, 'running', with what it was asked for (`request`, JSON: tables and load
    settings), committed before any work so that a run killed at once can be resumed."""
    return conn.execute(sa.insert(logs).values(
        organization_id=workspace.organization_id, connector_id=connector_id, load_type=load_type, mode=mode,
        plan_sync_id=plan_sync_id, status=SyncStatus.RUNNING.value, started_at=utcnow(),
        items_read=0, items_written=0, items_deleted=0,
        request=json.dumps(request, default=str) if request is not None else None,
    ).returning(logs.c.id)).scalar_one()


def set_request(conn: sa.Connection, run_id: int, request: dict[str, Any]) -> None:
    """Complete a run's request once its streams are known (every discovered table)."""
    conn.execute(sa.update(logs).where(logs.c.id == run_id).values(request=json.dumps(request, default=str)))


def add_deleted(conn: sa.Connection, run_id: int, deleted: int) -> None:
    conn.execute(sa.update(logs).where(logs.c.id == run_id).values(
        items_deleted=sa.func.coalesce(logs.c.items_deleted, 0) + deleted))


@dataclass
class ResumePoint:
    """What a resume of a connector continues.

    `open_streams`: streams whose chunk plan has chunks not done. `origin_run_id` and
    `request`: the newest sync, when it and the resumes after it did not finish
    (cancelled, failed, interrupted); its streams not planned since it started are
    `unstarted` (None: the request's streams were never resolved, so all of them)."""

    open_streams: list[str]
    origin_run_id: int | None = None
    request: dict[str, Any] | None = None
    unstarted: list[str] | None = None

    @property
    def empty(self) -> bool:
        unstarted_left = self.origin_run_id is not None and (self.unstarted is None or bool(self.unstarted))
        return not self.open_streams and not unstarted_left

    def streams(self) -> list[str] | None:
        """Every stream to continue, the request's order first; None: resolve the request."""
        if self.origin_run_id is not None and self.unstarted is None:
            return None
        asked = (self.request or {}).get("streams") or []
        todo = set(self.unstarted or []) | set(self.open_streams)
        ordered = [s for s in asked if s in todo]
        return ordered + [s for s in self.open_streams if s not in ordered]


def streams_planned_since(workspace: Workspace, conn: sa.Connection, connector_id: str, run_id: int) -> set[str]:
    """Streams with a chunk plan made by the run `run_id` or a later one."""
    return set(conn.execute(sa.select(chunks.c.stream).distinct().where(
        chunks.c.organization_id == workspace.organization_id, chunks.c.connector_id == connector_id,
        chunks.c.sync_id >= run_id)).scalars())


#: a chain of runs whose last one ended thus is finished: nothing of its request is left
FINISHED = (SyncStatus.SUCCESS.value, SyncStatus.PARTIAL_SUCCESS.value, SyncStatus.RUNNING.value)


def resume_point(workspace: Workspace, conn: sa.Connection, connector_id: str) -> ResumePoint:
    org = logs.c.organization_id == workspace.organization_id
    open_streams = sorted(conn.execute(sa.select(state.c.stream).where(
        state.c.organization_id == workspace.organization_id, state.c.connector_id == connector_id,
        state.c.active_sync_id.is_not(None))).scalars())
    origin = conn.execute(sa.select(logs.c.id, logs.c.request).where(
        org, logs.c.connector_id == connector_id, logs.c.mode == "sync").order_by(logs.c.id.desc()).limit(1)).first()
    if origin is None or origin.request is None:  # never synced, or a run from before requests were kept
        return ResumePoint(open_streams)
    last = conn.execute(sa.select(logs.c.status).where(
        org, logs.c.connector_id == connector_id, logs.c.id >= origin.id, logs.c.mode.in_(("sync", "resume")),
    ).order_by(logs.c.id.desc()).limit(1)).scalar()
    if last in FINISHED:
        return ResumePoint(open_streams)
    request = json.loads(origin.request)
    if request.get("streams") is None:
        return ResumePoint(open_streams, origin.id, request, None)
    planned = streams_planned_since(workspace, conn, connector_id, origin.id)
    completed = planned - set(open_streams)  # (a plan of no chunk leaves no trace: it is planned again)
    unstarted = [s for s in request["streams"] if s not in completed and s not in open_streams]
    return ResumePoint(open_streams, origin.id, request, unstarted)


def continues(conn: sa.Connection, run_id: int, plan_sync_id: int) -> None:
    """Record that a resume or retry run works on the chunk plan of an earlier run."""
    conn.execute(sa.update(logs).where(logs.c.id == run_id).values(plan_sync_id=plan_sync_id))


def add_counts(conn: sa.Connection, run_id: int, read: int, written: int) -> None:
    conn.execute(sa.update(logs).where(logs.c.id == run_id).values(
        items_read=logs.c.items_read + read, items_written=logs.c.items_written + written))


def finish_run(conn: sa.Connection, run_id: int, status: SyncStatus, error: str | None,
               details: dict[str, Any]) -> None:
    conn.execute(sa.update(logs).where(logs.c.id == run_id).values(
        status=status.value, finished_at=utcnow(), error=error, details=json.dumps(details, default=str)))


def link_retry(workspace: Workspace, conn: sa.Connection, run_id: int, first_run_id: int, attempt: int) -> None:
    """Record that a scheduled retry's run follows up the run of its first attempt."""
    conn.execute(sa.update(logs).where(logs.c.id == run_id, logs.c.organization_id == workspace.organization_id)
                 .values(retry_of=first_run_id, attempt=attempt))


def set_details(conn: sa.Connection, run_id: int, details: dict[str, Any]) -> None:
    """Replace a finished run's details (what its saved mappings made of its rows)."""
    conn.execute(sa.update(logs).where(logs.c.id == run_id).values(details=json.dumps(details, default=str)))


def mark_interrupted(workspace: Workspace, conn: sa.Connection, connector_id: str) -> None:
    """Runs still 'running' when we hold the connector's lock died with their process."""
    conn.execute(sa.update(logs).where(
        logs.c.organization_id == workspace.organization_id, logs.c.connector_id == connector_id,
        logs.c.status == SyncStatus.RUNNING.value,
    ).values(status=SyncStatus.FAILED.value, finished_at=utcnow(),
             error="Interrupted: the app or the machine stopped during this sync. Resume continues from the last landed chunk."))


def mark_dead_runs(workspace: Workspace) -> None:
    """On opening: runs still 'running' whose process is gone (killed, crashed, machine
    off) are marked interrupted. A DuckDB workspace has one process, so every such run
    is dead; on PostgreSQL a live run holds its connector's sync lock."""
    from esg_workbench.workspace import concurrency

    with workspace.transaction() as conn:
        running = conn.execute(sa.select(logs.c.connector_id).distinct().where(
            logs.c.organization_id == workspace.organization_id,
            logs.c.status == SyncStatus.RUNNING.value)).scalars().all()
        for connector_id in running:
            if not concurrency.try_xact_lock(workspace, conn, concurrency.CONNECTOR_SYNC, connector_id):
                continue  # that sync is alive in another process
            mark_interrupted(workspace, conn, connector_id)


def runs(workspace: Workspace, conn: sa.Connection, connector_id: str | None = None, limit: int = 20) -> list[dict]:
    query = sa.select(logs).where(logs.c.organization_id == workspace.organization_id)
    if connector_id:
        query = query.where(logs.c.connector_id == connector_id)
    return [dict(r._mapping) for r in conn.execute(query.order_by(logs.c.id.desc()).limit(limit))]


# --- the chunk ledger ---------------------------------------------------------------------

@dataclass
class LedgerChunk:
    id: int
    sync_id: int
    stream: str
    seq: int
    range: ChunkRange
    target_table: str
    status: str
    attempts: int
    rows_written: int
    max_key: tuple | None
    error: str | None


def _chunk(row) -> LedgerChunk:
    return LedgerChunk(
        id=row.id, sync_id=row.sync_id, stream=row.stream, seq=row.seq,
        range=ChunkRange(decode_key(json.loads(row.lower_bound)), decode_key(json.loads(row.upper_bound)), row.null_cursor),
        target_table=row.target_table, status=row.status, attempts=row.attempts, rows_written=row.rows_written,
        max_key=stored_key(row.max_key), error=row.error,
    )


def plan_chunks(workspace: Workspace, conn: sa.Connection, sync_id: int, connector_id: str, stream: str,
                ranges: list[ChunkRange], target_table: str) -> list[LedgerChunk]:
    now = utcnow()
    rows = [dict(
        organization_id=workspace.organization_id, sync_id=sync_id, connector_id=connector_id, stream=stream,
        seq=seq, lower_bound=json.dumps(encode_key(r.lower)), upper_bound=json.dumps(encode_key(r.upper)),
        null_cursor=r.null_cursor, target_table=target_table, status=ChunkStatus.PENDING.value, attempts=0,
        rows_read=0, rows_written=0, updated_at=now,
    ) for seq, r in enumerate(ranges)]
    for start in range(0, len(rows), 500):  # multi-row INSERTs: thousands of chunks in well under a second
        conn.execute(sa.insert(chunks).values(rows[start:start + 500]))
    return ledger(conn, sync_id, stream)


def ledger(conn: sa.Connection, sync_id: int, stream: str | None = None) -> list[LedgerChunk]:
    query = sa.select(chunks).where(chunks.c.sync_id == sync_id)
    if stream is not None:
        query = query.where(chunks.c.stream == stream)
    return [_chunk(r) for r in conn.execute(query.order_by(chunks.c.stream, chunks.c.seq))]


def done_prefix_max_key(conn: sa.Connection, sync_id: int, stream: str) -> tuple | None:
    """The last key landed by the chunks before the plan's first unfinished one."""
    first_open = conn.execute(sa.select(sa.func.min(chunks.c.seq)).where(
        chunks.c.sync_id == sync_id, chunks.c.stream == stream,
        chunks.c.status != ChunkStatus.DONE.value)).scalar()
    query = sa.select(chunks.c.max_key).where(
        chunks.c.sync_id == sync_id, chunks.c.stream == stream, chunks.c.status == ChunkStatus.DONE.value,
        chunks.c.max_key.is_not(None))
    if first_open is not None:
        query = query.where(chunks.c.seq < first_open)
    text = conn.execute(query.order_by(chunks.c.seq.desc()).limit(1)).scalar()
    return stored_key(text)


def chunk_done(conn: sa.Connection, chunk_id: int, run_id: int, rows_read: int, rows_written: int,
               max_key: tuple | None, attempts: int) -> None:
    conn.execute(sa.update(chunks).where(chunks.c.id == chunk_id).values(
        status=ChunkStatus.DONE.value, last_run_id=run_id, rows_read=rows_read, rows_written=rows_written,
        max_key=json.dumps(encode_key(max_key)) if max_key is not None else None, error=None,
        attempts=chunks.c.attempts + attempts, updated_at=utcnow()))


def chunk_failed(conn: sa.Connection, chunk_id: int, run_id: int, error: str, attempts: int) -> None:
    now = utcnow()
    conn.execute(sa.update(chunks).where(chunks.c.id == chunk_id).values(
        status=ChunkStatus.FAILED.value, last_run_id=run_id, error=error,
        attempts=chunks.c.attempts + attempts, updated_at=now,
        first_failed_at=sa.func.coalesce(chunks.c.first_failed_at, now)))


def supersede(conn: sa.Connection, sync_id: int, stream: str) -> None:
    conn.execute(sa.update(chunks).where(
        chunks.c.sync_id == sync_id, chunks.c.stream == stream,
        chunks.c.status.in_([ChunkStatus.PENDING.value, ChunkStatus.FAILED.value]),
    ).values(status=ChunkStatus.SUPERSEDED.value, updated_at=utcnow()))


def ledger_summary(workspace: Workspace, conn: sa.Connection, connector_id: str) -> dict[str, int]:
    rows = conn.execute(sa.select(chunks.c.status, sa.func.count()).where(
        chunks.c.organization_id == workspace.organization_id, chunks.c.connector_id == connector_id,
    ).group_by(chunks.c.status))
    return {status: int(n) for status, n in rows}


# --- checkpoints ----------------------------------------------------------------------------

@dataclass
class StreamState:
    connector_id: str
    stream: str
    raw_table: str
    last_cursor: Any = None
    last_row_id: tuple | None = None
    last_window_start: Any = None
    last_window_end: Any = None
    planned_upper: Any = None
    active_sync_id: int | None = None
    plan: dict[str, Any] | None = None
    #: delta syncs since the last pass that looked for rows deleted in the source (None: never)
    syncs_since_deletes_check: int | None = None

    @property
    def has_checkpoint(self) -> bool:
        return self.last_cursor is not None


def _dec(text: str | None) -> Any:
    if text is None:
        return None
    value = decode_key(json.loads(text))
    return value[0] if value is not None else None


def _enc(value: Any) -> str | None:
    return None if value is None else json.dumps(encode_key((value,)))


def get_state(workspace: Workspace, conn: sa.Connection, connector_id: str, stream: str) -> StreamState | None:
    row = conn.execute(sa.select(state).where(
        state.c.organization_id == workspace.organization_id, state.c.connector_id == connector_id,
        state.c.stream == stream)).first()
    if row is None:
        return None
    return StreamState(
        connector_id=connector_id, stream=stream, raw_table=row.raw_table, last_cursor=_dec(row.last_cursor),
        last_row_id=stored_key(row.last_row_id),
        last_window_start=_dec(row.last_window_start), last_window_end=_dec(row.last_window_end),
        planned_upper=_dec(row.planned_upper), active_sync_id=row.active_sync_id,
        plan=json.loads(row.plan) if row.plan else None,
        syncs_since_deletes_check=row.syncs_since_deletes_check,
    )


def states(workspace: Workspace, conn: sa.Connection, connector_id: str) -> list[StreamState]:
    names = conn.execute(sa.select(state.c.stream).where(
        state.c.organization_id == workspace.organization_id, state.c.connector_id == connector_id)).scalars().all()
    return [get_state(workspace, conn, connector_id, n) for n in sorted(names)]


def put_state(workspace: Workspace, conn: sa.Connection, s: StreamState) -> None:
    values = dict(
        raw_table=s.raw_table, last_cursor=_enc(s.last_cursor),
        last_row_id=json.dumps(encode_key(s.last_row_id)) if s.last_row_id is not None else None,
        last_window_start=_enc(s.last_window_start), last_window_end=_enc(s.last_window_end),
        planned_upper=_enc(s.planned_upper), active_sync_id=s.active_sync_id,
        plan=json.dumps(s.plan) if s.plan is not None else None, updated_at=utcnow(),
        syncs_since_deletes_check=s.syncs_since_deletes_check,
    )
    where = (state.c.organization_id == workspace.organization_id, state.c.connector_id == s.connector_id,
             state.c.stream == s.stream)
    # select first: DuckDB's driver does not report an UPDATE's row count reliably
    if conn.execute(sa.select(state.c.stream).where(*where)).first() is not None:
        conn.execute(sa.update(state).where(*where).values(**values))
    else:
        conn.execute(sa.insert(state).values(organization_id=workspace.organization_id,
                                             connector_id=s.connector_id, stream=s.stream, **values))


# --- ranges whose rows are missing (the KPI side flags what they feed) ----------------------

REVIEW_IGNORED = "ignored"


@dataclass
class IncompleteRange:
    """A key range of a source table whose data is missing from the workspace, for the
    KPI side to flag the values it feeds as incomplete."""

    connector_id: str
    stream: str
    target_table: str  # the raw table the range would land in
    lower: tuple | None
    upper: tuple | None
    null_cursor: bool
    ignored: bool  # an analyst ignored it (with `reason`); else it still waits for a retry
    reason: str | None
    chunk_id: int


def incomplete_ranges(workspace: Workspace, conn: sa.Connection | None = None, *,
                      connector_id: str | None = None) -> list[IncompleteRange]:
    """Key ranges of source tables whose rows are missing because their chunk failed
    (ignored or still waiting for a retry), oldest first. A range leaves this list when
    its chunk lands or a later sync replaces the plan it belonged to (superseded)."""
    def read(c: sa.Connection) -> list[IncompleteRange]:
        query = sa.select(chunks).where(chunks.c.organization_id == workspace.organization_id,
                                        chunks.c.status == ChunkStatus.FAILED.value)
        if connector_id is not None:
            query = query.where(chunks.c.connector_id == connector_id)
        return [IncompleteRange(r.connector_id, r.stream, r.target_table, stored_key(r.lower_bound), stored_key(r.upper_bound),
                                bool(r.null_cursor), r.review_status == REVIEW_IGNORED, r.review_reason, r.id)
                for r in c.execute(query.order_by(chunks.c.id))]

    if conn is not None:
        return read(conn)
    with workspace.read() as c:
        return read(c)


def stored_key(text: str | None) -> tuple | None:
    """A key or bound as the ledger stores it (JSON of encode_key), or None."""
    return decode_key(json.loads(text)) if text else None
