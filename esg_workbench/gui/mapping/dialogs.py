"""The canvas's dialogs: save a version (with a comment), version history, auto-map
proposals, add a table mapping, new mapping. Each opens non-blocking (`open()`), so the
event loop (and running syncs) keep going; tests drive their widgets directly."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import icons
from esg_workbench.mapping.catalog import Catalog
from esg_workbench.mapping.model import Edge, Mapping

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def _ok(buttons: QDialogButtonBox):
    return buttons.button(QDialogButtonBox.StandardButton.Ok)


class SaveDialog(QDialog):
    """Save the mapping as its next version, with a comment for the audit trail."""

    def __init__(self, mapping: Mapping, problems: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Save mapping version")
        self.setObjectName("saveMappingDialog")
        nxt = (mapping.version or 0) + 1
        intro = QLabel(f"Save <b>{mapping.name}</b> as version {nxt}. Every version is kept with its author, "
                       "time and an audit entry; staging rows record the version that produced them.")
        intro.setWordWrap(True)
        self.comment = QLineEdit()
        self.comment.setObjectName("saveComment")
        self.comment.setPlaceholderText("What changed, e.g. 'gas: m3 instead of kWh from 2024'")
        self.warning = QLabel(f"The mapping has {problems} error(s): it can be saved, but not applied until "
                              "they are fixed." if problems else "")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #ef6c00;")
        self.warning.setVisible(bool(problems))
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        _ok(self.buttons).setText(f"Save version {nxt}")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Comment", self.comment)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.warning)
        layout.addWidget(self.buttons)
        self.resize(520, self.sizeHint().height())


class NewMappingDialog(QDialog):
    def __init__(self, connectors: list[str], taken: set[str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("New mapping")
        self.taken = taken
        self.name = QLineEdit()
        self.name.setObjectName("newMappingName")
        self.name.setPlaceholderText("e.g. erp_energy")
        self.connector = QComboBox()
        self.connector.setObjectName("newMappingConnector")
        self.connector.addItems(connectors)
        self.problem = QLabel()
        self.problem.setStyleSheet("color: #c62828;")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Connector", self.connector)
        layout = QVBoxLayout(self)
        intro = QLabel("A mapping turns the landed tables of one connector into ESG records. "
                       "Add its tables on the canvas next.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.problem)
        layout.addWidget(self.buttons)
        self.name.textChanged.connect(self._check)
        self._check()

    def _check(self) -> None:
        name = self.name.text().strip()
        problem = ""
        if not self.connector.count():
            problem = "Add a connector and sync it first."
        elif name and not NAME_PATTERN.match(name):
            problem = "Use letters, digits, '_', '-' or '.' (no spaces)."
        elif name in self.taken:
            problem = f"There is already a mapping named '{name}'."
        self.problem.setText(problem)
        _ok(self.buttons).setEnabled(bool(name) and not problem)

    def value(self) -> tuple[str, str]:
        return self.name.text().strip(), self.connector.currentText()


class AddTableDialog(QDialog):
    """A landed source table and the ESG entity it feeds."""

    def __init__(self, streams: list[str], catalog: Catalog, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Add a table mapping")
        self.stream = QComboBox()
        self.stream.setObjectName("addTableStream")
        self.stream.addItems(streams)
        self.entity = QComboBox()
        self.entity.setObjectName("addTableEntity")
        for e in catalog.entities.values():
            self.entity.addItem(f"{e.label} ({e.name})", e.name)
            self.entity.setItemData(self.entity.count() - 1, e.description, Qt.ItemDataRole.ToolTipRole)
        self.label = QLineEdit()
        self.label.setPlaceholderText("optional, e.g. 'Electricity meter readings'")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        _ok(self.buttons).setEnabled(bool(streams))
        form = QFormLayout()
        form.addRow("Source table", self.stream)
        form.addRow("ESG entity", self.entity)
        form.addRow("Label", self.label)
        layout = QVBoxLayout(self)
        if not streams:
            none = QLabel("The connector has no landed tables yet: sync it first.")
            none.setStyleSheet("color: #c62828;")
            layout.addWidget(none)
        layout.addLayout(form)
        layout.addWidget(self.buttons)

    def value(self) -> tuple[str, str, str]:
        return self.stream.currentText(), self.entity.currentData(), self.label.text().strip()


class AutoMapDialog(QDialog):
    """Auto-map's proposals, each with a check box; the accepted ones become edges in one
    undo step. The canvas shows them dashed meanwhile."""

    def __init__(self, proposals: list[tuple[str, Edge]], tables: dict[str, str], columns: dict[str, dict[str, str]],
                 parent: QWidget | None = None, none_because: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Auto-map")
        self.setObjectName("autoMapDialog")
        self.proposals = proposals
        intro = QLabel(f"{len(proposals)} edge{'s' if len(proposals) != 1 else ''} proposed by name and type "
                       "similarity (shown dashed on the canvas). Untick the ones that are wrong, then accept."
                       if proposals else none_because or "No proposals.")
        intro.setObjectName("autoMapIntro")
        intro.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setObjectName("autoMapList")
        self.tree.setHeaderLabels(["Source column", "ESG field", "Transforms", "Table"])
        self.tree.setRootIsDecorated(False)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        for table_id, edge in proposals:
            vtype = columns.get(table_id, {}).get(edge.source or "", "")
            item = QTreeWidgetItem([f"{edge.source} ({vtype})", edge.target,
                                    " · ".join(t.describe() for t in edge.transforms), tables.get(table_id, "")])
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(0, Qt.CheckState.Checked)
            self.tree.addTopLevelItem(item)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        _ok(self.buttons).setText("Accept checked")
        _ok(self.buttons).setEnabled(bool(proposals))
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.buttons)
        self.resize(720, 360)

    def accepted_proposals(self) -> list[tuple[str, Edge]]:
        return [p for i, p in enumerate(self.proposals)
                if self.tree.topLevelItem(i).checkState(0) == Qt.CheckState.Checked]


class HistoryDialog(QDialog):
    """Every saved version of the mapping: author, time, comment, definition hash; open
    one to inspect it or restore it (saving it makes it the newest version)."""

    open_version = Signal(int)

    def __init__(self, name: str, versions: list[dict[str, Any]], current: int | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Versions of {name}")
        self.setObjectName("mappingHistoryDialog")
        self.versions = versions
        self.tree = QTreeWidget()
        self.tree.setObjectName("versionList")
        self.tree.setHeaderLabels(["Version", "Saved (UTC)", "Author", "Comment", "Definition hash"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        for v in versions:
            at = v["created_at"]
            shown = f"{at:%Y-%m-%d %H:%M:%S}" if isinstance(at, dt.datetime) else str(at or "")
            item = QTreeWidgetItem([f"v{v['version']}" + ("  (open)" if v["version"] == current else ""), shown,
                                    v.get("author") or "", v.get("comment") or "", (v.get("definition_hash") or "")[:16]])
            item.setToolTip(4, v.get("definition_hash") or "")
            item.setData(0, Qt.ItemDataRole.UserRole, v["version"])
            self.tree.addTopLevelItem(item)
        for i in range(4):
            self.tree.resizeColumnToContents(i)
        self.tree.setColumnWidth(3, max(self.tree.columnWidth(3), 220))
        if versions:
            self.tree.setCurrentItem(self.tree.topLevelItem(0))
        self.open_button = QPushButton(icons.standard("SP_DialogOpenButton"), "Open this version")
        self.open_button.setObjectName("openVersion")
        self.open_button.setToolTip("Show this version on the canvas; save it to make it the newest version again")
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        self.open_button.clicked.connect(self._open)
        self.tree.itemDoubleClicked.connect(lambda *_: self._open())
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.open_button)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"{len(versions)} saved version{'s' if len(versions) != 1 else ''}, newest first."))
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        self.resize(760, 320)

    def select_version(self, version: int) -> None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, Qt.ItemDataRole.UserRole) == version:
                self.tree.setCurrentItem(item)

    def _open(self) -> None:
        item = self.tree.currentItem()
        if item is not None:
            self.open_version.emit(item.data(0, Qt.ItemDataRole.UserRole))
            self.accept()
