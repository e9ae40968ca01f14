"""What a file source (local folder, S3, Azure Blob) tells a sync besides its rows: files
new or deleted since the last landing, tables it left out because they were never
discovered, tables whose files are all gone (a note, not a failure: their landed rows
are marked deleted), and what its readers noticed (an encoding guessed, a totals row skipped).

The engine calls `watch()` before its tables are synced and `report()` after; a source
without `current_files()` (a database) is left alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.specs import StreamRef
from esg_workbench.workspace import raw_tables, sync_records
from esg_workbench.workspace.database import Workspace

#: files named in a note before it says "and N more"
SHOWN = 5
#: notes per table in one run
MAX_NOTES = 12


def _names(paths: list[str]) -> str:
    shown = ", ".join(sorted(paths)[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _landed_files(workspace: Workspace, raw_table: str) -> dict[str, tuple[int, int]] | None:
    """The files whose rows are in a raw table, each with (rows, rows marked deleted), or
    None when the table does not exist (yet)."""
    try:
        with workspace.read() as conn:
            columns = raw_tables.existing_columns(workspace, conn, raw_table)
            if columns is None:
                return None
            prep = workspace.engine.dialect.identifier_preparer
            marked = (f"sum(CASE WHEN {prep.quote(raw_tables.DELETED_COLUMN)} IS NULL THEN 0 ELSE 1 END)"
                      if raw_tables.DELETED_COLUMN in columns else "0")
            query = (f"SELECT {prep.quote('_esg_file')}, count(*), {marked} FROM {prep.quote(raw_table)} "
                     f"GROUP BY {prep.quote('_esg_file')}")
            return {row[0]: (int(row[1]), int(row[2] or 0)) for row in conn.execute(sa.text(query))}
    except sa.exc.SQLAlchemyError:
        return None  # the report is a courtesy: a table we cannot read now changes nothing


def _live(landed: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Files with rows not marked deleted, and how many."""
    return {f: rows - marked for f, (rows, marked) in landed.items() if rows > marked}


@dataclasses.dataclass
class Watch:
    workspace: Workspace
    record: Any  # connectors_store.ConnectorRecord
    connector: Any
    streams: list[StreamRef]
    asked_all: bool  # the sync was asked for every discovered table
    landed: dict[str, dict[str, int]]  # files with rows (not marked deleted) before the sync, per table

    def report(self, results: list, run_id: int | None = None) -> None:
        """Add the source's notes to the streams' results (and a result for each table
        left out); a table whose files are all gone gets a note instead of an error, and
        (given the run) its landed rows are marked deleted like those of any file gone.
        A courtesy: nothing here may fail the run whose rows have landed."""
        try:
            self._report(results, run_id)
        except Exception as exc:  # noqa: BLE001 (a report that cannot be made is a note itself)
            if results:
                results[0].warnings.append(f"the source's changes could not be reported: {type(exc).__name__}: {exc}")

    def _report(self, results: list, run_id: int | None) -> None:
        current = self.connector.current_files()
        by_stream = {r.stream: r for r in results}
        for stream in self.streams:
            name = stream.qualified
            result = by_stream.get(name)
            if result is None:
                continue
            notes = list(self.connector.run_notes(name))
            files = current.get(name)
            before = self.landed.get(name)
            if files is None:
                if result.error and not result.chunks_done:
                    result.error = None  # not a failure: nothing is there to read any more
                    notes.append("all its files were deleted from the source (or moved): nothing to read. "
                                 "Discover the connector again to drop the table.")
                    if run_id is not None:
                        self._mark_all_gone(stream, result, run_id)
            elif before is not None:
                notes += self._changes(result, files, before)
            notes = [n for n in notes if n not in result.warnings]
            if len(notes) > MAX_NOTES:  # a thousand files in one old encoding need not say it a thousand times
                notes = notes[:MAX_NOTES] + [f"... and {len(notes) - MAX_NOTES} more notes like these."]
            result.warnings += notes
        if self.asked_all:
            synced = {s.qualified for s in self.streams}
            left_out = sorted(set(current) - synced)
            if left_out:
                from esg_workbench.sync.engine import StreamResult

                for name in left_out:
                    results.append(StreamResult(name, warnings=[
                        f"not synced: a new table under the source ({_names(list(current[name]))}) that was not "
                        "discovered yet. Discover the connector to add it."]))

    def _mark_all_gone(self, stream: StreamRef, result, run_id: int) -> None:
        """The rows of a table whose files are all gone are marked like those of one file
        gone (sync/deletes.py: by file, named with their rows; back when the files are)."""
        from esg_workbench.core.specs import CancelToken
        from esg_workbench.sync import deletes

        with self.workspace.read() as conn:
            state = sync_records.get_state(self.workspace, conn, self.record.id, stream.qualified)
        if state is None:
            return
        result.raw_table = result.raw_table or state.raw_table
        deletes.Pass(self.workspace, self.record, self.connector, stream, state, run_id, result,
                     CancelToken()).files()

    def _changes(self, result, files: dict[str, int], before: dict[str, int]) -> list[str]:
        """Notes on files new, deleted or emptied since the last landing. A delta load's
        deletes pass marks the rows of deleted and emptied files and names them itself
        (sync/deletes.py); a full load removes them, which is said here."""
        notes = []
        new = [f for f, size in files.items() if f not in before and size]
        gone = [f for f in before if f not in files]
        emptied = [f for f, size in files.items() if f in before and not size]
        if new:
            notes.append(f"{len(new)} new file{'s' if len(new) > 1 else ''} since the last sync: {_names(new)}.")
        if gone or emptied:
            after = (_landed_files(self.workspace, result.raw_table) if result.raw_table else None) or {}
            live = _live(after)
            for paths, what in ((gone, "deleted from the source"), (emptied, "emptied to 0 bytes")):
                kept = [f for f in paths if f in live]
                removed = [f for f in paths if f not in after]  # neither kept nor marked: a full load replaced them
                if kept:
                    notes.append(f"{len(kept)} file{'s' if len(kept) > 1 else ''} {what}: {_names(kept)}; "
                                 f"their {sum(live[f] for f in kept):,} rows are still in the raw table "
                                 "(the next sync that completes marks them deleted).")
                if removed:
                    notes.append(f"{len(removed)} file{'s' if len(removed) > 1 else ''} {what}: {_names(removed)}; "
                                 f"their {sum(before[f] for f in removed):,} rows were removed by this full load.")
        return notes


def watch(workspace: Workspace, record, connector, streams: list[StreamRef], request) -> Watch | None:
    if not hasattr(connector, "current_files"):
        return None
    landed: dict[str, dict[str, int]] = {}
    with workspace.read() as conn:
        states = {s.stream: s for s in sync_records.states(workspace, conn, record.id)}
    for stream in streams:
        state = states.get(stream.qualified)
        if state is not None:
            found = _landed_files(workspace, state.raw_table)
            if found is not None:
                landed[stream.qualified] = _live(found)
    asked_all = not request.tables and not request.resume and not request.retry_failed
    return Watch(workspace, record, connector, streams, asked_all, landed)
