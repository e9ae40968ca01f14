"""The preview grid: the staging rows the current table mapping produces from the first
landed rows, computed by the same SQL as Apply (apply.preview, rolled back), in a worker.

Edits restart a short timer; a preview already running finishes and the newest state is
previewed next, so typing never queues a pile of previews. The column the selected edge
feeds is highlighted."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QComboBox, QHBoxLayout, QLabel, QTableView, QVBoxLayout, QWidget

from esg_workbench.gui.column_fit import fit_columns
from esg_workbench.gui.mapping import tasks
from esg_workbench.gui.mapping.document import MappingDocument
from esg_workbench.gui.sample_model import RecordsModel

# `method` tells location- from market-based rows (scope 2): without it they look duplicated
COLUMNS = ["source_key", "period", "site", "category", "subcategory", "field", "method", "value", "unit",
           "normalized_value", "normalized_unit", "scope", "factor_id", "quality"]
DELAY_MS = 250
#: which preview column a field of each role fills
ROLE_COLUMN = {"date": "period", "period": "period", "site": "site", "category": "category",
               "subcategory": "subcategory", "unit": "unit", "measure": "normalized_value",
               "market_factor": "factor_id"}


class PreviewModel(RecordsModel):
    def __init__(self, parent=None):
        super().__init__([], COLUMNS, parent=parent)
        self.highlight_column: str | None = None
        self.highlight_field: str | None = None  # measures: the rows of that field

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.BackgroundRole and index.isValid() and self.highlight_column:
            column = self.columns[index.column()]
            row_field = self.raw(index.row(), self.columns.index("field"))
            if column == self.highlight_column and (self.highlight_field is None or row_field == self.highlight_field):
                return QBrush(QColor("#e3f2fd"))
            if self.highlight_field is not None and row_field == self.highlight_field and column == "field":
                return QBrush(QColor("#e3f2fd"))
        if role == Qt.ItemDataRole.DisplayRole and index.isValid():
            value = self.raw(index.row(), index.column())
            if isinstance(value, float):
                return f"{value:,.6g}" if abs(value) < 1e15 else repr(value)
        return super().data(index, role)


class PreviewPanel(QWidget):
    updated = Signal(list)  # the rows shown
    failed = Signal(str)

    def __init__(self, pool, document: MappingDocument, parent: QWidget | None = None):
        super().__init__(parent)
        self.pool = pool
        self.document = document
        self.workspace = None
        self.table_id: str | None = None
        self._running = False
        self._pending = False
        self._generation = 0
        self.status = QLabel("The preview shows what the selected table mapping makes of the first landed rows.")
        self.status.setObjectName("previewStatus")
        self.status.setWordWrap(True)
        self.limit = QComboBox()
        self.limit.setObjectName("previewLimit")
        for n in (10, 20, 50, 200):
            self.limit.addItem(f"first {n} rows", n)
        self.limit.setCurrentIndex(1)
        self.model = PreviewModel(self)
        self.view = QTableView()
        self.view.setObjectName("previewGrid")
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().setDefaultSectionSize(20)
        self.view.horizontalHeader().setStretchLastSection(True)
        head = QHBoxLayout()
        head.addWidget(self.status, 1)
        head.addWidget(self.limit)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(head)
        layout.addWidget(self.view, 1)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DELAY_MS)
        self.timer.timeout.connect(self.run)
        self.limit.currentIndexChanged.connect(lambda _: self.schedule())
        for signal in (document.edge_added, document.edge_removed, document.edge_changed, document.table_changed):
            signal.connect(self._changed)
        document.reset.connect(self._reset)

    def set_workspace(self, workspace) -> None:
        self.workspace = workspace
        self._generation += 1
        self.model.clear_rows()

    def _reset(self) -> None:
        self.table_id = None
        self.model.clear_rows()
        self.set_table(None)

    def set_table(self, table_id: str | None) -> None:
        if table_id is None and self.document.mapping is not None and self.document.mapping.tables:
            table_id = self.document.mapping.tables[0].id
        if table_id != self.table_id:
            self.table_id = table_id
            self.schedule()

    def _changed(self, table_id: str, *rest) -> None:
        if table_id == self.table_id:
            self.schedule()

    def highlight(self, field: str | None) -> None:
        fdef = None
        if field and self.table_id and self.document.mapping is not None:
            entity = self.document.catalog.entity(self.document.mapping.table(self.table_id).entity)
            fdef = entity.field(field) if entity else None
        self.model.highlight_column = ROLE_COLUMN.get(fdef.role) if fdef else None
        self.model.highlight_field = fdef.name if fdef is not None and fdef.role == "measure" else None
        self.model.layoutChanged.emit()
        if self.model.highlight_column in COLUMNS:
            self.view.scrollTo(self.model.index(0, COLUMNS.index(self.model.highlight_column)))

    def schedule(self) -> None:
        self.timer.start()

    def run(self) -> None:
        """Preview now (or right after the one under way)."""
        mapping = self.document.mapping
        if self.workspace is None or mapping is None or self.table_id is None:
            return
        try:
            table = mapping.table(self.table_id)
        except KeyError:
            return
        if self._running:
            self._pending = True
            return
        if self.document.columns_of(table) is None:
            self._show([], f"{table.stream} has not been landed in the workspace: sync it to preview.", error=True)
            return
        self._running, self._pending = True, False
        generation = self._generation
        snapshot = mapping.copy()  # the worker never sees the live model
        limit = self.limit.currentData()
        self.status.setText(f"Previewing {table.stream} → {table.entity}…")

        def done(rows) -> None:
            stale = self._pending  # the model changed meanwhile: the newest state is previewed next
            self._finished()
            if generation == self._generation and not stale:
                self._show(rows, f"{len(rows)} staging row{'s' if len(rows) != 1 else ''} from the first {limit} "
                                 f"landed rows of {table.stream} → {table.entity}.")
                self.updated.emit(rows)

        def failed(message: str) -> None:
            stale = self._pending
            self._finished()
            if generation == self._generation and not stale:
                self._show([], message.replace("\nWhat to do:", "  What to do:"), error=True)
                self.failed.emit(message)

        self.pool.run(tasks.preview, self.workspace, snapshot, self.table_id, limit,
                      on_done=done, on_error=failed, owner=self)

    def _finished(self) -> None:
        self._running = False
        if self._pending:
            self._pending = False
            self.schedule()

    def _show(self, rows, text: str, error: bool = False) -> None:
        self.model.set_rows(rows, COLUMNS)
        self.status.setText(text)
        self.status.setStyleSheet("color: #c62828;" if error else "color: #37474f;")
        if rows:
            fit_columns(self.view)
            for i in range(len(COLUMNS)):
                self.view.setColumnWidth(i, min(self.view.columnWidth(i), 180))

    @property
    def busy(self) -> bool:
        return self._running or self._pending or self.timer.isActive()
