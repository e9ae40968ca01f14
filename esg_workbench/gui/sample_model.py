"""A paged table model for sample rows (and any list of records).

Rows are handed to the view a page at a time (`canFetchMore`/`fetchMore`, like
Spyder's DataFrameModel), so a long result never makes the view lay out everything at
once. Every cell is rendered defensively: NULL shows greyed and in italics (empty text
shows empty, with a tooltip saying so), numbers are right-aligned (also DECIMALs that
arrive as text, when the whole column is numeric), long text is cut with the
whole value in the tooltip, and a value that cannot be rendered shows
"Display error" instead of raising inside paint.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any, Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QFont

PAGE_SIZE = 200
MAX_CELL_CHARS = 120
DISPLAY_ERROR = "Display error"
NULL_TEXT = "NULL"
EMPTY_TIP = "Empty text (not NULL)"
_NUMBER_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _numeric_column(values: list[Any]) -> bool:
    """Every value present is a number, or text that reads as one (DECIMAL as JSON text)."""
    present = [v for v in values if v is not None]
    return bool(present) and all(is_number(v) or (isinstance(v, str) and _NUMBER_TEXT.match(v)) for v in present)


def render(value: Any) -> str:
    """A value as one line of text. May raise for truly broken objects (caught by data())."""
    if value is None:
        return NULL_TEXT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return "0x" + data[:32].hex() + ("…" if len(data) > 32 else "")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    text = str(value)
    return text.replace("\r", " ").replace("\n", " ⏎ ").replace("\x00", "\\0")


class RecordsModel(QAbstractTableModel):
    """Rows given as dicts (column -> value) or sequences, with optional column order."""

    def __init__(self, rows: Sequence[Any] = (), columns: Sequence[str] | None = None,
                 page_size: int = PAGE_SIZE, parent=None):
        super().__init__(parent)
        self.page_size = page_size
        self._rows: list[Any] = []
        self._columns: list[str] = []
        self._loaded = 0
        self._numeric: set[int] = set()  # columns whose values are all numbers
        self.set_rows(rows, columns)

    # --- content --------------------------------------------------------------------------

    def set_rows(self, rows: Sequence[Any], columns: Sequence[str] | None = None) -> None:
        self.beginResetModel()
        self._rows = list(rows or [])
        if columns is None:
            seen: dict[str, None] = {}
            for row in self._rows[:PAGE_SIZE]:
                if isinstance(row, dict):
                    for key in row:
                        seen.setdefault(str(key), None)
            columns = list(seen)
        self._columns = [str(c) for c in columns]
        self._loaded = min(self.page_size, len(self._rows))
        self._numeric = set()
        for c in range(len(self._columns)):
            try:
                if _numeric_column([self.raw(r, c) for r in range(min(PAGE_SIZE, len(self._rows)))]):
                    self._numeric.add(c)
            except Exception:  # noqa: BLE001 - a ragged record: leave the column left-aligned
                pass
        self.endResetModel()

    def clear(self) -> None:
        self.set_rows([], [])

    def clear_rows(self) -> None:
        """Drop the rows, keep the columns."""
        self.set_rows([], self._columns)

    @property
    def total_rows(self) -> int:
        return len(self._rows)

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def raw(self, row: int, column: int) -> Any:
        record = self._rows[row]
        if isinstance(record, dict):
            return record.get(self._columns[column])
        return record[column] if column < len(record) else None

    # --- paging -------------------------------------------------------------------------

    def canFetchMore(self, parent=QModelIndex()) -> bool:
        return not parent.isValid() and self._loaded < len(self._rows)

    def fetchMore(self, parent=QModelIndex()) -> None:
        if parent.isValid():
            return
        extra = min(self.page_size, len(self._rows) - self._loaded)
        if extra <= 0:
            return
        self.beginInsertRows(QModelIndex(), self._loaded, self._loaded + extra - 1)
        self._loaded += extra
        self.endInsertRows()

    # --- the model ------------------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else self._loaded

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._columns[section] if section < len(self._columns) else None
        return str(section + 1)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= self._loaded or index.column() >= len(self._columns):
            return None
        try:
            value = self.raw(index.row(), index.column())
        except Exception:  # a ragged or broken record
            value = _Broken()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.EditRole):
            try:
                text = render(value)
            except Exception as exc:  # noqa: BLE001 - never crash while painting
                return DISPLAY_ERROR if role != Qt.ItemDataRole.ToolTipRole else \
                    f"This value cannot be shown ({type(exc).__name__})."
            if role == Qt.ItemDataRole.ToolTipRole:
                if value == "":
                    return EMPTY_TIP
                if value is None:
                    return "NULL: no value"
                return text if len(text) > MAX_CELL_CHARS else None
            return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 1] + "…"
        if role == Qt.ItemDataRole.ForegroundRole:
            if value is None:
                return QBrush(QColor("#9e9e9e"))
            if isinstance(value, _Broken):
                return QBrush(QColor("#c62828"))
            return None
        if role == Qt.ItemDataRole.FontRole:
            if value is None:
                font = QFont()
                font.setItalic(True)
                return font
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if is_number(value) or index.column() in self._numeric:
                return RIGHT
            return None
        return None


class _Broken:
    def __str__(self) -> str:
        raise ValueError("unreadable record")
