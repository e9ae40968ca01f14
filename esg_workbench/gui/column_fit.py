"""Fitting a table's columns to their contents without freezing the window.

`QTableView.resizeColumnsToContents()` asks the item delegate for the size of up to 1,000
cells per column (Qt's default "resize contents precision"), and the delegate asks a
Python model's `data()` for eight roles of each: on the KPI table after an apply (1,248
rows × 9 columns) that was 72,000 calls into Python, 0.3 s of the GUI thread's CPU and a
window frozen for longer on a loaded machine (tests/benchmarks/test_bench_gui_lag.py).
Here only texts are measured, with the font's metrics: those a model names as the widest
of each column wherever their rows are, or else the shown texts of its first rows.
"""

from __future__ import annotations

from typing import Iterable

from PySide6.QtCore import QAbstractItemModel, Qt
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QStyle, QTableView

#: rows whose texts are measured when the model does not name its widest: a paged model's
#: first page (sample_model.PAGE_SIZE); 12-18 ms for the mapping preview's 14 columns, where
#: the delegate took 80-150 ms
MEASURED_ROWS = 200


def shown_texts(model: QAbstractItemModel, rows: int = MEASURED_ROWS) -> list[tuple[int, str]]:
    """(column, text) of what the first `rows` rows show."""
    display = Qt.ItemDataRole.DisplayRole
    texts = []
    for row in range(min(rows, model.rowCount())):
        for column in range(model.columnCount()):
            text = model.data(model.index(row, column), display)
            if text:
                texts.append((column, str(text)))
    return texts


def fit_columns(view: QTableView, widest: Iterable[tuple[int, str]] | None = None, bold: bool = False) -> None:
    """Make each column of `view` as wide as its header or the widest of its texts in
    `widest` ((column, text) pairs; by default what the first MEASURED_ROWS rows show),
    measured in bold if `bold` (some rows are)."""
    header = view.horizontalHeader()
    font = QFont(view.font())
    font.setBold(bold)
    metrics = QFontMetrics(font)
    # what the delegate adds around a text: the focus frame's margin and a pixel, on each side
    margin = 2 * (view.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, view) + 1) + 2
    widths = [header.sectionSizeHint(column) for column in range(header.count())]
    for column, text in shown_texts(view.model()) if widest is None else widest:
        widths[column] = max(widths[column], metrics.horizontalAdvance(text) + margin)
    for column, width in enumerate(widths):
        view.setColumnWidth(column, width)
