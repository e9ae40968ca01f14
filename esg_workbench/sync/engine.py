"""The sync engine: full and delta loads in checkpointed chunks.

A plain loop over chunks, reporting through a progress callback and checking a cancel
token; gui/ wraps it in a worker thread and the CLI calls it directly.

Exactly once: a chunk's rows, its ledger row, the stream's checkpoint, the run's
counters and an audit entry are committed in one workspace transaction. A process
killed at any instant therefore resumes from the last committed chunk. Delta chunks
are upserted by primary key, so a re-read (look-back, resume) adds no duplicate; full
loads land in a shadow table that replaces the raw table in one transaction at the end.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from esg_workbench.audit import chain
from esg_workbench.core.errors import Cancelled, ConfigError, EsgError, NothingToResume, SyncBusy
from esg_workbench.core.keys import decode_key, encode_key
from esg_workbench.core.specs import (
    CancelToken,
    ChunkStatus,
    ChunkStrategy,
    ConnectorSpec,
    LOAD_OPTIONS,
    TABLE_SETTINGS,
    LoadSettings,
    LoadType,
    ProgressEvent,
    ReadScope,
    StreamRef,
    SyncStatus,
    TableInfo,
    Timeouts,
    table_settings_of,
)
from esg_workbench.sync import file_changes, planner
from esg_workbench.sync.source_calls import GuardedConnector, streamed_batches
from esg_workbench.workspace import concurrency, connectors_store, raw_tables, schema_cache, sync_records
from esg_workbench.workspace.database import Workspace
from esg_workbench.workspace.sync_records import LedgerChunk, StreamState

DEFAULT_RETRY_DELAYS = (2.0, 4.0, 8.0)
TEMPORAL = ("timestamp", "timestamptz", "date")
#: set in a connector's config when its password is in the keyring (the flag, never the secret)
PASSWORD_MARKER = "password_in_keyring"


@dataclass
class SyncRequest:
    connector: str  # name or id
    tables: list[str] | None = None  # None: every discovered table
    load_type: str | None = None  # override the connector's setting
    chunk_size: int | None = None
    chunk_strategy: str | None = None
    window: str | None = None
    resume: bool = False
    retry_failed: bool = False
    chunk_ids: tuple[int, ...] | None = None  # with retry_failed: only these failed chunks (sync/review.py)
    #: look for rows deleted in the source now (delta loads of tables with a key), whatever
    #: the tables' detect_deletes and deletes_every settings say
    detect_deletes: bool = False

    @property
    def mode(self) -> str:
        return "retry_failed" if self.retry_failed else "resume" if self.resume else "sync"


@dataclass
class StreamResult:
    stream: str
    raw_table: str | None = None
    chunks_planned: int = 0
    chunks_done: int = 0
    chunks_failed: int = 0
    rows_read: int = 0
    rows_written: int = 0
    rows_deleted: int = 0  # raw rows newly marked deleted in the source (_esg_deleted_at)
    error: str | None = None
    drift: str | None = None
    warnings: list[str] = field(default_factory=list)
    first_chunk_error: str | None = None  # why the first failed chunk failed (the run's message names it)


@dataclass
class SyncResult:
    run_id: int
    connector: str
    status: SyncStatus
    streams: list[StreamResult]
    seconds: float
    error: str | None = None
    mapped: list[str] = field(default_factory=list)  # what the saved mappings made of the new rows

    @property
    def rows_written(self) -> int:
        return sum(s.rows_written for s in self.streams)

    @property
    def rows_read(self) -> int:
        return sum(s.rows_read for s in self.streams)


def arrow_hash(table) -> str:
    """SHA-256 over a chunk's Arrow buffers (the audit entry's output hash)."""
    digest = hashlib.sha256()
    for column in table.columns:
        for chunk in column.chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    digest.update(memoryview(buf))
    return digest.hexdigest()


def _hash_batch(digest, batch) -> None:
    """A streamed chunk's output hash: SHA-256 over its batches' buffers in arrival order."""
    for column in batch.columns:
        for buf in column.buffers():
            if buf is not None:
                digest.update(memoryview(buf))


def _last_key(table, key: tuple[str, ...]) -> tuple | None:
    """The key of a chunk's last row, as Python values for the checkpoint."""
    import pyarrow as pa

    if table.num_rows == 0 or not key:
        return None
    last = table.slice(table.num_rows - 1, 1).select(list(key))
    # Python datetimes hold microseconds: a nanosecond key rounds down, so the next
    # read starts at or before it (a re-read row is upserted, none is skipped).
    columns = [c.cast(pa.timestamp("us", c.type.tz), safe=False)
               if pa.types.is_timestamp(c.type) and c.type.unit == "ns" else c for c in last.columns]
    return tuple(c[0].as_py() for c in columns)


class SyncEngine:
    """Runs syncs against one workspace. Several engines (threads) may share it."""

    _connector_locks: dict[tuple[int, str], threading.Lock] = {}
    _locks_guard = threading.Lock()

    def __init__(self, workspace: Workspace, *, retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
                 on_progress: Callable[[ProgressEvent], None] | None = None,
                 cancel: CancelToken | None = None,
                 secret_for: Callable[[str], str | None] | None = None,
                 connector_factory: Callable[[ConnectorSpec], Any] | None = None):
        self.workspace = workspace
        self.retry_delays = tuple(retry_delays)
        self.on_progress = on_progress
        self.cancel = cancel or CancelToken()
        self._secret_for = secret_for
        self._connector_factory = connector_factory

    # --- building blocks ------------------------------------------------------------------

    def spec_for(self, record: connectors_store.ConnectorRecord) -> ConnectorSpec:
        password = None
        if record.config.get(PASSWORD_MARKER):
            if self._secret_for is not None:
                password = self._secret_for(record.id)
            else:
                from esg_workbench import credentials

                password = credentials.load_secret(record.id)
        options = {k: v for k, v in record.config.items() if k != PASSWORD_MARKER}
        return ConnectorSpec(type=record.type, name=record.name, options=options, password=password)

    def open_connector(self, record: connectors_store.ConnectorRecord):
        spec = self.spec_for(record)
        if self._connector_factory is not None:
            return self._connector_factory(spec)
        from esg_workbench.connectors.registry import create_connector

        return create_connector(spec)

    @contextlib.contextmanager
    def _connector_lock(self, connector_id: str):
        """One sync per connector at a time (per process on DuckDB, which one process
        owns; across processes on PostgreSQL through the connector's lock row, which
        only its organization can see and lock: concurrency.connector_sync_lock)."""
        key = (id(self.workspace.engine), connector_id)
        with self._locks_guard:
            lock = self._connector_locks.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=False):
            raise SyncBusy("This connector is already syncing.")
        try:
            with concurrency.connector_sync_lock(self.workspace, connector_id) as held:
                if not held:
                    raise SyncBusy("This connector is already syncing in another ESG Workbench process.")
                yield
        finally:
            lock.release()

    def _sleep(self, seconds: float) -> None:
        if self.cancel.wait(seconds):
            raise Cancelled("The sync was cancelled.")

    # --- the run --------------------------------------------------------------------------

    def run(self, request: SyncRequest) -> SyncResult:
        started = time.monotonic()
        ws = self.workspace
        with ws.read() as conn:
            record = connectors_store.get(ws, conn, request.connector)

        with self._connector_lock(record.id):
            with ws.transaction() as conn:
                sync_records.mark_interrupted(ws, conn, record.id)
            resume = self._resume_point(record) if request.resume else None
            asked = self._asked(record, request, resume)
            settings = self._base_settings(record, asked["options"])
            with ws.transaction() as conn:
                run_id = sync_records.start_run(ws, conn, record.id, settings.load_type.value, request.mode,
                                                request=asked)
                chain.append(ws, conn, "sync.start", metadata={
                    "connector_id": record.id, "connector": record.name, "run_id": run_id, "mode": request.mode,
                    "load_type": settings.load_type.value, "tables": asked.get("streams") or asked.get("tables"),
                    "resumes": asked.get("resumes")})
            results: list[StreamResult] = []
            status, error = SyncStatus.SUCCESS, None
            connector = None
            try:
                # every call into the source is watched: Cancel and the read timeout end it
                timeouts = Timeouts.from_options(record.config)
                connector = GuardedConnector(lambda: self.open_connector(record), self.cancel, timeouts.read,
                                             max(timeouts.read, timeouts.statement))
                if settings.load_type is LoadType.FULL or request.resume or request.retry_failed:
                    _warm_up_reads(connector)  # these read: their libraries load while the source is described
                streams = self._streams(record, connector, request, asked, resume)
                if asked.get("streams") is None:
                    asked["streams"] = [s.qualified for s in streams]
                    with ws.transaction() as conn:
                        sync_records.set_request(conn, run_id, asked)
                watch = file_changes.watch(ws, record, connector, streams, request)  # None unless a file source
                open_plans = set(resume.open_streams) if resume else set()
                for stream in streams:
                    self.cancel.raise_if_cancelled()
                    result = StreamResult(stream.qualified)
                    results.append(result)
                    try:
                        stream_settings = self._settings_for(record, asked, stream, settings)
                        self._sync_stream(record, connector, stream, stream_settings, request, run_id, result,
                                          started, continue_plan=stream.qualified in open_plans)
                    except Cancelled:
                        raise
                    except EsgError as exc:
                        result.error = exc.describe()
                if watch is not None:  # new, deleted and left-out files; what the readers noticed
                    watch.report(results, run_id)
            except Cancelled:
                status, error = SyncStatus.CANCELLED, "Cancelled by the user. Resume continues from the last landed chunk."
            except EsgError as exc:
                status, error = SyncStatus.FAILED, exc.describe()
            finally:
                if connector is not None:
                    connector.close()
            if status is SyncStatus.SUCCESS:
                status, error = self._overall(results)
            # The run is finished before its rows are mapped: an apply leaves the rows of a
            # run still 'running' to that run (mapping/apply.py), so from here on any apply
            # (this one, or another analyst's) takes all of them or none.
            details = {"streams": [r.__dict__ for r in results], "mapped": []}
            with ws.transaction() as conn:
                sync_records.finish_run(conn, run_id, status, error, details)
                connectors_store.update(ws, conn, record.id, status=f"sync_{status.value}", status_message=error)
                chain.append(ws, conn, "sync.finish", metadata={
                    "connector_id": record.id, "run_id": run_id, "status": status.value,
                    "rows_written": sum(r.rows_written for r in results)})
            mapped = []
            if any(r.rows_written or r.rows_deleted for r in results):
                try:
                    mapped = self._map_new_rows(record, results)
                except Exception as exc:  # mapping must never lose the run's record
                    mapped = [f"saved mappings not applied: {type(exc).__name__}: {exc}"]
                if mapped:
                    with ws.transaction() as conn:
                        sync_records.set_details(conn, run_id, {**details, "mapped": mapped})
        return SyncResult(run_id, record.name, status, results, time.monotonic() - started, error, mapped)

    def _map_new_rows(self, record, results: list[StreamResult]) -> list[str]:
        """New chunks are mapped as they land: every saved mapping of this connector is
        applied incrementally to the rows this run landed, then the KPIs are recomputed.
        A mapping that fails is reported with the run; the landed data stays.
        Applying and aggregating import the unit registry (pint, about 0.15 s): only when
        a saved mapping reads one of the synced tables, not on every sync that lands rows."""
        from esg_workbench.mapping import store

        synced = {r.stream for r in results if r.rows_written or r.rows_deleted}
        synced |= {name.split(".")[-1] for name in synced}  # mappings may name a table without its schema
        notes, applied_any = [], False
        for found in store.list_mappings(self.workspace):
            if found["connector"] not in (record.name, record.id):
                continue
            mapping = store.load_mapping(self.workspace, found["name"])
            if not synced & {t.stream for t in mapping.tables}:
                continue
            from esg_workbench.mapping import apply

            try:
                applied = apply.apply_mapping(self.workspace, mapping, incremental=True)
            except EsgError as exc:
                notes.append(f"mapping '{mapping.name}' v{mapping.version} not applied: {exc.describe()}")
                continue
            applied_any = True
            notes.append(f"mapping '{mapping.name}' v{mapping.version}: {applied.staging_rows:,} staging rows")
        if applied_any:
            from esg_workbench.mapping import aggregate

            aggregate.aggregate(self.workspace)
        return notes

    @staticmethod
    def _overall(results: list[StreamResult]) -> tuple[SyncStatus, str | None]:
        problems = [r for r in results if r.error or r.chunks_failed]
        if not problems:
            return SyncStatus.SUCCESS, None
        def problem(r: StreamResult) -> str:
            if r.error:
                return r.error
            first = f", the first: {r.first_chunk_error}" if r.first_chunk_error else ""
            return f"{r.chunks_failed} chunk(s) failed{first}"
        text = "; ".join(f"{r.stream}: {problem(r)}" for r in problems)
        landed = any(r.chunks_done for r in results)
        if len(problems) == len(results) and not landed:
            return SyncStatus.FAILED, text
        return SyncStatus.PARTIAL_SUCCESS, text

    def _resume_point(self, record) -> sync_records.ResumePoint:
        """What a resume continues; nothing to continue is an error, and no run is
        recorded (so health and the last success stay as they were)."""
        with self.workspace.read() as conn:
            point = sync_records.resume_point(self.workspace, conn, record.id)
        if point.empty:
            raise NothingToResume(
                f"Nothing to resume for {record.name}: its last sync finished and no chunk is left to land.",
                hint="Start a new sync to read the source again.")
        return point

    @staticmethod
    def _asked(record, request: SyncRequest, resume: sync_records.ResumePoint | None) -> dict[str, Any]:
        """What this run is asked for, as recorded with it: the tables and the load options
        (the connector's, overridden by the request's). A resume is asked for what the
        interrupted run was asked for, with that run's options."""
        if resume is not None and resume.origin_run_id is not None:
            return {**resume.request, "resumes": resume.origin_run_id,
                    "streams": resume.streams(), "tables": resume.request.get("tables")}
        # (a connector-wide primary_key is the connector's own option, e.g. Databricks')
        options = {k: record.config[k] for k in (*LOAD_OPTIONS, TABLE_SETTINGS)
                   if k in record.config and k != "primary_key"}
        for key in ("load_type", "chunk_size", "chunk_strategy", "window"):
            value = getattr(request, key)
            if value is not None:
                options[key] = value
        overrides = [k for k in ("load_type", "chunk_size", "chunk_strategy", "window") if getattr(request, k) is not None]
        streams = resume.streams() if resume is not None else None
        return {"tables": request.tables, "streams": streams, "options": options, "overrides": overrides}

    @staticmethod
    def _base_settings(record, options: dict[str, Any]) -> LoadSettings:
        from esg_workbench.connectors.registry import OWN_CURSOR

        return LoadSettings.from_options(options, own_cursor=record.type in OWN_CURSOR,
                                         per_table=TABLE_SETTINGS in options)

    @staticmethod
    def _settings_for(record, asked: dict[str, Any], stream: StreamRef, base: LoadSettings) -> LoadSettings:
        """A table's own settings (connector option `tables`) over the connector's; an
        override given with the run (CLI flag, sync panel) wins over both."""
        from esg_workbench.connectors.registry import OWN_CURSOR

        options = asked["options"]
        own = table_settings_of(options.get(TABLE_SETTINGS), stream)
        if not own:
            return base
        merged = {**options, **{k: v for k, v in own.items() if k in LOAD_OPTIONS and k not in asked.get("overrides", ())}}
        return LoadSettings.from_options(merged, own_cursor=record.type in OWN_CURSOR)

    def _streams(self, record, connector, request: SyncRequest, asked: dict[str, Any],
                 resume: sync_records.ResumePoint | None) -> list[StreamRef]:
        ws = self.workspace
        default_schema = getattr(connector, "schema", None)

        def parse(name: str) -> StreamRef:  # recorded names are qualified where the source has schemas
            return StreamRef.parse(name, None if "." not in name else default_schema)

        if asked.get("streams") is not None:
            return [parse(s) for s in asked["streams"]]
        tables = asked.get("tables")
        if tables:
            streams = [StreamRef.parse(t, default_schema) for t in tables]
        elif request.retry_failed:
            with ws.read() as conn:
                active = [s for s in sync_records.states(ws, conn, record.id) if s.active_sync_id]
            return [parse(s.stream) for s in active]
        else:
            with ws.read() as conn:
                cached = schema_cache.load(ws, conn, record.id)
            streams = [t.stream for t in cached] if cached else connector.list_streams()
        if resume is not None:  # an interrupted run's request resolved now: leave out what it finished
            with ws.read() as conn:
                done = sync_records.streams_planned_since(ws, conn, record.id, resume.origin_run_id)
            streams = [s for s in streams if s.qualified not in done or s.qualified in resume.open_streams]
            streams += [parse(s) for s in resume.open_streams if s not in {x.qualified for x in streams}]
        return streams

    # --- one stream -----------------------------------------------------------------------

    def _describe(self, record, connector, stream: StreamRef, result: StreamResult) -> TableInfo:
        """Fresh columns from the source, compared with the schema cache (drift)."""
        from esg_workbench.core.errors import TableMissing

        infos = connector.describe([stream])
        if not infos:
            raise TableMissing(f"The table {stream.qualified} does not exist in the source (any more).")
        info = infos[0]
        ws = self.workspace
        with ws.transaction() as conn:
            drift = schema_cache.save(ws, conn, record.id, [info], complete=False).get(stream.qualified)
            if drift:
                result.drift = drift.describe()
                chain.append(ws, conn, "schema.drift", metadata={
                    "connector_id": record.id, "stream": stream.qualified, "drift": drift.describe()})
        return info

    def _sync_stream(self, record, connector, stream: StreamRef, settings: LoadSettings,
                     request: SyncRequest, run_id: int, result: StreamResult, started: float,
                     continue_plan: bool = False) -> None:
        ws = self.workspace
        name = stream.qualified
        with ws.read() as conn:
            st = sync_records.get_state(ws, conn, record.id, name)
        if continue_plan and (st is None or not st.active_sync_id):
            continue_plan = False  # (finished meanwhile: plan it anew like an unstarted one)
        if continue_plan or request.retry_failed:
            if st is None or not st.active_sync_id:
                result.warnings.append("nothing to resume")
                return
            with ws.transaction() as conn:
                wanted = {ChunkStatus.FAILED.value} if request.retry_failed else {ChunkStatus.PENDING.value, ChunkStatus.FAILED.value}
                todo = [c for c in sync_records.ledger(conn, st.active_sync_id, name) if c.status in wanted
                        and (request.chunk_ids is None or c.id in request.chunk_ids)]
                sync_records.continues(conn, run_id, st.active_sync_id)
            scope = _scope_from_plan(st.plan)
            load_type = LoadType(st.plan["load_type"])
        else:
            info = self._describe(record, connector, stream, result)
            st, scope, load_type, todo = self._new_plan(record, connector, stream, info, settings, run_id, st, result)
        result.raw_table = st.raw_table
        with ws.read() as conn:
            whole = sync_records.ledger(conn, st.active_sync_id, name) if st.active_sync_id else []
        result.chunks_planned = len(whole)
        result.chunks_done = sum(1 for c in whole if c.status == ChunkStatus.DONE.value)
        self._progress(record, result, started, "planned")
        self._run_chunks(record, connector, stream, scope, load_type, todo, run_id, st, result, started)
        if hasattr(connector, "read_warnings"):  # values landed otherwise than the source has them
            result.warnings += connector.read_warnings(stream)
        primary_key = (st.plan or {}).get("primary_key") or []
        self._complete_if_done(record, st, load_type, run_id, result)
        if load_type is LoadType.DELTA and primary_key:
            self._check_deletes(record, connector, stream, st, settings, request, primary_key, run_id, result)

    def _check_deletes(self, record, connector, stream: StreamRef, st: StreamState, settings: LoadSettings,
                       request: SyncRequest, key: list[str], run_id: int, result: StreamResult) -> None:
        """After a delta load, the pass that marks rows deleted in the source with
        _esg_deleted_at (sync/deletes.py): for a file source every time, for a database
        table after a complete delta when asked (the run's request, or the table's
        detect_deletes every deletes_every syncs)."""
        from esg_workbench.sync import deletes

        work = deletes.Pass(self.workspace, record, connector, stream, st, run_id, result, self.cancel,
                            self.retry_delays, self._sleep)
        if hasattr(connector, "current_files"):  # files: by file, from the listing
            work.files()
            return
        if st.active_sync_id is not None:
            return  # a chunk failed: the source's keys would be compared with an incomplete table
        due = deletes.due(request.detect_deletes, settings.detect_deletes, settings.deletes_every, st)
        if due is None:
            with self.workspace.transaction() as conn:
                st.syncs_since_deletes_check = (st.syncs_since_deletes_check or 0) + 1
                sync_records.put_state(self.workspace, conn, st)
        elif due:
            work.database(key, tuple((st.plan or {}).get("columns") or key))

    def _new_plan(self, record, connector, stream: StreamRef, info: TableInfo, settings: LoadSettings,
                  run_id: int, st: StreamState | None, result: StreamResult):
        ws = self.workspace
        name = stream.qualified
        if info.cursor_field and not settings.cursor_field:  # the source knows its own cursor (files)
            # ... and every load is ordered by it, so a full load ends on an exact checkpoint
            settings = settings.with_overrides(cursor_field=info.cursor_field, chunk_strategy=ChunkStrategy.TIME)
        if settings.load_type is LoadType.DELTA and not settings.cursor_field:
            raise ConfigError(f"A delta load of {name} needs a cursor_field (for example updated_at).")
        if settings.cursor_field and info.column(settings.cursor_field) is None:
            raise ConfigError(f"The cursor field '{settings.cursor_field}' is not a column of {name}.",
                              hint="Pick an existing timestamp column as cursor_field, or use a full load.")
        info = _with_primary_key(info, settings.primary_key)
        if settings.load_type is LoadType.DELTA and not info.primary_key:
            raise ConfigError(f"{name} has no primary key, so a delta load cannot update rows in place.",
                              hint="Set a primary_key for this table (columns that identify a row), or use a full load.")
        cursor = info.column(settings.cursor_field) if settings.cursor_field else None
        if settings.chunk_strategy is ChunkStrategy.AUTO and cursor and cursor.family not in TEMPORAL:
            # a version number or rowversion cursor has no days or months: page by key ranges
            settings = settings.with_overrides(chunk_strategy=ChunkStrategy.ID)
        key = planner.ordering_key(settings, info.primary_key)
        raw_table = st.raw_table if st else raw_tables.raw_table_name(record.id, name)
        st = st or StreamState(record.id, name, raw_table)
        cursor_max = connector.cursor_max(stream, settings.cursor_field) if settings.cursor_field else None
        after, inclusive, include_nulls = None, False, bool(settings.cursor_field)
        if settings.load_type is LoadType.DELTA and st.has_checkpoint:
            include_nulls = False
            if settings.lookback_seconds and isinstance(st.last_cursor, (dt.datetime, dt.date)):
                after, inclusive = (st.last_cursor - dt.timedelta(seconds=settings.lookback_seconds),), True
            elif st.last_row_id is not None:
                after = (st.last_cursor, *st.last_row_id)
            else:
                after, inclusive = (st.last_cursor,), True
            with contextlib.suppress(EsgError):  # a NOT NULL cursor needs no count
                nulls = connector.null_cursor_count(stream, settings.cursor_field) if cursor.nullable else 0
                if nulls:
                    result.warnings.append(f"{nulls} rows have no {settings.cursor_field}; only a full load reads them again")
        scope = ReadScope(
            columns=tuple(c.name for c in info.columns), key=key, after=after, after_inclusive=inclusive,
            cursor_field=settings.cursor_field, cursor_max=_read_bound(settings.cursor_field, key, cursor_max),
            include_null_cursor=include_nulls and settings.cursor_field in key,
        )
        # a source with its own notion of chunks (a file each, say) plans them itself
        if hasattr(connector, "plan_chunks"):
            ranges, sizing = connector.plan_chunks(stream, scope, settings)
        else:
            ranges, sizing = planner.plan(connector, stream, scope, settings)
        target = raw_tables.shadow_table_name(raw_table, run_id) if settings.load_type is LoadType.FULL else raw_table
        with ws.transaction() as conn:
            if st.active_sync_id:  # an unfinished earlier plan is replaced by this one
                sync_records.supersede(conn, st.active_sync_id, name)
                if st.plan and st.plan.get("target") and st.plan["target"] != raw_table:
                    raw_tables.drop_table(ws, conn, st.plan["target"])
            todo = sync_records.plan_chunks(ws, conn, run_id, record.id, name, ranges, target)
            st.active_sync_id = run_id
            st.planned_upper = cursor_max
            st.plan = {
                "load_type": settings.load_type.value, "columns": list(scope.columns), "key": list(key),
                "after": encode_key(after), "after_inclusive": inclusive, "cursor_field": settings.cursor_field,
                "cursor_max": encode_key((cursor_max,)), "include_null_cursor": scope.include_null_cursor,
                "target": target, "primary_key": info.primary_key, "replace_key": info.replace_key,
                "chunk_size": sizing.chunk_size,
                "window": sizing.window,
            }
            sync_records.put_state(ws, conn, st)
            chain.append(ws, conn, "sync.plan", metadata={
                "connector_id": record.id, "run_id": run_id, "stream": name, "chunks": len(ranges),
                "load_type": settings.load_type.value, "chunk_size": sizing.chunk_size})
        return st, scope, settings.load_type, todo

    def _run_chunks(self, record, connector, stream: StreamRef, scope: ReadScope, load_type: LoadType,
                    todo: list[LedgerChunk], run_id: int, st: StreamState, result: StreamResult,
                    started: float) -> None:
        """Read chunk i+1 while chunk i is written: the source and the workspace overlap."""
        if not todo:
            return
        if len(todo) == 1 and self._streams_whole(connector, scope, load_type, todo[0]):
            self._stream_with_retries(record, connector, stream, scope, todo[0], run_id, st, result, started)
            self._progress(record, result, started, "", todo[0])
            self.cancel.raise_if_cancelled()
            return
        landed: dict[str, dict[str, str] | None] = {}  # target -> its columns as committed (_write_rows)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="esg-read") as reader:
            pending = reader.submit(self._read_with_retries, connector, stream, scope, todo[0])
            for i, chunk in enumerate(todo):
                outcome = pending.result()  # (table, attempts, digest) or (exception, attempts, None)
                if i + 1 < len(todo) and not self.cancel.cancelled:
                    pending = reader.submit(self._read_with_retries, connector, stream, scope, todo[i + 1])
                if isinstance(outcome[0], Cancelled):
                    raise outcome[0]
                if isinstance(outcome[0], BaseException):
                    self._fail_chunk(record, chunk, run_id, outcome[0], outcome[1], result)
                else:
                    try:
                        self._land_with_retries(record, stream, scope, load_type, chunk, outcome, run_id, st, result,
                                                landed)
                    except EsgError as exc:
                        self._fail_chunk(record, chunk, run_id, exc, outcome[1], result)
                    except Exception as exc:  # a workspace write failed: the chunk fails, nothing half-landed
                        self._fail_chunk(record, chunk, run_id, exc, outcome[1], result)
                # the landed chunk goes now, not when the next read is done: otherwise three
                # chunks' Arrow (this one, the next, the one after it starting) meet at the peak
                outcome = None
                self._progress(record, result, started, "", chunk)
                self.cancel.raise_if_cancelled()

    def _read_with_retries(self, connector, stream, scope, chunk: LedgerChunk):
        """Read one chunk into memory; transient errors are retried with backoff
        (tenacity; the waits are `retry_delays` and end early on cancel).
        Returns (arrow table, attempts, its hash) or (exception, attempts, None). The
        hash is computed here, off the writing thread, which is the critical path."""
        import pyarrow as pa
        import tenacity

        delays = self.retry_delays
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(len(delays) + 1),
            wait=lambda state: delays[min(state.attempt_number, len(delays)) - 1],
            retry=tenacity.retry_if_exception(lambda exc: isinstance(exc, EsgError) and exc.transient),
            sleep=self._sleep,
            reraise=True,
        )
        attempts = 0

        def read_once():
            nonlocal attempts
            attempts += 1
            self.cancel.raise_if_cancelled()
            batches = connector.read_all(stream, scope, chunk.range)
            return pa.Table.from_batches(batches) if batches else None

        try:
            table = retrying(read_once)
        except Exception as exc:  # Cancelled, a permanent error, or retries used up: reported
            return exc, attempts, None
        return table, attempts, arrow_hash(table) if table is not None and table.num_rows else None

    def _land_with_retries(self, record, stream: StreamRef, scope: ReadScope, load_type: LoadType,
                           chunk: LedgerChunk, read: tuple, run_id: int, st: StreamState,
                           result: StreamResult, landed: dict[str, dict[str, str] | None]) -> None:
        """Land a chunk; when PostgreSQL rolled its transaction back to resolve a conflict
        with another analyst's work (a deadlock, a serialization failure), land it again.
        Nothing of the rolled-back attempt stays, in the workspace or in `st`."""
        before = dataclasses.replace(st)

        def attempt() -> None:
            vars(st).update(vars(before))  # the checkpoint as it was before the failed attempt
            self._land_chunk(record, stream, scope, load_type, chunk, read, run_id, st, result, landed)

        concurrency.retrying(attempt, what=f"Landing chunk {chunk.seq + 1} of {chunk.stream}")

    def _land_chunk(self, record, stream: StreamRef, scope: ReadScope, load_type: LoadType, chunk: LedgerChunk,
                    read: tuple, run_id: int, st: StreamState, result: StreamResult,
                    landed: dict[str, dict[str, str] | None]) -> None:
        table, attempts, digest = read
        ws = self.workspace
        rows = 0 if table is None else table.num_rows
        target = chunk.target_table
        last = _last_key(table, scope.key if not chunk.range.null_cursor else tuple(k for k in scope.key if k != scope.cursor_field)) if rows else None
        names = {}
        if table is not None:  # columns named like lineage columns or alike but for case land renamed
            table, names = raw_tables.with_landing_names(table)
            result.warnings += [w for w in (f"column {a} landed as {b}" for a, b in names.items())
                                if w not in result.warnings]
        with ws.transaction() as conn:
            columns = self._write_rows(conn, target, table, names, load_type, st, run_id, chunk, landed.get(target))
            self._record_chunk(conn, record, stream, load_type, chunk, run_id, st, rows,
                               last if not chunk.range.null_cursor else None, attempts, digest)
        landed[target] = columns  # committed: what the next chunk may take as known
        raw_tables.release_written_blocks(ws)  # else the process's memory grows with the table
        result.chunks_done += 1
        result.rows_read += rows
        result.rows_written += rows

    def _write_rows(self, conn, target: str, table, names: dict[str, str], load_type: LoadType,
                    st: StreamState, run_id: int, chunk: LedgerChunk,
                    known: dict[str, str] | None = None) -> dict[str, str] | None:
        """Rows into the chunk's target inside the caller's transaction: the table made
        (typed, even when empty) or its columns following the source, a delta's keys replaced.

        `known`: the target's columns as an earlier chunk of this run committed them (the
        connector's sync lock keeps anyone else from altering its raw tables), so a
        chunk does not ask the workspace again (a catalog query, about 15 ms on DuckDB).
        Returns the target's columns when this wrote no DDL, else None (the next chunk asks)."""
        ws = self.workspace
        if table is None:
            return known
        rows = table.num_rows
        columns = known if known is not None else raw_tables.existing_columns(ws, conn, target)
        altered = columns is None
        if columns is None:
            raw_tables.create_table(ws, conn, target, table.schema)  # (an empty table lands typed too)
        elif rows:  # schema drift since the table was made: follow the source
            new = [f for f in table.schema if f.name not in columns]
            if new:
                raw_tables.add_columns(ws, conn, target, new)
            retyped = [f for f in table.schema if f.name in columns
                       and raw_tables.column_type(ws, f) != columns[f.name]]
            if retyped:
                raw_tables.retype_columns(ws, conn, target, retyped, columns)
            altered = bool(new or retyped)
        if rows:
            if load_type is LoadType.DELTA and st.plan and st.plan.get("replace_key"):
                # e.g. a file's name: a changed file's earlier rows all go, however many it has now
                key = [names.get(k, k) for k in st.plan["replace_key"]]
                raw_tables.delete_keys(ws, conn, target, table.select(key).group_by(key).aggregate([]), key)
            elif load_type is LoadType.DELTA and st.plan and st.plan.get("primary_key"):
                raw_tables.delete_keys(ws, conn, target, table, [names.get(k, k) for k in st.plan["primary_key"]])
            raw_tables.append(ws, conn, target, table, run_id, chunk.id)
        return None if altered else columns

    def _record_chunk(self, conn, record, stream: StreamRef, load_type: LoadType, chunk: LedgerChunk,
                      run_id: int, st: StreamState, rows: int, max_key, attempts: int, digest: str | None) -> None:
        """The chunk's ledger row, the run's counters, a delta's checkpoint and the audit
        entry, inside the transaction that lands the chunk's (last) rows."""
        ws = self.workspace
        sync_records.chunk_done(conn, chunk.id, run_id, rows, rows, max_key, attempts)
        sync_records.add_counts(conn, run_id, rows, rows)
        if load_type is LoadType.DELTA:
            self._advance_checkpoint(conn, st, chunk)
        chain.append(ws, conn, "sync.chunk", input_hash=chain.sha256_json({
            "connector_id": record.id, "stream": stream.qualified, "sync_id": chunk.sync_id, "seq": chunk.seq,
            "lower": encode_key(chunk.range.lower), "upper": encode_key(chunk.range.upper),
            "null_cursor": chunk.range.null_cursor}),
            output_hash=digest,
            metadata={"connector_id": record.id, "stream": stream.qualified, "run_id": run_id,
                      "chunk_id": chunk.id, "seq": chunk.seq, "range": chunk.range.describe(),
                      "rows": rows, "target": chunk.target_table})

    # --- a full load of a table with no key and no row ranges: one chunk, streamed ------------
    # Such a table cannot be cut into ranges, so its one chunk is read as a stream and
    # written batch by batch (about chunk_size rows a transaction) into the shadow table:
    # memory stays bounded by the chunk size. The ledger row commits with the last batch,
    # so a stream broken off (cancel, kill, error) leaves the chunk pending, and the next
    # attempt starts again from an empty shadow table: no row lands twice.

    @staticmethod
    def _streams_whole(connector, scope: ReadScope, load_type: LoadType, chunk: LedgerChunk) -> bool:
        whole = chunk.range.lower is None and chunk.range.upper is None and not chunk.range.null_cursor
        return (load_type is LoadType.FULL and not scope.key and whole and hasattr(connector, "read_into")
                and not hasattr(connector, "plan_chunks"))

    def _stream_with_retries(self, record, connector, stream: StreamRef, scope: ReadScope, chunk: LedgerChunk,
                             run_id: int, st: StreamState, result: StreamResult, started: float) -> None:
        """Transient errors start the stream again (after the retry delays); others fail the chunk."""
        delays = self.retry_delays
        read_before = result.rows_read
        attempts = 0
        while True:
            attempts += 1
            result.rows_read = read_before
            try:
                self._stream_chunk(record, connector, stream, scope, chunk, run_id, st, result, started, attempts)
                return
            except Cancelled:
                result.rows_read = read_before
                raise
            except Exception as exc:  # a source or a workspace error: nothing of it counts as landed
                result.rows_read = read_before
                if isinstance(exc, EsgError) and exc.transient and attempts <= len(delays):
                    self._sleep(delays[attempts - 1])
                    self.cancel.raise_if_cancelled()
                    continue
                self._fail_chunk(record, chunk, run_id, exc, attempts, result)
                return

    def _stream_chunk(self, record, connector, stream: StreamRef, scope: ReadScope, chunk: LedgerChunk,
                      run_id: int, st: StreamState, result: StreamResult, started: float, attempts: int) -> None:
        import pyarrow as pa

        ws = self.workspace
        target = chunk.target_table
        with ws.transaction() as conn:  # nothing of an earlier, broken-off stream stays
            raw_tables.drop_table(ws, conn, target)
        batch_rows = int((st.plan or {}).get("chunk_size") or planner.auto_sizing(0).chunk_size)
        digest = hashlib.sha256()
        pending: list = []
        pending_rows = landed = 0
        schema = None
        columns: dict[str, dict[str, str] | None] = {}  # the shadow table's columns as committed (_write_rows)

        def write(final: bool) -> None:
            nonlocal pending, pending_rows, landed
            table = pa.Table.from_batches(pending, schema=schema) if schema is not None else None
            names: dict[str, str] = {}
            if table is not None:
                table, names = raw_tables.with_landing_names(table)
                result.warnings += [w for w in (f"column {a} landed as {b}" for a, b in names.items())
                                    if w not in result.warnings]

            def attempt() -> None:
                with ws.transaction() as conn:
                    known = self._write_rows(conn, target, table, names, LoadType.FULL, st, run_id, chunk,
                                             columns.get(target))
                    if final:
                        self._record_chunk(conn, record, stream, LoadType.FULL, chunk, run_id, st,
                                           landed + pending_rows, None, attempts,
                                           digest.hexdigest() if landed + pending_rows else None)
                columns[target] = known  # committed

            concurrency.retrying(attempt, what=f"Landing rows of {chunk.stream}")
            raw_tables.release_written_blocks(ws)
            landed += pending_rows
            pending, pending_rows = [], 0

        with streamed_batches(connector, stream, scope, chunk.range, self.cancel,
                              what="the streamed read") as batches:
            for batch in batches:
                schema = batch.schema
                _hash_batch(digest, batch)
                pending.append(batch)
                pending_rows += batch.num_rows
                result.rows_read += batch.num_rows
                if pending_rows >= batch_rows:
                    write(final=False)
                    self._progress(record, result, started, f"{landed:,} rows landed", chunk)
                self.cancel.raise_if_cancelled()
        write(final=True)
        result.chunks_done += 1
        result.rows_written += landed

    def _advance_checkpoint(self, conn, st: StreamState, chunk: LedgerChunk) -> None:
        """A delta's checkpoint covers the contiguous prefix of done chunks of the plan
        (chunks after a failed one are in the ledger, not yet in the checkpoint)."""
        prefix_max = sync_records.done_prefix_max_key(conn, chunk.sync_id, st.stream)
        if prefix_max is not None and prefix_max != (st.last_cursor, *(st.last_row_id or ())):
            st.last_cursor, st.last_row_id = prefix_max[0], tuple(prefix_max[1:])
            st.last_window_start = chunk.range.lower[0] if chunk.range.lower else None
            st.last_window_end = chunk.range.upper[0] if chunk.range.upper else None
            sync_records.put_state(self.workspace, conn, st)

    def _fail_chunk(self, record, chunk: LedgerChunk, run_id: int, exc: BaseException, attempts: int,
                    result: StreamResult) -> None:
        text = exc.describe() if isinstance(exc, EsgError) else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        text = f"Chunk {chunk.seq + 1} {chunk.range.describe()} of {chunk.stream} failed after {attempts} attempt(s): {text}"
        ws = self.workspace
        with ws.transaction() as conn:
            sync_records.chunk_failed(conn, chunk.id, run_id, text, attempts)
            chain.append(ws, conn, "sync.chunk_failed", metadata={
                "connector_id": record.id, "stream": chunk.stream, "run_id": run_id, "chunk_id": chunk.id,
                "error": text})
        result.chunks_failed += 1
        result.first_chunk_error = result.first_chunk_error or text

    def _complete_if_done(self, record, st: StreamState, load_type: LoadType, run_id: int,
                          result: StreamResult) -> None:
        """When every chunk of the plan is done: swap a full load in, close the plan."""
        ws = self.workspace
        with ws.transaction() as conn:
            ledger = sync_records.ledger(conn, st.active_sync_id, st.stream)
            result.chunks_failed = sum(1 for c in ledger if c.status == ChunkStatus.FAILED.value)
            if any(c.status != ChunkStatus.DONE.value for c in ledger):
                return
            plan = st.plan or {}
            # the ledger lists chunks in key order: the last landed key is the largest
            done = [c.max_key for c in ledger if c.max_key is not None]
            if load_type is LoadType.FULL:
                target = plan.get("target")
                if raw_tables.existing_columns(ws, conn, target) is not None:
                    raw_tables.swap_in(ws, conn, target, st.raw_table)
                elif raw_tables.existing_columns(ws, conn, st.raw_table) is not None:
                    conn.exec_driver_sql(f"DELETE FROM {ws.engine.dialect.identifier_preparer.quote(st.raw_table)}")
                if plan.get("cursor_field") and done and (plan.get("key") or [None])[0] == plan["cursor_field"]:
                    # paged by (cursor, key) like a delta: the last landed key is an exact checkpoint
                    st.last_cursor, st.last_row_id = done[-1][0], tuple(done[-1][1:])
                elif plan.get("cursor_field"):
                    cursor_max = decode_key(plan.get("cursor_max"))[0]
                    st.last_cursor, st.last_row_id = cursor_max, None  # next delta re-reads the tie group
            else:
                if done:
                    st.last_cursor, st.last_row_id = done[-1][0], tuple(done[-1][1:])
            st.active_sync_id = None
            st.plan = None
            st.planned_upper = None
            sync_records.put_state(ws, conn, st)
            chain.append(ws, conn, "sync.complete", metadata={
                "connector_id": record.id, "stream": st.stream, "run_id": run_id, "load_type": load_type.value,
                "raw_table": st.raw_table})

    def _progress(self, record, result: StreamResult, started: float, message: str,
                  chunk: LedgerChunk | None = None) -> None:
        if self.on_progress is None:
            return
        self.on_progress(ProgressEvent(
            connector=record.name, stream=result.stream, chunks_done=result.chunks_done,
            chunks_planned=result.chunks_planned, chunks_failed=result.chunks_failed,
            rows_read=result.rows_read, rows_written=result.rows_written,
            elapsed_seconds=time.monotonic() - started,
            current_chunk=chunk.range.describe() if chunk else "", message=message,
        ))


def _warm_up_reads(connector) -> None:
    """Import what reads need (Arrow, the connector's `read_modules`, e.g. its ADBC driver)
    on a thread of their own while the run describes and plans the tables, which mostly
    waits on the source: the first chunk's read then starts without its 0.1-0.3 s of
    imports. Only for runs that will read: a delta may find nothing new and need none of it."""
    import importlib

    modules = ("pyarrow", *(getattr(connector, "read_modules", None) or ()))

    def load() -> None:
        for name in modules:
            with contextlib.suppress(Exception):  # the read itself reports what is missing
                importlib.import_module(name)

    threading.Thread(target=load, name="esg-warm-up", daemon=True).start()


def _with_primary_key(info: TableInfo, primary_key: tuple[str, ...]) -> TableInfo:
    """The table with the primary key set for it, when it declares none. A key set for a
    table that declares another one is refused rather than silently ignored."""
    if not primary_key or list(primary_key) == info.primary_key:
        return info
    name = info.stream.qualified
    if info.primary_key:
        raise ConfigError(f"{name} declares the primary key ({', '.join(info.primary_key)}); the primary_key "
                          f"set for it ({', '.join(primary_key)}) differs.",
                          hint="Remove the table's primary_key setting: the declared key is used.")
    missing = [k for k in primary_key if info.column(k) is None]
    if missing:
        raise ConfigError(f"The primary_key set for {name} names {', '.join(missing)}, which {name} does not have.",
                          hint="Pick columns of the table that together identify a row.")
    return dataclasses.replace(info, primary_key=list(primary_key))


def _read_bound(cursor_field: str | None, key: tuple[str, ...], cursor_max: Any) -> Any:
    """The cursor's upper bound applies to reads only when rows are paged by the cursor
    (delta loads, time-window full loads): there it keeps a row that moves during the sync
    from being read twice. A full load paged by primary key reads every row, so bounding it
    would drop rows whose cursor is NULL (`cursor <= max` is never true for them) and rows
    updated while the load runs. The plan still keeps `cursor_max` for the checkpoint."""
    return cursor_max if cursor_field and cursor_field in key else None


def _scope_from_plan(plan: dict[str, Any]) -> ReadScope:
    cursor_max = decode_key(plan.get("cursor_max"))
    return ReadScope(
        columns=tuple(plan["columns"]), key=tuple(plan["key"]), after=decode_key(plan.get("after")),
        after_inclusive=plan.get("after_inclusive", False), cursor_field=plan.get("cursor_field"),
        cursor_max=_read_bound(plan.get("cursor_field"), tuple(plan["key"]), cursor_max[0] if cursor_max else None),
        include_null_cursor=plan.get("include_null_cursor", False),
    )
