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


def connector_icon() -> QIcon:
    return standard("SP_DriveNetIcon")


def schema_icon() -> QIcon:
    return standard("SP_DirIcon")


def drift_icon() -> QIcon:
    return standard("SP_MessageBoxWarning")
