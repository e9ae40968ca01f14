"""Audit: the hash chain (actor, action, hashes, metadata) and Verify chain, which names
and highlights the first broken entry, and says in plain words what the chain's head is
(the entry count and last hash every KPI export carries) and how to check it later."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
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

COLUMNS = ["id", "at", "actor", "action", "connector", "input_hash", "output_hash", "previous_hash", "entry_hash", "metadata"]
HEADERS = ["#", "At (UTC)", "Actor", "Action", "Connector", "Input hash", "Output hash", "Previous hash", "Entry hash", "Metadata"]
HASHES = {"input_hash", "output_hash", "previous_hash", "entry_hash"}
LIMIT = 1000


class AuditModel(RecordsModel):
    def __init__(self, parent=None):
        super().__init__([], COLUMNS, parent=parent)
        self.broken_id: int | None = None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section] if section < len(HEADERS) else None
        return super().headerData(section, orientation, role)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= self.rowCount():
            return None
        column = COLUMNS[index.column()]
        value = self.raw(index.row(), index.column())
        if role == Qt.ItemDataRole.BackgroundRole and self.broken_id is not None \
                and self.raw(index.row(), 0) == self.broken_id:
            return QBrush(QColor("#ffcdd2"))
        if role == Qt.ItemDataRole.DisplayRole:
            if column in HASHES:
                return (value[:12] + "…") if value else ""
            if isinstance(value, dt.datetime):
                return f"{value:%Y-%m-%d %H:%M:%S}"
        if role == Qt.ItemDataRole.ToolTipRole and column in HASHES:
            return value
        if role == Qt.ItemDataRole.DecorationRole and column == "id" and self.broken_id is not None \
                and value == self.broken_id:
            return icons.dot_icon("error")
        if role == Qt.ItemDataRole.FontRole and column in HASHES:
            from PySide6.QtGui import QFontDatabase

            return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        return super().data(index, role)

    def row_of(self, entry_id: int) -> int | None:
        for row in range(self.total_rows):
            if self.raw(row, 0) == entry_id:
                return row
        return None


class AuditPanel(QWidget):
    loaded = Signal(int)
    verified = Signal(object)  # VerifyResult

    def __init__(self, pool, parent: QWidget | None = None):
        super().__init__(parent)
        self.pool = pool
        self.workspace = None
        self.verify_button = QPushButton(icons.standard("SP_DialogApplyButton"), "&Verify chain")
        self.verify_button.setObjectName("verifyChain")
        self.verify_button.setToolTip("Recompute every hash and name the first entry that does not match (Ctrl+Shift+V)")
        self.refresh_button = QPushButton(icons.standard("SP_BrowserReload"), "Refresh")
        self.result = QLabel("The chain has not been verified in this session.")
        self.result.setObjectName("verifyResult")
        self.result.setWordWrap(True)
        self.head = QLabel("")
        self.head.setObjectName("chainHead")
        self.head.setWordWrap(True)
        self.head.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_head_button = QPushButton("Copy head")
        self.copy_head_button.setObjectName("copyChainHead")
        self.copy_head_button.setToolTip("Copy the chain's head (ENTRIES:HASH) to write it down: "
                                         "esg-workbench audit verify --anchor ENTRIES:HASH checks a later chain "
                                         "against it")
        self.copy_head_button.setEnabled(False)
        self.anchor: str | None = None
        self.model = AuditModel(self)
        self.view = QTableView()
        self.view.setObjectName("auditTable")
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.details = QPlainTextEdit()
        self.details.setObjectName("auditDetails")
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("The selected entry, in full.")

        head = QHBoxLayout()
        head.addWidget(self.result, 1)
        head.addWidget(self.refresh_button)
        head.addWidget(self.verify_button)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.view)
        self.splitter.addWidget(self.details)
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(head)
        anchor_row = QHBoxLayout()
        anchor_row.addWidget(self.head, 1)
        anchor_row.addWidget(self.copy_head_button)
        layout.addLayout(anchor_row)
        layout.addWidget(self.splitter, 1)
        self.copy_head_button.clicked.connect(self.copy_head)

        self.verify_button.clicked.connect(self.verify)
        self.refresh_button.clicked.connect(self.refresh)
        self.view.selectionModel().currentRowChanged.connect(self._selected)

    def set_workspace(self, workspace) -> None:
        self.workspace = workspace
        self.model.broken_id = None
        self.model.clear_rows()
        self.details.clear()
        self._set_result(None, "The chain has not been verified in this session.")
        self.head.setText("")
        self.anchor = None
        self.copy_head_button.setEnabled(False)
        self.refresh()

    def refresh(self) -> None:
        if self.workspace is None:
            return

        def done(entries: list[dict[str, Any]]) -> None:
            self.model.set_rows(entries, COLUMNS)
            self.view.resizeColumnsToContents()
            self.view.setColumnWidth(COLUMNS.index("action"), max(140, self.view.columnWidth(COLUMNS.index("action"))))
            self.loaded.emit(len(entries))

        self.pool.run(catalog.audit_entries, self.workspace, LIMIT, on_done=done,
                      on_error=lambda m: self._set_result(False, m), owner=self)

    def _set_result(self, ok: bool | None, text: str) -> None:
        color = {True: icons.STATUS_COLORS["ok"], False: icons.STATUS_COLORS["error"]}.get(ok, "#555")
        self.result.setStyleSheet(f"color: {color}; font-weight: {'bold' if ok is not None else 'normal'};")
        self.result.setText(text)

    def verify(self) -> None:
        if self.workspace is None:
            return
        from esg_workbench.audit import chain

        self.verify_button.setEnabled(False)
        self._set_result(None, "Verifying the chain…")

        def done(result) -> None:
            self.verify_button.setEnabled(True)
            self.model.broken_id = None if result.ok else result.first_bad_id
            self._set_result(result.ok, result.describe())
            self._show_head(result)
            if not result.ok:
                self._show_broken(result.first_bad_id)
            self.model.layoutChanged.emit()
            self.verified.emit(result)

        def failed(message: str) -> None:
            self.verify_button.setEnabled(True)
            self._set_result(False, message)

        self.pool.run(chain.verify, self.workspace, on_done=done, on_error=failed, owner=self)

    def _show_head(self, result) -> None:
        """The head in plain words: what it is, and what to do with it."""
        head = result.head
        if head is None:
            self.anchor = None
            self.head.setText("No head is recorded yet: the next entry records one (then removed entries are "
                              "found too).")
        else:
            self.anchor = str(head)
            self.head.setText(
                f"Chain head: {head.entries:,} entries, last hash {head.last_hash[:12]}…. Every KPI export carries "
                "it; write it down (Copy head) and check later that the chain still continues it with: "
                f"esg-workbench audit verify --anchor {head.entries}:{head.last_hash[:12]}…")
        self.copy_head_button.setEnabled(self.anchor is not None)

    def copy_head(self) -> None:
        from PySide6.QtWidgets import QApplication

        if self.anchor:
            QApplication.clipboard().setText(self.anchor)

    def _show_broken(self, entry_id: int | None) -> None:
        if entry_id is None:
            return
        row = self.model.row_of(entry_id)
        if row is None:
            self.result.setText(self.result.text() + f" (entry {entry_id} is older than the {LIMIT} shown)")
            return
        while row >= self.model.rowCount() and self.model.canFetchMore():
            self.model.fetchMore()
        index = self.model.index(row, 0)
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)

    def _selected(self, current, previous) -> None:
        if not current.isValid():
            return
        entry = {c: self.model.raw(current.row(), i) for i, c in enumerate(COLUMNS)}
        try:
            entry["metadata"] = json.loads(entry["metadata"])
        except (TypeError, ValueError):
            pass
        text = json.dumps(entry, indent=2, default=str, ensure_ascii=False)
        if self.model.broken_id is not None and entry["id"] == self.model.broken_id:
            text = "THIS ENTRY BREAKS THE CHAIN: " + self.result.text() + "\n\n" + text
        self.details.setPlainText(text)
