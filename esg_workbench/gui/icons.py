"""Icons: QStyle's standard ones where they fit, a few small ones drawn with QPainter.
No image files to ship or lose."""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QApplication, QStyle

STATUS_COLORS = {
    "ok": "#2e7d32",
    "warn": "#ef6c00",
    "error": "#c62828",
    "info": "#1565c0",
    "idle": "#757575",
}


def standard(name: str) -> QIcon:
    return QApplication.style().standardIcon(getattr(QStyle.StandardPixmap, name))


def _canvas(size: int = 32) -> tuple[QPixmap, QPainter]:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    return pixmap, painter


@lru_cache(maxsize=None)
def key_icon(color: str = "#b8860b") -> QIcon:
    """A key: primary key columns."""
    pixmap, p = _canvas()
    pen = QPen(QColor(color), 3.2)
    p.setPen(pen)
    p.drawEllipse(QRectF(4, 9, 13, 13))
    p.drawLine(QPointF(17, 15.5), QPointF(29, 15.5))
    p.drawLine(QPointF(25, 15.5), QPointF(25, 21))
    p.drawLine(QPointF(29, 15.5), QPointF(29, 20))
    p.end()
    return QIcon(pixmap)


@lru_cache(maxsize=None)
def table_icon() -> QIcon:
    pixmap, p = _canvas()
    p.setPen(QPen(QColor("#37474f"), 2))
    p.setBrush(QColor("#e3f2fd"))
    p.drawRect(QRectF(4, 6, 24, 20))
    p.fillRect(QRectF(5, 7, 23, 5), QColor("#64b5f6"))
    for y in (17, 22):
        p.drawLine(QPointF(4, y), QPointF(28, y))
    p.drawLine(QPointF(14, 12), QPointF(14, 26))
    p.end()
    return QIcon(pixmap)


@lru_cache(maxsize=None)
def column_icon(nullable: bool = True) -> QIcon:
    pixmap, p = _canvas()
    p.setPen(QPen(QColor("#546e7a"), 2))
    p.setBrush(QColor("#eceff1") if nullable else QColor("#90a4ae"))
    p.drawRect(QRectF(11, 4, 10, 24))
    p.end()
    return QIcon(pixmap)


@lru_cache(maxsize=None)
def dot_icon(kind: str) -> QIcon:
    """A coloured status dot (connector badges, run status)."""
    pixmap, p = _canvas()
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor(STATUS_COLORS.get(kind, STATUS_COLORS["idle"])))
    p.drawEllipse(QRectF(8, 8, 16, 16))
    p.end()
    return QIcon(pixmap)


@lru_cache(maxsize=None)
def plug_icon() -> QIcon:
    """Test connection: a plug (not a tick, which is the audit chain's)."""
    pixmap, p = _canvas()
    p.setPen(QPen(QColor("#37474f"), 2.6))
    p.setBrush(QColor("#90caf9"))
    p.drawRoundedRect(QRectF(8, 12, 16, 12), 3, 3)
    p.drawLine(QPointF(12, 12), QPointF(12, 5))
    p.drawLine(QPointF(20, 12), QPointF(20, 5))
    p.drawLine(QPointF(16, 24), QPointF(16, 30))
    p.end()
    return QIcon(pixmap)


@lru_cache(maxsize=None)
def chain_icon() -> QIcon:
    """Verify audit chain: two chain links."""
    pixmap, p = _canvas()
    p.setPen(QPen(QColor("#2e7d32"), 3))
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawRoundedRect(QRectF(3, 11, 16, 10), 5, 5)
    p.drawRoundedRect(QRectF(13, 11, 16, 10), 5, 5)
    p.end()
    return QIcon(pixmap)


#: the glyph and colour of each column family (ColumnInfo.family) in the schema tree
TYPE_GLYPHS = {
    "integer": ("123", "#1565c0"), "decimal": ("1.5", "#1565c0"), "float": ("1.5", "#1565c0"),
    "text": ("Abc", "#6a1b9a"), "boolean": ("T/F", "#00838f"), "date": ("Dt", "#ef6c00"),
    "timestamp": ("DT", "#ef6c00"), "timestamptz": ("DT", "#ef6c00"), "time": ("hh", "#ef6c00"),
    "binary": ("01", "#546e7a"), "json": ("{ }", "#2e7d32"), "other": ("?", "#757575"),
}


@lru_cache(maxsize=None)
def type_icon(family: str, primary_key: bool = False) -> QIcon:
    """A column's type family as a small glyph (123, Abc, DT ...); a key column is underlined gold.
    (Letters, not symbols: a symbol missing from the system font would draw as a box.)"""
    from PySide6.QtGui import QFont

    glyph, color = TYPE_GLYPHS.get(family, TYPE_GLYPHS["other"])
    pixmap, p = _canvas()
    font = QFont()
    font.setPixelSize(15 if len(glyph) < 3 else 12)
    font.setBold(True)
    p.setFont(font)
    p.setPen(QColor(color))
    p.drawText(QRectF(0, 2, 32, 26), Qt.AlignmentFlag.AlignCenter, glyph)
    if primary_key:
        p.fillRect(QRectF(4, 27, 24, 3), QColor("#b8860b"))
    p.end()
    return QIcon(pixmap)


def connector_icon() -> QIcon:
    return standard("SP_DriveNetIcon")


def schema_icon() -> QIcon:
    return standard("SP_DirIcon")


def drift_icon() -> QIcon:
    return standard("SP_MessageBoxWarning")
