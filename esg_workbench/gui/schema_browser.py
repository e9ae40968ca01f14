"""The schema browser: a lazy tree (connector → schema → table → column) and a grid of
sample rows for the selected table.

Each level is loaded in a worker when it is first expanded, and large levels are
inserted in time-boxed slices between event-loop turns (a long one folded until it is
complete), so a database with thousands of tables never freezes the window. Refresh
re-discovers the connector and highlights drift (added, dropped and retyped columns) in
the tree; it, and a discovery made in another window or process, are merged into the open
tree in place (schema_merge.py). The items' roles and row looks are schema_items.py.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import catalog, icons
from esg_workbench.gui.catalog import ConnectorOverview, DiscoveryFindings, TableRow
from esg_workbench.gui.data_grid import DataGrid
from esg_workbench.gui.sample_model import RecordsModel
from esg_workbench.gui.schema_items import (  # noqa: F401  (KIND, STATE, _placeholder: used by tests too)
    CONNECTOR,
    DRIFT_BRUSH,
    FILL,
    FOLDED_FILL,
    HEADERS,
    INFO,
    KIND,
    NO_FINDINGS,
    OPEN_COLUMNS_OF,
    RIGHT,
    ROWS,
    SAMPLE_ROWS,
    STATE,
    UNREADABLE_BRUSH,
    _placeholder,
    _row,
)
from esg_workbench.gui.schema_merge import TreeMerging
from esg_workbench.gui.slices import Slices


class TreeFilter(QSortFilterProxyModel):
    """Keeps rows whose name matches, their ancestors and their loaded children.
    (No Python filterAcceptsRow: Qt filters in C++, which keeps thousands of rows fast.)"""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setAutoAcceptChildRows(True)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(0)


class SchemaBrowser(TreeMerging, QWidget):
    table_selected = Signal(str, str)  # connector name, qualified table
    level_loaded = Signal(str)  # kind of the level just filled (tests, status bar)
    samples_loaded = Signal(str, int)  # qualified table, rows
    refreshed = Signal(str, object)  # connector name, {table: Drift}
    message = Signal(str)  # for the status bar
    revealed = Signal(int)  # matches of a filter search shown in the tree (tests)

    def __init__(self, pool, parent: QWidget | None = None):
        super().__init__(parent)
        self.pool = pool
        self.workspace = None
        self._sample_request = 0
        self._pending_batches = 0
        self._search_request = 0
        self._reveal: list[tuple[str, str | None, str, bool]] = []  # paths to open: (connector id, schema, table, columns)
        self._revealed = 0
        self.listed_connector: str | None = None  # the one chosen in the connector list
        # connector id -> catalog_stamp of what the tree loaded: the window's watch compares
        # it with the workspace and merges changes made elsewhere into the open levels
        self._stamps: dict[str, tuple] = {}
        self._merging: set[str] = set()
        self._merge_again: dict[str, tuple] = {}  # connector id -> a merge asked for while one ran
        self._merge_notes: dict[str, list[str]] = {}  # what the merge under way added, dropped, changed
        # connector id -> what its discovery in this window detected and could not read
        self.findings: dict[str, DiscoveryFindings] = {}

        self.filter = QLineEdit()
        self.filter.setObjectName("schemaFilter")
        self.filter.setPlaceholderText("Find tables and columns…")
        self.filter.setToolTip("Searches every discovered table and column and opens the tree to the matches")
        self.filter.setClearButtonEnabled(True)
        self.refresh_button = QPushButton(icons.standard("SP_BrowserReload"), "Refresh")
        self.refresh_button.setObjectName("refreshSchema")
        self.refresh_button.setToolTip("Re-discover the selected connector and highlight what changed (F5)")
        self.status = QLabel()
        self.status.setObjectName("schemaStatus")
        self.status.setWordWrap(True)

        self.model = QStandardItemModel(0, len(HEADERS), self)
        self.model.setHorizontalHeaderLabels(HEADERS)
        self.proxy = TreeFilter(self)
        self.proxy.setSourceModel(self.model)
        self.tree = QTreeView()
        self.tree.setObjectName("schemaTree")
        self.tree.setModel(self.proxy)
        self.tree.setUniformRowHeights(True)
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.tree.header()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(0, 280)
        header.resizeSection(1, 150)
        header.resizeSection(2, 80)
        header.resizeSection(3, 100)

        self.sample_title = QLabel("Select a table to see sample rows.")
        self.sample_title.setObjectName("sampleTitle")
        # the discovery setting: which rows a sample shows, and how many
        self.sample_mode = QComboBox()
        self.sample_mode.setObjectName("sampleMode")
        self.sample_mode.addItem("First rows", "first")
        self.sample_mode.addItem("Random rows", "random")
        self.sample_mode.setToolTip("Random rows: a random sample (TABLESAMPLE on PostgreSQL), for large "
                                    "tables whose first rows are not typical. PostgreSQL, MySQL/MariaDB, "
                                    "SQLite and DuckDB sources.")
        self.sample_size = QSpinBox()
        self.sample_size.setObjectName("sampleSize")
        self.sample_size.setRange(1, 10_000)
        self.sample_size.setValue(SAMPLE_ROWS)
        self.sample_size.setSuffix(" rows")
        self.sample_mode.currentIndexChanged.connect(self._reload_samples)
        self.sample_size.editingFinished.connect(self._reload_samples)
        self._sampled: tuple[str, str] | None = None
        self.samples = RecordsModel(parent=self)
        self.sample_grid = DataGrid(self.samples, "sampleGrid")  # sorts, filters
        self.sample_view = self.sample_grid.view
        self.sample_view.horizontalHeader().setDefaultSectionSize(130)
        # what discovery detected in the selected table (or why it could not read it)
        self.detected = QLabel()
        self.detected.setObjectName("detectedNotes")
        self.detected.setWordWrap(True)
        self.detected.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detected.hide()

        top = QHBoxLayout()
        top.addWidget(self.filter, 1)
        top.addWidget(self.refresh_button)
        upper = QWidget()
        up = QVBoxLayout(upper)
        up.setContentsMargins(0, 0, 0, 0)
        up.addLayout(top)
        up.addWidget(self.tree, 1)
        up.addWidget(self.status)
        lower = QWidget()
        low = QVBoxLayout(lower)
        low.setContentsMargins(0, 0, 0, 0)
        sample_bar = QHBoxLayout()
        sample_bar.addWidget(self.sample_title, 1)
        sample_bar.addWidget(self.sample_mode)
        sample_bar.addWidget(self.sample_size)
        low.addLayout(sample_bar)
        low.addWidget(self.sample_grid, 1)
        low.addWidget(self.detected)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(upper)
        self.splitter.addWidget(lower)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.splitter)

        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(200)
        self._filter_timer.timeout.connect(self._apply_filter)
        self.filter.textChanged.connect(lambda _: self._filter_timer.start())
        self.tree.expanded.connect(self._expanded)
        self.level_loaded.connect(lambda _: self._reveal_pending())
        self.tree.selectionModel().currentChanged.connect(self._current_changed)
        self.refresh_button.clicked.connect(self.refresh_current)

    # --- connectors (top level) -----------------------------------------------------------

    def set_workspace(self, workspace) -> None:
        self.workspace = workspace
        self.model.removeRows(0, self.model.rowCount())
        self.samples.clear()
        self.sample_title.setText("Select a table to see sample rows.")
        self.status.clear()
        self.findings = {}
        self._stamps = {}
        self._merging = set()
        self._merge_again = {}
        self._show_detected("")

    def set_connectors(self, overviews: list[ConnectorOverview]) -> None:
        """Keep the subtrees of connectors that are still there; add and drop the rest."""
        existing = {self.model.item(i).data(INFO).id: i for i in range(self.model.rowCount())}
        wanted = {o.id for o in overviews}
        for i in sorted((i for cid, i in existing.items() if cid not in wanted), reverse=True):
            self.model.removeRow(i)
        for o in overviews:
            if o.id in existing:
                for i in range(self.model.rowCount()):
                    item = self.model.item(i)
                    if item.data(INFO).id == o.id:
                        item.setText(o.name)
                        item.setData(o, INFO)
                        item.setData(o, CONNECTOR)
                        self.model.item(i, 1).setText(o.type)
                continue
            row = _row(o.name, "connector", icons.connector_icon(), o.type)
            row[0].setData(o, INFO)
            row[0].setData(o, CONNECTOR)
            row[0].appendRow(_placeholder())
            self.model.appendRow(row)
        names = [self.model.item(i).text() for i in range(self.model.rowCount())]
        if names != sorted(names):
            # connectors only (model.sort would re-sort every loaded level too, thousands of
            # tables, and lose their catalog order that merges rely on)
            rows = [self.model.takeRow(0) for _ in range(self.model.rowCount())]
            for row in sorted(rows, key=lambda r: r[0].text()):
                self.model.appendRow(row)

    def connector_item(self, name: str) -> QStandardItem | None:
        for i in range(self.model.rowCount()):
            item = self.model.item(i)
            if item.data(INFO).name == name:
                return item
        return None

    def show_connector(self, name: str | None) -> None:
        """Select (and scroll to) a connector chosen in the connector list."""
        self.listed_connector = name
        item = self.connector_item(name) if name else None
        if item is None:
            return
        current = self.current_connector()
        if current is not None and current.name == name:
            return  # already inside it (the list re-selects it after every reload): stay where the user is
        index = self.proxy.mapFromSource(item.index())
        self.tree.setCurrentIndex(index)
        self.tree.scrollTo(index)

    def current_connector(self) -> ConnectorOverview | None:
        index = self.proxy.mapToSource(self.tree.currentIndex())
        if not index.isValid():
            return None
        item = self.model.itemFromIndex(index.siblingAtColumn(0))
        return item.data(CONNECTOR) if item else None

    # --- lazy levels ----------------------------------------------------------------------

    def _expanded(self, proxy_index: QModelIndex) -> None:
        item = self.model.itemFromIndex(self.proxy.mapToSource(proxy_index))
        if item is None or item.data(STATE) is not None:
            return
        self.load_children(item)

    def load_children(self, item: QStandardItem) -> None:
        if self.workspace is None:
            return
        kind = item.data(KIND)
        overview: ConnectorOverview = item.data(CONNECTOR)
        item.setData("loading", STATE)
        ws = self.workspace
        if kind == "connector":
            def fetch():
                stamp = catalog.catalog_stamp(ws, overview.id)  # first: a change meanwhile is seen later
                found = catalog.schemas(ws, overview.id)
                result = None
                if not found:  # never discovered: describe the source first
                    from esg_workbench.sync import operations

                    result = operations.discover_connector(ws, overview.name)
                    stamp = catalog.catalog_stamp(ws, overview.id)
                    found = catalog.schemas(ws, overview.id)
                return found, result, stamp
            if item.rowCount() and item.child(0).data(KIND) == "placeholder":
                item.child(0).setText("Loading schemas (discovering the source if needed)…")
            def fill(done) -> None:
                found, result, stamp = done
                if self._alive(item):
                    self._stamps[overview.id] = stamp
                self._fill_schemas(item, found, result)

            self.pool.run(fetch, on_done=fill,
                          on_error=lambda msg: self._level_failed(item, msg), owner=self)
        elif kind == "schema":
            self.pool.run(catalog.tables, ws, overview.id, item.data(INFO),
                          on_done=lambda rows: self._fill_tables(item, rows),
                          on_error=lambda msg: self._level_failed(item, msg), owner=self)
        elif kind == "table":
            row: TableRow = item.data(INFO)
            self.pool.run(catalog.columns, ws, overview.id, row.schema, row.name,
                          on_done=lambda cols: self._fill_columns(item, cols),
                          on_error=lambda msg: self._level_failed(item, msg), owner=self)

    def _alive(self, item: QStandardItem) -> bool:
        try:
            return item.model() is self.model
        except RuntimeError:  # the item was deleted (refresh, workspace switch)
            return False

    def _clear_children(self, item: QStandardItem) -> None:
        fill = item.data(FILL)
        if fill is not None:  # a level still filling: stop it (it would add to the new children)
            fill.cancel()
            item.setData(None, FILL)
        if item.rowCount():
            item.removeRows(0, item.rowCount())

    def _level_failed(self, item: QStandardItem, message: str) -> None:
        if not self._alive(item):
            return
        item.setData(None, STATE)
        self._clear_children(item)
        first = message.splitlines()[0]
        error = _placeholder(f"Could not load: {first}")
        error[0].setForeground(QBrush(QColor("#c62828")))
        error[0].setToolTip(message)
        item.appendRow(error)
        self.status.setText(message)
        self.message.emit(message)
        self.level_loaded.emit("error")

    def _fill_schemas(self, item: QStandardItem, found: list[tuple[str | None, int]], discovered=None) -> None:
        if not self._alive(item):
            return
        self._clear_children(item)
        overview = item.data(CONNECTOR)
        if discovered is not None:  # the source was discovered just now: say what it found
            self._found(overview, discovered)
        for schema, count in found:
            item.appendRow(self._schema_cells(schema, count, overview))
        if not found:
            item.appendRow(_placeholder("No tables found in the source."))
        item.setData("loaded", STATE)
        self.level_loaded.emit("connector")
        if len(found) == 1:  # one schema: open it right away
            self.tree.expand(self.proxy.mapFromSource(item.child(0).index()))

    @staticmethod
    def _schema_cells(schema: str | None, count: int, overview: ConnectorOverview) -> list[QStandardItem]:
        row = _row(schema or "(no schema)", "schema", icons.schema_icon(), "", "", "",
                   f"{count:,} table{'s' if count != 1 else ''}")
        row[0].setData(schema, INFO)
        row[0].setData(overview, CONNECTOR)
        row[0].appendRow(_placeholder())
        return row

    def _table_cells(self, r: TableRow, overview: ConnectorOverview,
                     findings: DiscoveryFindings | None = None) -> list[QStandardItem]:
        # (called once per table, thousands of times: no enum arithmetic, no lookups that
        # can be made once per level)
        if findings is None:
            findings = self.findings.get(overview.id) or NO_FINDINGS
        estimate = "" if r.row_estimate is None or r.row_estimate < 0 else f"{r.row_estimate:,}"
        notes = f"{r.columns} columns"
        if r.primary_key:
            notes += f" · key {', '.join(r.primary_key)}"
        first = QStandardItem(r.name)
        first.setData("table", KIND)
        first.setIcon(icons.table_icon())
        first.setData(r, INFO)
        first.setData(overview, CONNECTOR)
        rows_cell = QStandardItem(estimate)
        rows_cell.setTextAlignment(RIGHT)
        cells = [first, QStandardItem("table"), QStandardItem(), rows_cell, QStandardItem(notes)]
        if r.drift:
            for c in cells:
                c.setBackground(DRIFT_BRUSH)
            cells[4].setIcon(icons.drift_icon())
            cells[4].setText(f"changed: {r.drift.describe()}")
            for c in cells:
                c.setToolTip(f"Schema drift at the last discovery: {r.drift.describe()}")
        error = findings.error_of(r.qualified) if findings.unreadable else None
        if error is not None:  # listed by the source but not readable: its columns are only _esg_*
            cells[0].setIcon(icons.standard("SP_MessageBoxWarning"))
            cells[4].setText(f"could not read: {error.splitlines()[0]}")
            for c in cells:
                c.setForeground(UNREADABLE_BRUSH)
                c.setToolTip(f"Discovery could not read {r.qualified}:\n{error}")
        elif findings.notes and findings.notes.get(r.qualified):
            cells[0].setToolTip("Detected at discovery:\n" + "\n".join(findings.notes[r.qualified]))
        first.appendRow(_placeholder())
        return cells

    def _fill_tables(self, item: QStandardItem, rows: list[TableRow]) -> None:
        if not self._alive(item):
            return
        overview = item.data(CONNECTOR)
        self._clear_children(item)
        drifted = [r for r in rows if r.drift]
        if not rows:
            item.appendRow(_placeholder("No tables."))
        item.setData(rows, ROWS)
        findings = self.findings.get(overview.id) or NO_FINDINGS
        index = self.proxy.mapFromSource(item.index())
        notes = item.parent().child(item.row(), 4) if item.parent() is not None else None
        fold = len(rows) > FOLDED_FILL and self.tree.isExpanded(index) and notes is not None
        if not fold:
            self._insert_batched(item, rows, lambda r: self._table_cells(r, overview, findings), "schema")
        else:
            # a long level fills folded, its progress in the Notes column: the tree lays an
            # open level out again after every slice (a cost that grows with its rows), a
            # folded one not at all; it opens once, at the end
            self.tree.collapse(index)
            counted = notes.text()
            added = [0]

            def make(r: TableRow) -> list[QStandardItem]:
                added[0] += 1
                if added[0] % 250 == 0:
                    notes.setText(f"loading {added[0]:,} of {len(rows):,} tables…")
                return self._table_cells(r, overview, findings)

            def opened() -> None:
                notes.setText(counted)
                self.tree.expand(self.proxy.mapFromSource(item.index()))

            notes.setText(f"loading {len(rows):,} tables…")
            self._insert_batched(item, rows, make, "schema", finished=opened)
        if drifted:
            self.status.setText(f"{len(drifted)} table(s) changed at the last discovery: "
                                + "; ".join(f"{r.name} ({r.drift.describe()})" for r in drifted[:5]))

    def _insert_batched(self, item: QStandardItem, rows: list, make: Callable[[Any], list], kind: str,
                        finished: Callable[[], None] | None = None) -> None:
        """Insert `rows` under `item` in time-boxed slices (see gui/slices.py): thousands of
        tables never hold the event loop for more than a few milliseconds at a time."""
        if not self._alive(item):
            return

        def done() -> None:
            item.setData(None, FILL)
            item.setData("loaded", STATE)
            if finished is not None:
                finished()
            self.level_loaded.emit(kind)

        fill = Slices(rows, lambda r: item.appendRow(make(r)), done, alive=lambda: self._alive(item))
        if fill.running:
            item.setData(fill, FILL)

    def _fill_columns(self, item: QStandardItem, columns) -> None:
        if not self._alive(item):
            return
        self._clear_children(item)
        item.setData(list(columns), ROWS)
        table: TableRow = item.data(INFO)
        drift = table.drift
        added = set(drift.added) if drift else set()
        retyped = {c: (a, b) for c, a, b in drift.retyped} if drift else {}
        for c in columns:
            icon = icons.type_icon(c.family, c.primary_key)
            note = "primary key" if c.primary_key else ""
            if c.name in added:
                note = "new column"
            elif c.name in retyped:
                note = f"type was {retyped[c.name][0]}"
            cells = _row(c.name, "column", icon, c.type, "NULL" if c.nullable else "NOT NULL", "", note)
            cells[0].setData(c, INFO)
            cells[0].setData(item.data(CONNECTOR), CONNECTOR)
            cells[0].setToolTip(f"{c.name}: {c.type} ({c.family}), {'nullable' if c.nullable else 'not null'}"
                                + (", primary key" if c.primary_key else ""))
            cells[1].setToolTip(f"type family: {c.family}")
            if c.name in added or c.name in retyped:
                for cell in cells:
                    cell.setBackground(DRIFT_BRUSH)
            item.appendRow(cells)
        if drift and drift.dropped:
            gone = _placeholder(f"dropped: {', '.join(drift.dropped)}")
            gone[0].setForeground(QBrush(QColor("#c62828")))
            item.appendRow(gone)
        item.setData("loaded", STATE)
        self.level_loaded.emit("table")

    # --- refresh --------------------------------------------------------------------------

    def refresh_current(self) -> None:
        """Refresh the connector selected in the tree, else the one chosen in the list."""
        overview = self.current_connector()
        name = overview.name if overview is not None else self.listed_connector
        if name is None or self.connector_item(name) is None:
            self.status.setText("Select a connector in the tree or the list to refresh it.")
            return
        self.refresh(name)

    def refresh(self, name: str) -> None:
        item = self.connector_item(name)
        if item is None or self.workspace is None:
            return
        self.refresh_button.setEnabled(False)
        self.status.setText(f"Re-discovering {name}…")
        connector_id = item.data(INFO).id

        def done(found) -> None:
            result, added = found
            self.refresh_button.setEnabled(True)
            before = self.findings.get(connector_id) or NO_FINDINGS
            self.findings[connector_id] = after = DiscoveryFindings.of(result)
            restyle = {t for t in {*before.unreadable, *after.unreadable, *before.notes, *after.notes}
                       if (before.unreadable.get(t), before.notes.get(t)) != (after.unreadable.get(t), after.notes.get(t))}
            drift = result.drift
            changes = []
            if added:
                changes.append(f"{len(added)} new: " + ", ".join(added[:5]) + ("…" if len(added) > 5 else ""))
            if drift:
                changes.append(f"{len(drift)} changed: " + "; ".join(
                    f"{t} ({d.describe()})" for t, d in list(drift.items())[:5]))
            if changes:
                text = f"{name}: {len(result.tables)} tables; " + "; ".join(changes)
            else:
                text = f"{name}: {len(result.tables)} tables, no change since the last discovery."
            details = self.findings[connector_id].details()
            if details:
                text += f" {details[0].upper()}{details[1:]}."
            self.status.setText(text)
            self.message.emit(text)
            item = self.connector_item(name)
            if item is not None and item.data(STATE) == "loaded":
                # merged in place, as a discovery made elsewhere is: what is open stays open
                self.merge_refresh(item, restyle, quiet=True, then=lambda: self.refreshed.emit(name, drift))
            else:
                self._reload(name)
                self.refreshed.emit(name, drift)

        def failed(message: str) -> None:
            self.refresh_button.setEnabled(True)
            self.status.setText(message)
            self.message.emit(message)

        self.pool.run(catalog.rediscover, self.workspace, name, connector_id,
                      on_done=done, on_error=failed, owner=self)

    def _reload(self, name: str) -> None:
        """Forget a connector's loaded levels; reopen them if it was expanded."""
        item = self.connector_item(name)
        if item is None:
            return
        index = self.proxy.mapFromSource(item.index())
        was_open = self.tree.isExpanded(index)
        self._clear_children(item)
        item.setData(None, STATE)
        item.appendRow(_placeholder())
        if was_open:
            self.tree.collapse(index)
            self.tree.expand(index)

    # --- finding tables and columns in levels not loaded yet -------------------------------

    def _apply_filter(self) -> None:
        """Filter what is loaded at once; search the whole discovered catalog in a worker
        and open the tree down to each match (loading levels as needed)."""
        text = self.filter.text().strip()
        self.proxy.setFilterFixedString(text)
        self._search_request += 1
        self._reveal = []
        if len(text) < 2 or self.workspace is None:
            return
        request = self._search_request

        def done(matches) -> None:
            if request != self._search_request:
                return  # typed on meanwhile
            # a column match opens its table's columns, for the first few tables only (a
            # common name such as "id" matches everywhere: the tables are listed, not opened)
            self._reveal = [(cid, schema, table, bool(cols) and i < OPEN_COLUMNS_OF)
                            for i, (cid, schema, table, cols) in enumerate(matches)]
            self._revealed = 0
            self.status.setText(f"{len(matches)}{'+' if len(matches) >= 100 else ''} table(s) match '{text}'."
                                if matches else f"Nothing discovered matches '{text}'.")
            if matches:
                self._reveal_pending()
            else:
                self.revealed.emit(0)

        self.pool.run(catalog.search, self.workspace, text, on_done=done, on_error=self.status.setText, owner=self)

    def _child(self, parent: QStandardItem, kind: str, test) -> QStandardItem | None:
        for i in range(parent.rowCount()):
            child = parent.child(i)
            if child is not None and child.data(KIND) == kind and test(child.data(INFO)):
                return child
        return None

    def _reveal_pending(self) -> None:
        """Walk each pending match down the tree: expand a level that is not loaded (its
        load calls back here) and stop; drop a path once its table is shown."""
        if not self._reveal:
            return
        still = []
        for path in self._reveal:
            cid, schema, table, into_columns = path
            item = next((self.model.item(i) for i in range(self.model.rowCount())
                         if self.model.item(i).data(INFO).id == cid), None)
            waiting = False
            for kind, test in (("schema", lambda v: v == schema), ("table", lambda v: v.name == table), (None, None)):
                if item is None:  # gone since the search (a refresh, a removed connector)
                    break
                if kind is None and not into_columns:
                    break  # a table's own name matched: its columns need not load
                if item.data(STATE) != "loaded":
                    if item.data(STATE) is None:
                        self.load_children(item)  # (the filter hides an unloaded level: load it directly)
                    waiting = True
                    break
                if kind is None:
                    break
                item = self._child(item, kind, test)
            if waiting:
                still.append(path)
                continue
            if item is not None:
                self._revealed += 1
                self._expand_to(item, expand_self=into_columns)
        self._reveal = still
        if not still:
            self.revealed.emit(self._revealed)

    def _expand_to(self, item: QStandardItem, expand_self: bool) -> None:
        chain, parent = [], item.parent()
        while parent is not None:
            chain.insert(0, parent)
            parent = parent.parent()
        for ancestor in chain + ([item] if expand_self else []):
            self.tree.expand(self.proxy.mapFromSource(ancestor.index()))
        if self._revealed == 1:
            self.tree.scrollTo(self.proxy.mapFromSource(item.index()))

    # --- samples --------------------------------------------------------------------------

    def _current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        item = self.model.itemFromIndex(self.proxy.mapToSource(current.siblingAtColumn(0)))
        if item is None or item.data(KIND) != "table":
            return
        overview: ConnectorOverview = item.data(CONNECTOR)
        table: TableRow = item.data(INFO)
        findings = self.findings.get(overview.id)
        self._show_detected(findings.table_text(table.qualified) if findings else "")
        self.table_selected.emit(overview.name, table.qualified)
        self.load_samples(overview.name, table.qualified)

    def _found(self, overview: ConnectorOverview, result) -> None:
        """Keep what a discovery detected and could not read; say so in the status."""
        findings = DiscoveryFindings.of(result)
        self.findings[overview.id] = findings
        text = findings.summary(overview.name, len(result.tables))
        self.status.setText(text)
        self.message.emit(text)

    def _show_detected(self, text: str) -> None:
        self.detected.setText(text)
        self.detected.setVisible(bool(text))
        self.detected.setStyleSheet("color: #c62828;" if text.startswith("Could not read") else "")

    def _reload_samples(self) -> None:
        """The sample setting changed: show the current table's samples that way."""
        if self._sampled is not None:
            self.load_samples(*self._sampled)

    def load_samples(self, connector: str, table: str) -> None:
        if self.workspace is None:
            return
        from esg_workbench.sync import operations

        self._sample_request += 1
        request = self._sample_request
        self._sampled = (connector, table)
        mode = self.sample_mode.currentData()
        self.sample_title.setText(f"Loading {'random ' if mode == 'random' else ''}sample rows of {table}…")

        def done(rows: list[dict]) -> None:
            if request != self._sample_request:
                return  # the user moved on to another table
            self.samples.set_rows(rows)
            self.sample_title.setText(f"Sample rows of {connector} / {table}: {len(rows)} row(s)")
            self.samples_loaded.emit(table, len(rows))

        def failed(message: str) -> None:
            if request != self._sample_request:
                return
            self.samples.clear()
            self.sample_title.setText(f"Could not load sample rows of {table}: {message}")
            self.samples_loaded.emit(table, -1)

        self.pool.run(operations.load_samples, self.workspace, connector, table, self.sample_size.value(), mode=mode,
                      on_done=done, on_error=failed, owner=self)
