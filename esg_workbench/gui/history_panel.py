"""History: sync runs from connector_sync_logs, the chunk ledger of the selected run,
and its error in a copyable box."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import catalog, icons
from esg_workbench.gui.sample_model import RecordsModel

RUN_COLUMNS = ["id", "connector", "status", "mode", "load_type", "started_at", "finished_at", "duration",
               "items_read", "items_written", "items_deleted", "error"]
RUN_HEADERS = ["Run", "Connector", "Status", "Mode", "Load", "Started", "Finished", "Duration", "Read",
               "Written", "Deleted in source", "Error"]
CHUNK_COLUMNS = ["stream", "seq", "range", "status", "attempts", "rows", "planned_by", "last_run", "error"]
CHUNK_HEADERS = ["Table", "Chunk", "Range", "Status", "Attempts", "Rows", "Planned by run", "Last run", "Error"]
STATUS_KIND = {"success": "ok", "done": "ok", "partial_success": "warn", "cancelled": "warn", "failed": "error",
               "running": "info", "pending": "idle", "superseded": "idle"}


class StatusModel(RecordsModel):
    """Records with a coloured status column and friendly numbers and times."""

    def __init__(self, columns: list[str], headers: list[str], parent=None):
        super().__init__([], columns, parent=parent)
        self.headers = headers

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.headers[section] if section < len(self.headers) else None
        return super().headerData(section, orientation, role)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= self.rowCount():
            return None
        column = self.columns[index.column()]
        value = self.raw(index.row(), index.column())
        if column == "status":
            if role == Qt.ItemDataRole.DecorationRole:
                return icons.dot_icon(STATUS_KIND.get(str(value), "idle"))
            if role == Qt.ItemDataRole.DisplayRole:
                return str(value).replace("_", " ")
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(value, dt.datetime):
                return f"{value:%Y-%m-%d %H:%M:%S}"
            if isinstance(value, int) and not isinstance(value, bool) and column not in ("id", "seq", "planned_by", "last_run"):
                return f"{value:,}"
            if column == "error":
                return str(value).splitlines()[0] if value else ""
        if role == Qt.ItemDataRole.ForegroundRole and column == "error" and value:
            return QBrush(QColor("#c62828"))
        return super().data(index, role)


def _with_duration(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's own time (start to finish of the landing). Mapping the new rows and
    recomputing the KPIs come after it; the live log's total includes them, so say so."""
    for r in runs:
        if r.get("retry_of"):  # a schedule's retry names its first attempt (sync/scheduler.py)
            r["mode"] = f"{r['mode']}, retry {r.get('attempt') or 2} of run {r['retry_of']}"
        if r.get("finished_at") and r.get("started_at"):
            seconds = (r["finished_at"] - r["started_at"]).total_seconds()
            r["duration"] = f"{seconds:.1f} s" + (" + mapping" if _mapped(r) else "")
        else:
            r["duration"] = ""
    return runs


def _mapped(run: dict[str, Any]) -> bool:
    details = run.get("details")
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            return False
    return bool(details and details.get("mapped"))


class HistoryPanel(QWidget):
    loaded = Signal(int)  # number of runs shown
    chunks_loaded = Signal(int, int)  # run id, number of chunks

    def __init__(self, pool, parent: QWidget | None = None):
        super().__init__(parent)
        self.pool = pool
        self.workspace = None
        self.connector: str | None = None
        self._runs: list[dict[str, Any]] = []

        self.only_selected = QCheckBox("Only the selected connector")
        self.only_selected.setChecked(False)
        self.refresh_button = QPushButton(icons.standard("SP_BrowserReload"), "Refresh")
        self.summary = QLabel()
        self.runs_model = StatusModel(RUN_COLUMNS, RUN_HEADERS, self)
        self.runs_view = QTableView()
        self.runs_view.setObjectName("historyRuns")
        self.runs_view.setModel(self.runs_model)
        self.chunks_model = StatusModel(CHUNK_COLUMNS, CHUNK_HEADERS, self)
        self.chunks_view = QTableView()
        self.chunks_view.setObjectName("historyChunks")
        self.chunks_view.setModel(self.chunks_model)
        for view in (self.runs_view, self.chunks_view):
            view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
            view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
            view.setAlternatingRowColors(True)
            view.verticalHeader().setVisible(False)
            view.verticalHeader().setDefaultSectionSize(22)
            view.horizontalHeader().setStretchLastSection(True)
            view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.chunks_title = QLabel("Select a run to see its chunks.")
        self.error_box = QPlainTextEdit()
        self.error_box.setObjectName("historyError")
        self.error_box.setReadOnly(True)
        self.error_box.setPlaceholderText("The selected run's or chunk's error, to read and copy.")
        self.error_box.setMaximumHeight(90)
        self.copy_button = QPushButton(icons.standard("SP_DialogSaveButton"), "Copy error")
        self.copy_button.setObjectName("copyError")
        self.copy_button.setEnabled(False)

        head = QHBoxLayout()
        head.addWidget(self.summary, 1)
        head.addWidget(self.only_selected)
        head.addWidget(self.refresh_button)
        upper = QWidget()
        ul = QVBoxLayout(upper)
        ul.setContentsMargins(0, 0, 0, 0)
        ul.addLayout(head)
        ul.addWidget(self.runs_view, 1)
        lower = QWidget()
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.chunks_title)
        ll.addWidget(self.chunks_view, 1)
        err = QHBoxLayout()
        err.addWidget(self.error_box, 1)
        err.addWidget(self.copy_button, 0, Qt.AlignmentFlag.AlignTop)
        ll.addLayout(err)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(upper)
        self.splitter.addWidget(lower)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.splitter)

        self.refresh_button.clicked.connect(self.refresh)
        self.only_selected.toggled.connect(lambda _: self._show_runs())
        self.runs_view.selectionModel().currentRowChanged.connect(self._run_selected)
        self.chunks_view.selectionModel().currentRowChanged.connect(self._chunk_selected)
        self.copy_button.clicked.connect(self.copy_error)

    def set_workspace(self, workspace) -> None:
        self.workspace = workspace
        self._runs = []
        self.runs_model.clear_rows()
        self.chunks_model.clear_rows()
        self.refresh()

    def set_connector(self, name: str | None) -> None:
        self.connector = name
        if self.only_selected.isChecked():
            self._show_runs()

    def refresh(self) -> None:
        if self.workspace is None:
            return

        def done(runs: list[dict[str, Any]]) -> None:
            self._runs = _with_duration(runs)
            self._show_runs()

        self.pool.run(catalog.runs, self.workspace, on_done=done,
                      on_error=lambda m: self.summary.setText(m), owner=self)

    def _show_runs(self) -> None:
        runs = self._runs
        if self.only_selected.isChecked() and self.connector:
            runs = [r for r in runs if r["connector"] == self.connector]
        selected = self.selected_run_id()
        self.runs_model.set_rows(runs, RUN_COLUMNS)
        counts: dict[str, int] = {}
        for r in runs:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        self.summary.setText(f"{len(runs)} run(s)" + (": " + ", ".join(
            f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items())) if counts else ""))
        self.runs_view.resizeColumnsToContents()
        self.runs_view.setColumnWidth(RUN_COLUMNS.index("error"), 300)
        if selected is not None:
            self.select_run(selected)
        self.loaded.emit(len(runs))

    def selected_run_id(self) -> int | None:
        index = self.runs_view.currentIndex()
        if not index.isValid():
            return None
        return self.runs_model.raw(index.row(), RUN_COLUMNS.index("id"))

    def select_run(self, run_id: int) -> bool:
        for row in range(self.runs_model.total_rows):
            if self.runs_model.raw(row, 0) == run_id:
                while row >= self.runs_model.rowCount() and self.runs_model.canFetchMore():
                    self.runs_model.fetchMore()
                self.runs_view.setCurrentIndex(self.runs_model.index(row, 0))
                return True
        return False

    def _run_selected(self, current, previous) -> None:
        if not current.isValid() or self.workspace is None:
            return
        run_id = self.runs_model.raw(current.row(), 0)
        error = self.runs_model.raw(current.row(), RUN_COLUMNS.index("error"))
        self._set_error(error)

        def done(chunks: list[dict[str, Any]]) -> None:
            if self.selected_run_id() != run_id:
                return
            self.chunks_model.set_rows(chunks, CHUNK_COLUMNS)
            self.chunks_view.resizeColumnsToContents()
            failed = sum(1 for c in chunks if c["status"] == "failed")
            self.chunks_title.setText(f"Chunks of run {run_id}: {len(chunks)}"
                                      + (f", {failed} failed" if failed else ""))
            self.chunks_loaded.emit(run_id, len(chunks))

        self.chunks_title.setText(f"Loading the chunks of run {run_id}…")
        self.pool.run(catalog.run_chunks, self.workspace, run_id, on_done=done,
                      on_error=lambda m: self.chunks_title.setText(m), owner=self)

    def _chunk_selected(self, current, previous) -> None:
        if current.isValid():
            error = self.chunks_model.raw(current.row(), CHUNK_COLUMNS.index("error"))
            if error:
                self._set_error(error)

    def _set_error(self, text: str | None) -> None:
        self.error_box.setPlainText(text or "")
        self.copy_button.setEnabled(bool(text))

    def copy_error(self) -> None:
        QGuiApplication.clipboard().setText(self.error_box.toPlainText())

