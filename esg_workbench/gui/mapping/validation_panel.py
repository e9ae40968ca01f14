"""The validation panel: every problem of the mapping (typed errors and warnings from
`validate`), with what to do. Clicking a message selects the item it names on the
canvas."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from esg_workbench.gui import icons
from esg_workbench.mapping.errors import MappingError

PROBLEM_ROLE = Qt.ItemDataRole.UserRole + 1


class ValidationPanel(QWidget):
    problem_activated = Signal(object)  # MappingError
    counts_changed = Signal(int, int)  # errors, warnings

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.problems: list[MappingError] = []
        self.tree = QTreeWidget()
        self.tree.setObjectName("validationList")
        self.tree.setColumnCount(3)
        self.tree.setHeaderLabels(["Problem", "Kind", "Where"])
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        self.tree.header().setStretchLastSection(False)
        self.tree.setColumnWidth(0, 560)
        self.tree.setColumnWidth(1, 170)
        self.tree.header().setSectionResizeMode(2, self.tree.header().ResizeMode.Stretch)
        self.hint = QLabel()
        self.hint.setObjectName("validationHint")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #37474f; padding: 2px 4px;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.hint)
        self.tree.itemClicked.connect(self._clicked)
        self.tree.itemActivated.connect(self._clicked)
        self.tree.currentItemChanged.connect(lambda item, _: self._show_hint(item))
        self.streams: dict[str, str] = {}  # table_id -> "stream → entity"

    def set_problems(self, problems: list[MappingError], streams: dict[str, str] | None = None) -> None:
        self.problems = list(problems)
        self.streams = streams or self.streams
        self.tree.clear()
        ordered = sorted(problems, key=lambda p: (p.severity != "error", list(self.streams).index(p.table_id)
                                                  if p.table_id in self.streams else 999))
        for p in ordered:
            item = QTreeWidgetItem([p.message, p.kind, self.streams.get(p.table_id or "", "")])
            item.setIcon(0, icons.standard("SP_MessageBoxCritical" if p.severity == "error" else "SP_MessageBoxWarning"))
            item.setToolTip(0, f"{p.message}\nWhat to do: {p.hint}")
            item.setData(0, PROBLEM_ROLE, p)
            self.tree.addTopLevelItem(item)
        if not problems:
            item = QTreeWidgetItem(["No problems: every required field is mapped and every edge fits its field.", "", ""])
            item.setIcon(0, icons.dot_icon("ok"))
            self.tree.addTopLevelItem(item)
        errors = sum(1 for p in problems if p.severity == "error")
        self.hint.setText("Click a problem to select the item on the canvas." if problems else "")
        self.counts_changed.emit(errors, len(problems) - errors)

    def item_for(self, problem_kind: str, field: str | None = None) -> QTreeWidgetItem | None:
        """The list entry of a problem (tests and keyboard users)."""
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            p = item.data(0, PROBLEM_ROLE)
            if p is not None and p.kind == problem_kind and (field is None or p.field == field):
                return item
        return None

    def _show_hint(self, item: QTreeWidgetItem | None) -> None:
        p = item.data(0, PROBLEM_ROLE) if item is not None else None
        if p is not None:
            self.hint.setText(f"What to do: {p.hint}")

    def _clicked(self, item: QTreeWidgetItem, column: int = 0) -> None:
        p = item.data(0, PROBLEM_ROLE)
        if p is not None:
            self._show_hint(item)
            self.problem_activated.emit(p)
