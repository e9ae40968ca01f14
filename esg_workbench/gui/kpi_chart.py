"""A small chart widget drawn with QPainter (PySide6-Essentials has no QtCharts): stacked
bars (a flow or a stock split by site) or lines (ratios, which must not be stacked),
with nice axis ticks, a legend, a tooltip per period, and a click on a bar segment or
a line point reported as (period, series) for drill-down."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

PALETTE = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#c62828", "#5d4037", "#9e9d24",
           "#ad1457", "#37474f"]
BARS, LINES = "bars", "lines"


@dataclass
class Series:
    name: str
    values: list[float | None]
    color: str = ""


def nice_step(span: float, ticks: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about `ticks` ticks."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def format_number(value: float) -> str:
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:,.1f}M"
    if a >= 1e4:
        return f"{value / 1e3:,.0f}k"
    if a >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


class ChartWidget(QWidget):
    clicked = Signal(str, str)  # category (period), series (site)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("kpiChart")
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(120)
        self.title = ""
        self.unit = ""
        self.mode = BARS
        self.categories: list[str] = []
        self.series: list[Series] = []
        self.empty_text = "No values to chart."
        self.highlight: str | None = None  # a category drawn on a light band (the table's current period)
        self._plot = QRectF()
        self._hits: list[tuple[QRectF, str, str]] = []  # (rect, category, series)

    def sizeHint(self) -> QSize:
        return QSize(600, 260)

    def set_data(self, title: str, unit: str, categories: list[str], series: list[Series], mode: str = BARS) -> None:
        self.title, self.unit, self.mode = title, unit, mode
        self.categories = list(categories)
        self.series = []
        for i, s in enumerate(series):
            self.series.append(Series(s.name, list(s.values) + [None] * (len(categories) - len(s.values)),
                                      s.color or PALETTE[i % len(PALETTE)]))
        self.update()

    def set_highlight(self, category: str | None) -> None:
        if category != self.highlight:
            self.highlight = category
            self.update()

    def clear(self, text: str = "No values to chart.") -> None:
        self.empty_text = text
        self.set_data("", "", [], [])

    # --- geometry --------------------------------------------------------------------------

    def _range(self) -> tuple[float, float]:
        lo, hi = 0.0, 0.0
        for i in range(len(self.categories)):
            values = [s.values[i] for s in self.series if s.values[i] is not None]
            if self.mode == BARS:
                hi = max(hi, sum(v for v in values if v > 0))
                lo = min(lo, sum(v for v in values if v < 0))
            else:
                for v in values:
                    hi, lo = max(hi, v), min(lo, v)
        if hi == lo:
            hi = lo + 1
        step = nice_step(hi - lo)
        return math.floor(lo / step) * step, math.ceil(hi / step) * step

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("white"))
        self._hits = []
        font = QFont(self.font())
        font.setPointSizeF(8.5)
        p.setFont(font)
        fm = QFontMetricsF(font)
        if not self.categories or not self.series:
            p.setPen(QColor("#78909c"))
            p.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignCenter, self.empty_text)
            return
        title_font = QFont(font)
        title_font.setBold(True)
        title_font.setPointSizeF(9.5)
        p.setFont(title_font)
        p.setPen(QColor("#263238"))
        p.drawText(QRectF(10, 4, self.width() - 20, 20), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   f"{self.title} ({self.unit})" if self.unit else self.title)
        p.setFont(font)
        legend_rows = self._legend(p, fm)
        lo, hi = self._range()
        step = nice_step(hi - lo)
        labels = []
        v = lo
        while v <= hi + step / 2:
            labels.append(v)
            v += step
        left = 12 + max(fm.horizontalAdvance(format_number(x)) for x in labels)
        plot = QRectF(left, 30 + legend_rows * 16, self.width() - left - 14, self.height() - 30 - legend_rows * 16 - 34)
        if plot.height() < 40 or plot.width() < 60:
            return
        self._plot = plot

        def y_of(value: float) -> float:
            return plot.bottom() - (value - lo) / (hi - lo) * plot.height()

        if self.highlight in self.categories:  # the period selected in the table
            i = self.categories.index(self.highlight)
            band = plot.width() / len(self.categories)
            p.fillRect(QRectF(plot.left() + i * band, plot.top(), band, plot.height()), QColor("#e3f2fd"))
        for value in labels:  # grid and y labels
            y = y_of(value)
            p.setPen(QPen(QColor("#cfd8dc") if value else QColor("#90a4ae"), 1))
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.setPen(QColor("#607d8b"))
            p.drawText(QRectF(0, y - 8, left - 6, 16), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       format_number(value))
        n = len(self.categories)
        slot = plot.width() / n
        every = max(1, math.ceil((max(fm.horizontalAdvance(c) for c in self.categories) + 10) / slot))
        p.setPen(QColor("#607d8b"))
        for i, c in enumerate(self.categories):  # x labels
            if i % every == 0:
                p.drawText(QRectF(plot.left() + i * slot - 30, plot.bottom() + 4, slot + 60, 16),
                           Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, c)
        if self.mode == BARS:
            width = max(2.0, slot * 0.7)
            for i, c in enumerate(self.categories):
                x = plot.left() + i * slot + (slot - width) / 2
                up, down = 0.0, 0.0
                for s in self.series:
                    v = s.values[i]
                    if v is None or v == 0:
                        continue
                    base = up if v > 0 else down
                    top = base + v
                    rect = QRectF(QPointF(x, y_of(max(base, top))), QPointF(x + width, y_of(min(base, top))))
                    p.fillRect(rect, QColor(s.color))
                    self._hits.append((rect, c, s.name))
                    if v > 0:
                        up = top
                    else:
                        down = top
        else:
            for s in self.series:
                path, started = QPainterPath(), False
                color = QColor(s.color)
                for i, c in enumerate(self.categories):
                    v = s.values[i]
                    if v is None:
                        started = False
                        continue
                    point = QPointF(plot.left() + (i + 0.5) * slot, y_of(v))
                    if started:
                        path.lineTo(point)
                    else:
                        path.moveTo(point)
                        started = True
                    self._hits.append((QRectF(point.x() - 5, point.y() - 5, 10, 10), c, s.name))
                p.setPen(QPen(color, 2))
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawPath(path)
                p.setBrush(color)
                for rect, _, name in self._hits:
                    if name == s.name:
                        p.drawEllipse(rect.center(), 2.6, 2.6)
        p.setPen(QPen(QColor("#90a4ae"), 1))
        p.drawLine(plot.bottomLeft(), plot.bottomRight())
        p.end()

    def _legend(self, p: QPainter, fm: QFontMetricsF) -> int:
        x, y, rows = 10.0, 26.0, 1
        for s in self.series:
            w = 16 + fm.horizontalAdvance(s.name) + 14
            if x + w > self.width() - 10 and x > 10:
                x, y, rows = 10.0, y + 16, rows + 1
            p.fillRect(QRectF(x, y + 4, 10, 10), QColor(s.color))
            p.setPen(QColor("#37474f"))
            p.drawText(QRectF(x + 14, y, w, 18), Qt.AlignmentFlag.AlignVCenter, s.name)
            x += w
        return rows

    # --- interaction ------------------------------------------------------------------------

    def hit(self, pos: QPointF) -> tuple[str, str] | None:
        for rect, category, name in self._hits:
            if rect.contains(pos):
                return category, name
        return None

    def mouseMoveEvent(self, event) -> None:
        pos = event.position()
        if not self._plot.contains(pos) or not self.categories:
            QToolTip.hideText()
            return
        i = int((pos.x() - self._plot.left()) / (self._plot.width() / len(self.categories)))
        if not 0 <= i < len(self.categories):
            return
        lines = [f"<b>{self.categories[i]}</b>"]
        total = 0.0
        for s in self.series:
            v = s.values[i]
            lines.append(f"<span style='color:{s.color}'>■</span> {s.name}: "
                         f"{'–' if v is None else f'{v:,.2f}'} {self.unit}")
            total += v or 0
        if self.mode == BARS and len(self.series) > 1:
            lines.append(f"total: {total:,.2f} {self.unit}")
        hit = self.hit(pos)
        if hit:
            lines.append("<i>click to drill down</i>")
        QToolTip.showText(event.globalPosition().toPoint(), "<br>".join(lines), self)

    def mousePressEvent(self, event) -> None:
        hit = self.hit(event.position())
        if hit is not None and event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(*hit)


def chart_icon():
    """A small bar chart (the KPIs tab)."""
    from PySide6.QtGui import QIcon, QPixmap

    pixmap = QPixmap(32, 32)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    for i, (h, color) in enumerate(((12, "#1565c0"), (20, "#2e7d32"), (16, "#ef6c00"), (25, "#1565c0"))):
        p.fillRect(QRectF(4 + i * 6.5, 28 - h, 5, h), QColor(color))
    p.setPen(QPen(QColor("#455a64"), 2))
    p.drawLine(QPointF(2, 29), QPointF(30, 29))
    p.end()
    return QIcon(pixmap)
