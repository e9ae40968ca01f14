"""A grid that works like a data tool's: click a header to sort (numbers as numbers, keys
naturally: 2 before 10, NULL first), type to filter every column, numbers right-aligned
(RecordsModel), NULL shown apart from empty text. Used for sample rows and the KPI
drill-down; the rows stay in a RecordsModel underneath."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from PySide6.QtCore import QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui.sample_model import RecordsModel

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple:
    """'key 10' after 'key 9': runs of digits compare as numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in _DIGITS.split(text) if part)


def sort_key(value: Any) -> tuple:
    """One order for every value a cell can hold: NULL, then numbers, then times, then text."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float, Decimal)):
        return (1, float(value))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return (2, value.isoformat())
    text = str(value)
    try:
        return (1, float(Decimal(text)))  # numbers that arrive as text (DECIMAL, keys)
    except (InvalidOperation, ValueError):
        return (3, natural_key(text))


class GridProxy(QSortFilterProxyModel):
    """Sorts by the raw values (not their text); filters on the shown text of every
    column, plus an optional row test (e.g. only flagged rows)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(-1)
        self.row_test: Callable[[int], bool] | None = None

    def lessThan(self, left, right) -> bool:
        model: RecordsModel = self.sourceModel()
        a = sort_key(model.raw(left.row(), left.column()))
        b = sort_key(model.raw(right.row(), right.column()))
        try:
            return a < b
        except TypeError:  # mixed kinds at the same rank: compare as text
            return str(a) < str(b)

    def filterAcceptsRow(self, source_row: int, source_parent) -> bool:
        if self.row_test is not None and not self.row_test(source_row):
            return False
        return super().filterAcceptsRow(source_row, source_parent)

    def set_row_test(self, test: Callable[[int], bool] | None) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt 6.9+ (invalidateFilter is deprecated there)
            self.beginFilterChange()
            self.row_test = test
            self.endFilterChange()
        else:
            self.row_test = test
            self.invalidateFilter()


class DataGrid(QWidget):
    """A filter box (and optional extra controls) above a sortable table of records."""

    filtered = Signal(int)  # rows shown after a filter change

    def __init__(self, model: RecordsModel, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.proxy = GridProxy(self)
        self.proxy.setSourceModel(model)
        self.filter = QLineEdit()
        self.filter.setObjectName(f"{name}Filter")
        self.filter.setPlaceholderText("Filter rows…")
        self.filter.setClearButtonEnabled(True)
        self.filter.setAccessibleName("Filter rows")
        self.count = QLabel()
        self.count.setObjectName(f"{name}Count")
        self.view = QTableView()
        self.view.setObjectName(name)
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # as loaded until a header is clicked
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.horizontalHeader().setToolTip("Click to sort; click again to reverse")
        self.controls = QHBoxLayout()
        self.controls.setContentsMargins(0, 0, 0, 0)
        self.controls.addWidget(self.filter, 1)
        self.controls.addWidget(self.count)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.controls)
        layout.addWidget(self.view, 1)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self._apply_filter)
        self.filter.textChanged.connect(lambda _: self._timer.start())
        self.view.horizontalHeader().sortIndicatorChanged.connect(lambda *_: self._load_all())
        model.modelReset.connect(self._show_count)
        self._show_count()

    def add_toggle(self, text: str, test: Callable[[int], bool], name: str) -> QCheckBox:
        """A check box that keeps only the rows passing `test` (a source row number)."""
        box = QCheckBox(text)
        box.setObjectName(name)
        box.toggled.connect(lambda on: (self._load_all(), self.proxy.set_row_test(test if on else None),
                                        self._show_count()))
        self.controls.insertWidget(1, box)
        return box

    def _load_all(self) -> None:
        """Sorting and filtering act on every row, not only the pages shown so far."""
        while self.model.canFetchMore():
            self.model.fetchMore()

    def _apply_filter(self) -> None:
        text = self.filter.text().strip()
        if text:
            self._load_all()
        self.proxy.setFilterFixedString(text)
        self._show_count()
        self.filtered.emit(self.proxy.rowCount())

    def _show_count(self) -> None:
        total = self.model.total_rows
        shown = self.proxy.rowCount() if (self.filter.text().strip() or self.proxy.row_test) else total
        self.count.setText(f"{shown:,} of {total:,} rows" if shown != total else f"{total:,} rows")

    def source_row(self, proxy_row: int) -> int:
        return self.proxy.mapToSource(self.proxy.index(proxy_row, 0)).row()


def record_table(object_name: str, columns: list[str] | tuple[str, ...],
                 selection: QAbstractItemView.SelectionMode) -> QTableWidget:
    """A read-only table of records, one per row: whole rows selected, columns sized to
    their contents, the last one stretched (the Schedules and Failed chunks tabs)."""
    table = QTableWidget(0, len(columns))
    table.setObjectName(object_name)
    table.setHorizontalHeaderLabels(list(columns))
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(selection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().hide()
    table.setAlternatingRowColors(True)
    table.setWordWrap(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table
