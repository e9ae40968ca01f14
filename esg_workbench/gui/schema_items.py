"""What the schema tree's items carry (the roles), how its rows look, and the placeholder
child that gives an unloaded level its expand arrow. Shared by the browser
(schema_browser.py) and its merging of changes made elsewhere (schema_merge.py)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QStandardItem

from esg_workbench.gui.catalog import DiscoveryFindings

KIND = Qt.ItemDataRole.UserRole + 1  # connector | schema | table | column | placeholder
INFO = Qt.ItemDataRole.UserRole + 2  # what the item stands for (overview, schema name, TableRow, ColumnInfo)
STATE = Qt.ItemDataRole.UserRole + 3  # children: None (not loaded), "loading", "loaded"
CONNECTOR = Qt.ItemDataRole.UserRole + 4  # the connector overview of every item below it
ROWS = Qt.ItemDataRole.UserRole + 5  # a loaded level's children as read (TableRow or ColumnInfo list)
HEADERS = ["Name", "Type", "Nullable", "Rows (est.)", "Notes"]
FILL = Qt.ItemDataRole.UserRole + 6  # the Slices filling a level right now (cancelled when it is cleared)
RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter  # (enum arithmetic is slow: once)
SAMPLE_ROWS = 100
OPEN_COLUMNS_OF = 20  # tables whose columns a filter search opens
DRIFT_BRUSH = QBrush(QColor("#fff3cd"))
PLACEHOLDER_BRUSH = QBrush(QColor("#888"))
UNREADABLE_BRUSH = QBrush(QColor("#c62828"))
NO_FINDINGS = DiscoveryFindings()
FOLDED_FILL = 300  # a level with more rows than this fills folded (see _fill_tables)


def _row(name: str, kind: str, icon=None, *cells: str) -> list[QStandardItem]:
    first = QStandardItem(name)  # not editable: the view has no edit triggers
    first.setData(kind, KIND)
    if icon is not None:
        first.setIcon(icon)
    items = [first]
    items.extend(QStandardItem(text) for text in cells)
    items.extend(QStandardItem() for _ in range(len(HEADERS) - len(items)))
    return items


def _placeholder(text: str = "Loading…") -> list[QStandardItem]:
    """The one-cell child that gives an unloaded node its expand arrow."""
    item = QStandardItem(text)
    item.setData("placeholder", KIND)
    item.setForeground(PLACEHOLDER_BRUSH)
    item.setSelectable(False)
    return [item]
