"""The schema browser's merging of a connector's catalog read again (a discovery or an
edit made in another window or process, or this window's own Refresh) into the tree in
place: open levels stay open, the selection stays, new rows are inserted and changed ones
redrawn in time-boxed slices. A mixin of SchemaBrowser (it uses the browser's model, view,
worker pool and row builders)."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QStandardItem

from esg_workbench.gui import catalog
from esg_workbench.gui.catalog import ConnectorOverview, TableRow
from esg_workbench.gui.schema_items import CONNECTOR, FILL, INFO, KIND, NO_FINDINGS, ROWS, STATE, _placeholder
from esg_workbench.gui.slices import Slices


class TreeMerging:
    def catalogs_seen(self, stamps: dict[str, tuple]) -> None:
        """The window's watch read the workspace: merge a connector's catalog into the tree
        again where another window or process discovered or edited it since it loaded."""
        if self.workspace is None:
            return
        for i in range(self.model.rowCount()):
            item = self.model.item(i)
            cid = item.data(INFO).id
            if item.data(STATE) != "loaded" or cid in self._merging or cid not in stamps:
                continue
            if self._stamps.get(cid) != stamps[cid]:
                self.merge_refresh(item)

    def _open(self, item: QStandardItem) -> bool:
        return item.data(STATE) == "loaded" and self.tree.isExpanded(self.proxy.mapFromSource(item.index()))

    def merge_refresh(self, item: QStandardItem, restyle: set[str] | frozenset = frozenset(), quiet: bool = False,
                      then: Callable[[], None] | None = None) -> None:
        """Read the open levels of a connector again and merge them into the tree in place:
        expanded levels stay expanded, the selection stays, new tables appear, dropped ones go.
        `restyle`: tables (qualified) to redraw even if unchanged (what discovery found in
        them changed); `quiet`: the caller says what changed; `then`: after the merge."""
        overview: ConnectorOverview = item.data(CONNECTOR)
        if overview.id in self._merging:  # one at a time per connector: again once this one ends
            self._merge_again[overview.id] = (item, set(restyle), quiet, then)
            return
        open_schemas, open_tables = [], []
        for i in range(item.rowCount()):
            schema = item.child(i)
            if schema.data(KIND) != "schema" or not self._open(schema):
                continue
            open_schemas.append(schema.data(INFO))
            for j in range(schema.rowCount()):
                table = schema.child(j)
                if table.data(STATE) == "loaded" and table.data(KIND) == "table" and self._open(table):
                    open_tables.append((schema.data(INFO), table.data(INFO).name))
        self._merging.add(overview.id)

        def failed(message: str) -> None:
            self._merging.discard(overview.id)
            self.status.setText(message)

        self.pool.run(catalog.level_snapshot, self.workspace, overview.id, open_schemas, open_tables,
                      on_done=lambda snap: self._merge(item, snap, set(restyle), quiet, then), on_error=failed,
                      owner=self)

    def _drop_placeholders(self, item: QStandardItem) -> None:
        for r in reversed(range(item.rowCount())):
            if item.child(r).data(KIND) == "placeholder":
                item.removeRow(r)

    def _unload(self, item: QStandardItem) -> None:
        """Forget a loaded level that is not open: it loads afresh when next expanded."""
        self._clear_children(item)
        item.setData(None, STATE)
        item.setData(None, ROWS)
        item.appendRow(_placeholder())

    @staticmethod
    def _update_row(parent: QStandardItem, row: int, cells: list[QStandardItem]) -> None:
        """Give the items of a row what the new cells show, keeping the items (and so their
        children, expansion and selection)."""
        roles = (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.DecorationRole, Qt.ItemDataRole.ToolTipRole,
                 Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.TextAlignmentRole,
                 INFO, CONNECTOR)
        for column, new in enumerate(cells):
            old = parent.child(row, column)
            for role in roles:
                value = new.data(role)
                if old.data(role) != value:
                    old.setData(value, role)

    def _merge(self, item: QStandardItem, snap: catalog.LevelSnapshot, restyle: set[str] = frozenset(),
               quiet: bool = False, then: Callable[[], None] | None = None) -> None:
        overview: ConnectorOverview = item.data(CONNECTOR) if self._alive(item) else None
        if overview is None:
            if then is not None:
                then()
            return
        if item.data(STATE) != "loaded":
            self._merging.discard(overview.id)
            if then is not None:
                then()
            return
        self._stamps[overview.id] = snap.stamp
        self._merge_notes = {"new": [], "gone": [], "changed": []}
        self._drop_placeholders(item)
        wanted = dict(snap.schemas)
        for r in reversed(range(item.rowCount())):
            if item.child(r).data(INFO) not in wanted:
                item.removeRow(r)
        pending = [1]  # schema levels still merging (their rows go in time-boxed slices)

        def one_done() -> None:
            pending[0] -= 1
            if pending[0]:
                return
            self._merging.discard(overview.id)
            notes = [f"{len(names)} {what}: {', '.join(names[:5])}{'…' if len(names) > 5 else ''}"
                     for what, names in self._merge_notes.items() if names]
            if notes and not quiet:
                text = f"{overview.name} was discovered again in another window or process: {'; '.join(notes)}."
                self.status.setText(text)
                self.message.emit(text)
            if then is not None:
                then()
            self.level_loaded.emit("merged")
            again = self._merge_again.pop(overview.id, None)
            if again is not None and self._alive(again[0]):
                self.merge_refresh(*again)

        for i, (schema, count) in enumerate(snap.schemas):
            child = item.child(i) if i < item.rowCount() else None
            if child is None or child.data(INFO) != schema:
                item.insertRow(i, self._schema_cells(schema, count, overview))
                continue
            item.child(i, 4).setText(f"{count:,} table{'s' if count != 1 else ''}")
            if child.data(STATE) == "loaded":
                if schema in snap.tables:
                    pending[0] += 1
                    self._merge_tables(child, snap.tables[schema], snap.columns, one_done, restyle)
                else:
                    self._unload(child)
        if not snap.schemas:
            item.appendRow(_placeholder("No tables found in the source."))
        one_done()

    def _merge_tables(self, item: QStandardItem, rows: list[TableRow], columns: dict,
                      then: Callable[[], None], restyle: set[str] = frozenset()) -> None:
        """Merge a schema's tables in place: drop the gone, then insert the new and update
        the changed in time-boxed slices (a discovery may change thousands of estimates)."""
        overview: ConnectorOverview = item.data(CONNECTOR)
        schema = item.data(INFO)
        old: list[TableRow] = item.data(ROWS) or []
        changed: set[str] = set()
        ops: list[tuple[int, TableRow, bool]] = []  # (row, table, new?) in ascending rows
        if old != rows or restyle:
            self._drop_placeholders(item)
            names = {r.name for r in rows}
            for i in reversed(range(len(old))):
                if old[i].name not in names:
                    item.removeRow(i)
                    self._merge_notes["gone"].append(old[i].name)
            kept = {r.name: r for r in old if r.name in names}
            for i, r in enumerate(rows):  # (both lists come in the catalog's order)
                if r.name not in kept:
                    ops.append((i, r, True))
                    self._merge_notes["new"].append(r.name)
                elif kept[r.name] != r:
                    ops.append((i, r, False))
                    changed.add(r.name)
                    self._merge_notes["changed"].append(r.name)
                elif r.qualified in restyle:
                    ops.append((i, r, False))
            item.setData(rows, ROWS)
        findings = self.findings.get(overview.id) or NO_FINDINGS

        def apply(op: tuple[int, TableRow, bool]) -> None:
            i, r, new = op
            cells = self._table_cells(r, overview, findings)
            if new:
                item.insertRow(i, cells)
            else:
                self._update_row(item, i, cells)

        def done() -> None:
            item.setData(None, FILL)
            if not rows and not item.rowCount():
                item.appendRow(_placeholder("No tables."))
            # only tables that changed or are open can need new columns (not a walk over thousands)
            position = {r.name: i for i, r in enumerate(rows)}
            for name in changed | {t for s, t in columns if s == schema}:
                table = item.child(position[name]) if name in position else None
                if table is None or table.data(STATE) != "loaded":
                    continue
                found = columns.get((schema, name))
                if found is None:
                    self._unload(table)
                elif name in changed or table.data(ROWS) != found:
                    self._refill_columns(table, found)
            then()

        # (stopped: the level was cleared or went meanwhile; the merge of the others still ends)
        fill = Slices(ops, apply, done, alive=lambda: self._alive(item), stopped=then)
        if fill.running:
            item.setData(fill, FILL)

    def _refill_columns(self, table: QStandardItem, columns) -> None:
        """New columns of an open table; a selected column stays selected (by name)."""
        current = self.model.itemFromIndex(self.proxy.mapToSource(self.tree.currentIndex()).siblingAtColumn(0))
        selected = current.text() if current is not None and current.parent() is table else None
        self._fill_columns(table, columns)
        for r in range(table.rowCount()):
            if selected is not None and table.child(r).text() == selected:
                self.tree.setCurrentIndex(self.proxy.mapFromSource(table.child(r).index()))
