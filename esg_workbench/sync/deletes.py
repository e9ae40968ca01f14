"""Rows deleted in the source: the pass after a delta load that marks them.

A delta load reads only rows that changed, so a row deleted in the source stays in the
raw table. The pass finds such rows and sets `_esg_deleted_at` on them (they are kept,
not erased; mapping leaves them out; a row whose key comes back loses the mark).

* Database tables (with a key, when the table's `detect_deletes` is due or the run asks
  for it, after a complete delta): every key of the source is read (the key columns
  only) as a stream and landed batch by batch in a key table of the workspace
  (raw_tables.create_source_keys); when the stream has ended, one anti-join marks the
  raw rows whose key is not there. Memory is bounded by a batch, whatever the table's
  size. Nothing is marked unless every key was read: a cancelled pass, or a source
  error (after the transient retries), marks nothing and the run says why.
* File sources (after every delta load, whether or not `detect_deletes` is set: the
  listing is already there, nothing more is read): the rows of a file that is gone from
  the source, emptied to 0 bytes, or read now without a data row (emptied down to its
  header) are marked, per file, with a note naming the file and its rows. A changed file
  replaces its rows when it is read, so rows deleted inside a file need no pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from esg_workbench.audit import chain
from esg_workbench.core.errors import Cancelled, EsgError
from esg_workbench.core.specs import CancelToken, ChunkRange, ReadScope, StreamRef
from esg_workbench.sync.source_calls import streamed_batches
from esg_workbench.workspace import raw_tables, sync_records
from esg_workbench.workspace.database import Workspace
from esg_workbench.workspace.sync_records import StreamState

#: keys collected before they are written to the key table (one transaction each)
BATCH_KEYS = 200_000
#: a file source's lineage columns: the file of a row, and its modification time when read
FILE_COLUMN, MODIFIED_COLUMN = "_esg_file", "_esg_modified"
#: files named in one note before "and N more"
SHOWN = 5


@dataclasses.dataclass
class Pass:
    """One table's deletes pass within a run (see the module docstring)."""

    workspace: Workspace
    record: Any  # connectors_store.ConnectorRecord
    connector: Any  # a GuardedConnector: every call watched (cancel, read timeout)
    stream: StreamRef
    state: StreamState
    run_id: int
    result: Any  # the engine's StreamResult: rows_deleted and warnings
    cancel: CancelToken
    retry_delays: tuple[float, ...] = ()
    sleep: Callable[[float], None] = lambda seconds: None

    # --- database tables --------------------------------------------------------------------

    def database(self, key: list[str], columns: tuple[str, ...]) -> None:
        """Read every key of the source into the key table, then mark. `columns`: the
        stream's source columns (a key column may land under another name)."""
        ws, st = self.workspace, self.state
        landed = raw_tables.landing_names(list(columns or key))
        raw_key = [landed.get(k, k) for k in key]
        with ws.read() as conn:
            existing = raw_tables.existing_columns(ws, conn, st.raw_table)
        if existing is None:
            return  # nothing landed yet: nothing to mark
        missing = [k for k in raw_key if k not in existing]
        if missing:
            self.result.warnings.append(
                f"deleted rows not looked for: the key column(s) {', '.join(missing)} are not in the raw table "
                f"{st.raw_table} (the key changed since the rows landed); a full load brings the table up to date.")
            return
        attempts = 0
        while True:
            attempts += 1
            try:
                with _KeySession(ws) as session:
                    keys = session.create(st.raw_table, raw_key)
                    total = self._collect(session, keys, key, raw_key)
                    self._mark(session, keys, key, raw_key, total)
                return
            except Cancelled:
                raise  # nothing was marked: the key table went with the session
            except EsgError as exc:
                if exc.transient and attempts <= len(self.retry_delays):
                    self.sleep(self.retry_delays[attempts - 1])
                    continue
                self.result.warnings.append(f"deleted rows not looked for (nothing was marked): {exc.describe()}")
                return
            except Exception as exc:  # a workspace error (a key retyped since it landed, say): a note, not a failure
                self.result.warnings.append(f"deleted rows not looked for (nothing was marked): "
                                            f"{type(exc).__name__}: {_first_line(exc)}")
                return

    def _collect(self, session: "_KeySession", keys: str, key: list[str], raw_key: list[str]) -> int:
        """Stream the source's keys into the key table; returns how many there are."""
        import pyarrow as pa

        scope = ReadScope(columns=tuple(key), key=tuple(key))
        pending: list = []
        pending_rows = total = 0

        def write() -> None:
            nonlocal pending, pending_rows, total
            table = pa.Table.from_batches(pending).rename_columns(raw_key)
            pending, pending_rows = [], 0  # let the batches go before the next arrive
            with session.transaction() as conn:
                total += raw_tables.add_source_keys(self.workspace, conn, keys, table)

        with streamed_batches(self.connector, self.stream, scope, ChunkRange(), self.cancel,
                              what="the keys' read") as batches:
            for batch in batches:
                if batch.num_rows:
                    pending.append(batch.select(key) if batch.schema.names != key else batch)
                    pending_rows += batch.num_rows
                if pending_rows >= BATCH_KEYS:
                    write()
                self.cancel.raise_if_cancelled()
        if pending:
            write()
        self.cancel.raise_if_cancelled()  # cancelled as the last keys arrived: still nothing marked
        return total

    def _mark(self, session: "_KeySession", keys: str, key: list[str], raw_key: list[str], total: int) -> None:
        ws, st = self.workspace, self.state
        with session.transaction() as conn:
            found = raw_tables.mark_deleted(ws, conn, st.raw_table, keys, raw_key)
            raw_tables.drop_source_keys(ws, conn, keys)
            st.syncs_since_deletes_check = 0
            self._record(conn, found, {"source_keys": total})
        if total == 0 and found.marked:
            self.result.warnings.append(
                f"the source table has no rows now: all {found.marked:,} landed row(s) were marked deleted "
                "(_esg_deleted_at). If the table was emptied by mistake, the marks go when its rows are back.")
        elif found.marked or found.unmarked:
            self.result.warnings.append(
                f"{found.marked:,} row(s) deleted in the source marked with _esg_deleted_at"
                + (f"; {found.unmarked:,} back in the source unmarked" if found.unmarked else ""))

    # --- file sources -------------------------------------------------------------------------

    def files(self) -> None:
        """Mark the rows of the files gone, emptied to 0 bytes or read in this run without
        a data row (emptied down to their header); take the marks off the rows of a file that is back as it
        was (same name and time: restored from a backup, say). A note, never an error:
        the run's rows have landed."""
        try:
            self._files(set(self.connector.files_read_empty(self.stream.qualified)))
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 (the listing or the workspace failed: nothing was marked)
            text = exc.describe() if isinstance(exc, EsgError) else f"{type(exc).__name__}: {_first_line(exc)}"
            self.result.warnings.append(f"the rows of deleted or emptied files were not looked for "
                                        f"(nothing was marked): {text}")

    def _files(self, emptied_by_reads: set[str]) -> None:
        ws, st = self.workspace, self.state
        listed = self.connector.listed_files(self.stream.qualified)
        present = {f for f, (size, _) in listed.items() if size}
        emptied = {f for f, (size, _) in listed.items() if not size} | (present & emptied_by_reads)
        keep = sorted(present - emptied)
        with ws.read() as conn:
            existing = raw_tables.existing_columns(ws, conn, st.raw_table)
        if existing is None or FILE_COLUMN not in existing or MODIFIED_COLUMN not in existing:
            return
        import pyarrow as pa

        files = pa.table({FILE_COLUMN: pa.array(keep, pa.string()),
                          MODIFIED_COLUMN: pa.array([listed[f][1] for f in keep], pa.timestamp("us", "UTC"))})
        with _KeySession(ws) as session:
            keys = session.create(st.raw_table, [FILE_COLUMN, MODIFIED_COLUMN])
            with session.transaction() as conn:
                raw_tables.add_source_keys(ws, conn, keys, files)
                found = raw_tables.mark_deleted(ws, conn, st.raw_table, keys, [FILE_COLUMN], count_by=FILE_COLUMN,
                                                back_key=[FILE_COLUMN, MODIFIED_COLUMN])
                raw_tables.drop_source_keys(ws, conn, keys)
                if found.marked or found.unmarked:
                    self._record(conn, found, {"files_present": len(keep), "files_marked": sorted(found.by)})
        for what, paths in (("emptied to 0 bytes", {f for f in found.by if f in listed and not listed[f][0]}),
                            ("emptied down to its header", {f for f in found.by if f in present}),
                            ("deleted from the source", {f for f in found.by if f not in listed})):
            if paths:
                self.result.warnings.append(
                    f"{len(paths)} file{'s' if len(paths) > 1 else ''} {what}: "
                    f"{_per_file(found.by, paths)} marked deleted (_esg_deleted_at); mapping leaves them out.")
        if found.unmarked:
            self.result.warnings.append(f"{found.unmarked:,} row(s) of files back in the source unmarked")

    # --- both ---------------------------------------------------------------------------------

    def _record(self, conn, found: raw_tables.Marked, metadata: dict) -> None:
        """The run's count, the stream's state and the audit entry, in the marking's transaction."""
        ws, st = self.workspace, self.state
        sync_records.add_deleted(conn, self.run_id, found.marked)
        sync_records.put_state(ws, conn, st)
        chain.append(ws, conn, "sync.deletes", metadata={
            "connector_id": self.record.id, "stream": self.stream.qualified, "run_id": self.run_id,
            "raw_table": st.raw_table, **metadata, "marked_deleted": found.marked, "back": found.unmarked})
        self.result.rows_deleted += found.marked


def due(detect_asked: bool, detect_setting: bool, every: int, state: StreamState) -> bool | None:
    """Whether a database table's pass runs now: True (run it), False (not set up),
    None (set up but not due: the caller counts the sync)."""
    if not (detect_asked or detect_setting):
        return False
    count = (state.syncs_since_deletes_check or 0) + 1
    if detect_asked or state.syncs_since_deletes_check is None or count >= every:
        return True
    return None


class _KeySession:
    """Transactions that all see one key table: on PostgreSQL one connection held for
    the pass (its temporary table lives as long as the session, which a crash ends);
    on DuckDB the workspace's ordinary write transactions, the key table being a table
    beside the raw table that the pass drops at its end (or the next pass, before it
    starts)."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._conn = None
        self._keys: str | None = None

    def __enter__(self) -> "_KeySession":
        if not self.workspace.is_duckdb:
            self._conn = self.workspace.engine.connect()
        return self

    def transaction(self):
        if self._conn is None:
            return self.workspace.transaction()
        return _Begin(self._conn)

    def create(self, raw_table: str, key: list[str]) -> str:
        with self.transaction() as conn:
            self._keys = raw_tables.create_source_keys(self.workspace, conn, raw_table, key)
        return self._keys

    def __exit__(self, *exc) -> None:
        try:
            if self._keys is not None:  # gone already when the pass ended normally
                with self.transaction() as conn:
                    raw_tables.drop_source_keys(self.workspace, conn, self._keys)
        except Exception:  # noqa: BLE001 (a broken session takes its temporary table with it)
            pass
        finally:
            if self._conn is not None:
                self._conn.close()


class _Begin:
    def __init__(self, conn):
        self.conn = conn
        self._tx = None

    def __enter__(self):
        self._tx = self.conn.begin()
        return self.conn

    def __exit__(self, kind, *rest) -> None:
        if kind is None:
            self._tx.commit()
        else:
            self._tx.rollback()


def _per_file(by: dict, paths: set[str]) -> str:
    ordered = sorted(paths)
    shown = ", ".join(f"{p} ({by[p]:,} row{'s' if by[p] != 1 else ''})" for p in ordered[:SHOWN])
    if len(ordered) > SHOWN:
        rest = sum(by[p] for p in ordered[SHOWN:])
        shown += f" and {len(ordered) - SHOWN} more ({rest:,} rows)"
    return f"the rows of {shown} were"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
