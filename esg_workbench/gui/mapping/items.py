"""The canvas's graphics items. They only draw the model (orange-canvas-core's
`canvas/items/`): a source table node with one row per column (a port on its right,
the value type shown), an ESG entity node with one row per field (a port on its left,
required fields marked), and an edge per mapping edge with its transforms on a badge.

Items hold names and ids, never model objects, so an undo can replace the model's
objects without leaving items pointing at stale ones.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPainterPathStroker, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QStyleOptionGraphicsItem

ROW_H = 22.0
HEADER_H = 40.0
PORT_R = 5.0
SOURCE_W = 250.0  # the narrowest source node; wider when its column names need it
MAX_SOURCE_W = 440.0
ENTITY_W = 290.0

INK = QColor("#263238")
MUTED = QColor("#78909c")
BORDER = QColor("#b0bec5")
SELECTED = QColor("#1565c0")
SELECTED_BG = QColor("#d6e8fb")
ERROR = QColor("#c62828")
ERROR_BG = QColor("#ffebee")
WARN = QColor("#ef6c00")
WARN_BG = QColor("#fff3e0")
OK = QColor("#2e7d32")
CANDIDATE_BG = QColor("#edf7ed")
HOVER_BG = QColor("#c8e6c9")
REPLACE = QColor("#f57c00")
SOURCE_HEAD = QColor("#e3f2fd")
ENTITY_HEAD = QColor("#e8f5e9")

# row states while a column is dragged
NORMAL, GREYED, CANDIDATE, REPLACEABLE, HOVERED = "normal", "greyed", "candidate", "replaceable", "hovered"


def _font(size: float = 9.0, bold: bool = False) -> QFont:
    font = QFont()
    font.setPointSizeF(size)
    font.setBold(bold)
    return font


def _elide(text: str, font: QFont, width: float) -> str:
    return QFontMetricsF(font).elidedText(text, Qt.TextElideMode.ElideRight, width)


class PortRow(QGraphicsItem):
    """One row of a node: a column of a source table or a field of an entity."""

    side = "right"

    def __init__(self, node: "NodeItem", name: str, width: float):
        super().__init__(node)
        self.node = node
        self.name = name
        self.width = width
        self.mapped = False
        self.problem: str | None = None  # "error" | "warning"
        self.problem_text = ""
        self.drag_state = NORMAL
        self.hovered = False
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self.setAcceptHoverEvents(True)

    @property
    def table_id(self) -> str:
        return self.node.table_id

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self.width, ROW_H)

    def port_pos(self) -> QPointF:
        """The port's centre in scene coordinates."""
        x = self.width if self.side == "right" else 0.0
        return self.mapToScene(QPointF(x, ROW_H / 2))

    def set_problem(self, severity: str | None, text: str = "") -> None:
        if (severity, text) != (self.problem, self.problem_text):
            self.problem, self.problem_text = severity, text
            self.update()

    def set_mapped(self, mapped: bool) -> None:
        if mapped != self.mapped:
            self.mapped = mapped
            self.update()

    def set_drag_state(self, state: str) -> None:
        if state != self.drag_state:
            self.drag_state = state
            self.update()

    def hoverEnterEvent(self, event) -> None:
        self.hovered = True
        self.update()
        super().hoverEnterEvent(event)

    def hoverLeaveEvent(self, event) -> None:
        self.hovered = False
        self.update()
        super().hoverLeaveEvent(event)

    def itemChange(self, change, value):
        if change == QGraphicsItem.GraphicsItemChange.ItemSelectedHasChanged:
            self.update()
        return super().itemChange(change, value)

    # --- painting -------------------------------------------------------------------------

    def _background(self) -> QColor | None:
        if self.isSelected():
            return SELECTED_BG
        if self.drag_state == HOVERED:
            return HOVER_BG
        if self.drag_state in (CANDIDATE, REPLACEABLE):
            return CANDIDATE_BG
        if self.problem == "error":
            return ERROR_BG
        if self.problem == "warning":
            return WARN_BG
        if self.hovered:
            return QColor("#f5f7f8")
        return None

    def _port_colors(self) -> tuple[QColor, QColor]:
        """(ring, fill) of the port."""
        if self.drag_state in (CANDIDATE, HOVERED):
            return OK, (OK if self.drag_state == HOVERED else QColor("white"))
        if self.drag_state == REPLACEABLE:
            return REPLACE, QColor("white")
        if self.problem == "error":
            return ERROR, (ERROR if self.mapped else QColor("white"))
        fill = self._mapped_color() if self.mapped else QColor("white")
        return QColor("#78909c"), fill

    def _mapped_color(self) -> QColor:
        return QColor("#546e7a")

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        painter.save()
        if self.drag_state == GREYED:
            painter.setOpacity(0.28)
        rect = self.boundingRect()
        bg = self._background()
        if bg is not None:
            painter.fillRect(rect.adjusted(1, 0, -1, 0), bg)
        if self.isSelected():
            painter.setPen(QPen(SELECTED, 1.4))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(rect.adjusted(1.5, 0.5, -1.5, -0.5))
        self.paint_text(painter, rect)
        ring, fill = self._port_colors()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(ring, 1.6))
        painter.setBrush(QBrush(fill))
        x = rect.right() if self.side == "right" else rect.left()
        painter.drawEllipse(QPointF(x, rect.center().y()), PORT_R, PORT_R)
        painter.restore()

    def paint_text(self, painter: QPainter, rect: QRectF) -> None:
        raise NotImplementedError


def source_width(columns: dict[str, str | None]) -> float:
    """A source node wide enough that its column names show whole at 100 % (up to
    MAX_SOURCE_W; longer names are elided, the whole name in the tooltip)."""
    names, types = QFontMetricsF(_font(9)), QFontMetricsF(_font(8))
    need = max((names.horizontalAdvance(name) + types.horizontalAdvance(vtype or "missing")
                for name, vtype in columns.items()), default=0.0)
    return max(SOURCE_W, min(MAX_SOURCE_W, 26 + need + 20 + 12 + 4))  # key mark, gaps, port


class ColumnItem(PortRow):
    """A column of a source table; drag it onto a field."""

    side = "right"

    def __init__(self, node: "NodeItem", name: str, value_type: str | None, width: float, is_key: bool = False):
        super().__init__(node, name, width)
        self.value_type = value_type  # None: the column is not in the landed table
        self.is_key = is_key
        self.dragging = False
        self.setCursor(Qt.CursorShape.OpenHandCursor if value_type else Qt.CursorShape.ForbiddenCursor)
        self.setToolTip(self._tip())

    def _tip(self) -> str:
        if self.value_type is None:
            return (f"{self.name}: not in the landed table any more (dropped or renamed in the source). "
                    "Re-map the fields it fed.")
        key = " · primary key" if self.is_key else ""
        return f"{self.name} ({self.value_type}{key})\nDrag onto an ESG field to map it."

    def _background(self) -> QColor | None:
        if self.dragging:
            return QColor("#e1f0fe")
        return super()._background()

    def _port_colors(self) -> tuple[QColor, QColor]:
        if self.dragging:
            return SELECTED, SELECTED
        return super()._port_colors()

    def paint_text(self, painter: QPainter, rect: QRectF) -> None:
        x = 10.0
        missing = self.value_type is None
        if self.is_key:
            painter.setPen(QPen(QColor("#b8860b"), 1.4))
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            cy = rect.center().y()
            painter.drawEllipse(QPointF(x + 3, cy), 3, 3)
            painter.drawLine(QPointF(x + 6, cy), QPointF(x + 12, cy))
            painter.drawLine(QPointF(x + 10, cy), QPointF(x + 10, cy + 3))
        x += 16
        type_font = _font(8)
        type_text = "missing" if missing else (self.value_type or "")
        type_w = QFontMetricsF(type_font).horizontalAdvance(type_text)
        name_font = _font(9)
        name_font.setStrikeOut(missing)
        painter.setFont(name_font)
        painter.setPen(ERROR if (missing or self.problem == "error") else INK)
        name_rect = QRectF(x, rect.top(), rect.width() - x - type_w - 20, rect.height())
        painter.drawText(name_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                         _elide(self.name, name_font, name_rect.width()))
        painter.setFont(type_font)
        painter.setPen(ERROR if missing else MUTED)
        painter.drawText(QRectF(rect.right() - type_w - 12, rect.top(), type_w, rect.height()),
                         Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, type_text)


class FieldItem(PortRow):
    """A field of an ESG entity; drop a column on it."""

    side = "left"

    def __init__(self, node: "NodeItem", fdef, width: float):
        super().__init__(node, fdef.name, width)
        self.fdef = fdef
        self.refusal = ""  # why the dragged column cannot go here
        self.setToolTip(self._tip())

    def _tip(self) -> str:
        f = self.fdef
        lines = [f"{f.label} ({f.name})", f"{'Required · ' if f.required else ''}{f.type}, role {f.role}"]
        if f.allowed_dimensions:
            lines.append(f"{' or '.join(f.allowed_dimensions)}, normalized to {f.unit or ', '.join(f.units.values())}")
        if f.vocabulary:
            lines.append(f"values from the '{f.vocabulary}' vocabulary")
        if f.description:
            lines.append(f.description)
        return "\n".join(lines)

    def _mapped_color(self) -> QColor:
        return OK

    def badge(self) -> str:
        f = self.fdef
        if f.role == "measure":
            return f.unit or "/".join(dict.fromkeys(f.units.values())) or f.type
        return f.type

    def paint_text(self, painter: QPainter, rect: QRectF) -> None:
        x = 14.0
        if self.fdef.required:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(ERROR if not self.mapped else QColor("#e57373"))
            painter.drawEllipse(QPointF(x + 2, rect.center().y()), 2.6, 2.6)
        x += 10
        badge_font = _font(8)
        badge = self.badge()
        badge_w = QFontMetricsF(badge_font).horizontalAdvance(badge)
        name_font = _font(9, bold=self.fdef.required)
        painter.setFont(name_font)
        painter.setPen(ERROR if self.problem == "error" else INK)
        name_rect = QRectF(x, rect.top(), rect.width() - x - badge_w - 16, rect.height())
        painter.drawText(name_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                         _elide(self.fdef.name, name_font, name_rect.width()))
        painter.setFont(badge_font)
        painter.setPen(MUTED)
        painter.drawText(QRectF(rect.right() - badge_w - 8, rect.top(), badge_w, rect.height()),
                         Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, badge)


class NodeItem(QGraphicsItem):
    """A box with a header (title, subtitle) and rows."""

    head_color = SOURCE_HEAD

    def __init__(self, table_id: str, title: str, subtitle: str, width: float):
        super().__init__()
        self.table_id = table_id
        self.title = title
        self.subtitle = subtitle
        self.width = width
        self.rows: dict[str, PortRow] = {}
        self.problem: str | None = None
        self.problem_text = ""
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self.setZValue(1)

    def add_row(self, row: PortRow) -> PortRow:
        row.setPos(0, HEADER_H + ROW_H * len(self.rows))
        self.rows[row.name] = row
        return row

    @property
    def height(self) -> float:
        return HEADER_H + ROW_H * max(1, len(self.rows)) + 6

    def boundingRect(self) -> QRectF:
        return QRectF(-1, -1, self.width + 2, self.height + 2)

    def header_rect(self) -> QRectF:
        return QRectF(0, 0, self.width, HEADER_H)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRect(self.header_rect())  # rows select themselves; the header selects the node
        return path

    def set_problem(self, severity: str | None, text: str = "") -> None:
        if (severity, text) != (self.problem, self.problem_text):
            self.problem, self.problem_text = severity, text
            self.update()

    def itemChange(self, change, value):
        if change == QGraphicsItem.GraphicsItemChange.ItemSelectedHasChanged:
            self.update()
        return super().itemChange(change, value)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(0, 0, self.width, self.height)
        border = SELECTED if self.isSelected() else ERROR if self.problem == "error" else BORDER
        painter.setPen(QPen(border, 2.0 if self.isSelected() or self.problem == "error" else 1.0))
        painter.setBrush(QColor("white"))
        painter.drawRoundedRect(rect, 6, 6)
        head = QPainterPath()
        head.addRoundedRect(QRectF(0.5, 0.5, self.width - 1, HEADER_H), 6, 6)
        head.addRect(QRectF(0.5, HEADER_H - 8, self.width - 1, 8))
        painter.fillPath(head.simplified(), ERROR_BG if self.problem == "error" else self.head_color)
        painter.setPen(QPen(BORDER, 1))
        painter.drawLine(QPointF(0.5, HEADER_H), QPointF(self.width - 0.5, HEADER_H))
        title_font = _font(10, bold=True)
        painter.setFont(title_font)
        painter.setPen(INK)
        painter.drawText(QRectF(12, 4, self.width - 24, 18), Qt.AlignmentFlag.AlignVCenter,
                         _elide(self.title, title_font, self.width - 24))
        sub_font = _font(8)
        painter.setFont(sub_font)
        painter.setPen(ERROR if self.problem == "error" else MUTED)
        painter.drawText(QRectF(12, 21, self.width - 24, 15), Qt.AlignmentFlag.AlignVCenter,
                         _elide(self.subtitle, sub_font, self.width - 24))
        if not self.rows:
            painter.setPen(MUTED)
            painter.drawText(QRectF(12, HEADER_H, self.width - 24, ROW_H), Qt.AlignmentFlag.AlignVCenter,
                             "no columns")
        painter.restore()


class SourceNode(NodeItem):
    head_color = SOURCE_HEAD

    @property
    def columns(self) -> dict[str, ColumnItem]:
        return self.rows  # type: ignore[return-value]


class EntityNode(NodeItem):
    head_color = ENTITY_HEAD

    @property
    def fields(self) -> dict[str, FieldItem]:
        return self.rows  # type: ignore[return-value]


class EdgeItem(QGraphicsPathItem):
    """A mapping edge: a curve from a column's port (or a constant's tag) to a field's
    port, with a badge naming its transforms. Click it to edit the transforms."""

    LABEL_W = 150.0

    def __init__(self, table_id: str, edge_id: str):
        super().__init__()
        self.table_id = table_id
        self.edge_id = edge_id
        self.label = ""
        self.tag = ""  # the constant, for an edge without a source column
        self.problem: str | None = None
        self.problem_text = ""
        self.hovered = False
        self.start = QPointF()
        self.end = QPointF()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setZValue(2)

    def set_geometry(self, start: QPointF, end: QPointF, label: str, tag: str = "") -> None:
        self.prepareGeometryChange()
        self.start, self.end, self.label, self.tag = QPointF(start), QPointF(end), label, tag
        path = QPainterPath(start)
        dx = max(60.0, (end.x() - start.x()) * 0.5)
        path.cubicTo(QPointF(start.x() + dx, start.y()), QPointF(end.x() - dx, end.y()), end)
        self.setPath(path)
        self.update()

    def set_problem(self, severity: str | None, text: str = "") -> None:
        if (severity, text) != (self.problem, self.problem_text):
            self.problem, self.problem_text = severity, text
            self.setToolTip(text)
            self.update()

    def _label_rect(self) -> QRectF | None:
        if not self.label:
            return None
        w = min(self.LABEL_W, QFontMetricsF(_font(8)).horizontalAdvance(self.label) + 12)
        return QRectF(self.end.x() - 16 - w, self.end.y() - 8, w, 16)

    def _tag_rect(self) -> QRectF | None:
        if not self.tag:
            return None
        w = min(self.LABEL_W, QFontMetricsF(_font(8)).horizontalAdvance(self.tag) + 14)
        return QRectF(self.start.x() - w, self.start.y() - 9, w, 18)

    def boundingRect(self) -> QRectF:
        rect = super().boundingRect().adjusted(-4, -4, 4, 4)
        for extra in (self._label_rect(), self._tag_rect()):
            if extra is not None:
                rect = rect.united(extra.adjusted(-2, -2, 2, 2))
        return rect

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(10)
        shape = stroker.createStroke(self.path())
        for extra in (self._label_rect(), self._tag_rect()):
            if extra is not None:
                shape.addRect(extra)
        return shape

    def hoverEnterEvent(self, event) -> None:
        self.hovered = True
        self.update()

    def hoverLeaveEvent(self, event) -> None:
        self.hovered = False
        self.update()

    def itemChange(self, change, value):
        if change == QGraphicsItem.GraphicsItemChange.ItemSelectedHasChanged:
            self.setZValue(3 if value else 2)
            self.update()
        return super().itemChange(change, value)

    def color(self) -> QColor:
        if self.isSelected():
            return SELECTED
        if self.problem == "error":
            return ERROR
        if self.problem == "warning":
            return WARN
        return QColor("#455a64") if self.hovered else QColor("#8fa3ad")

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        color = self.color()
        width = 2.6 if self.isSelected() else 2.0 if (self.hovered or self.problem) else 1.5
        painter.setPen(QPen(color, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path())
        font = _font(8)
        painter.setFont(font)
        tag = self._tag_rect()
        if tag is not None:
            painter.setPen(QPen(color, 1.2))
            painter.setBrush(QColor("#fffde7"))
            painter.drawRoundedRect(tag, 9, 9)
            painter.setPen(INK)
            painter.drawText(tag, Qt.AlignmentFlag.AlignCenter, _elide(self.tag, font, tag.width() - 10))
        label = self._label_rect()
        if label is not None:
            painter.setPen(QPen(color, 1.0))
            painter.setBrush(QColor("#e3f2fd") if self.isSelected() else QColor("white"))
            painter.drawRoundedRect(label, 3, 3)
            painter.setPen(SELECTED if self.isSelected() else QColor("#37474f"))
            painter.drawText(label, Qt.AlignmentFlag.AlignCenter, _elide(self.label, font, label.width() - 8))
        painter.restore()


def transforms_label(transforms) -> str:
    """The badge on an edge: its transforms in order, short."""
    parts = []
    for t in transforms:
        if t.kind == "constant":
            continue
        if t.kind == "lookup":
            parts.append(f"→ {t.value_column}")
        elif t.kind == "value_map":
            parts.append(f"map {len(t.mapping)}")
        elif t.kind == "expression":
            parts.append("ƒ " + t.text)
        else:
            parts.append(t.describe())
    return " · ".join(parts)


def constant_tag(transforms) -> str:
    for t in transforms:
        if t.kind == "constant":
            return f"= {t.value}"
        if t.kind == "expression":
            return "ƒ"
    return "?"
