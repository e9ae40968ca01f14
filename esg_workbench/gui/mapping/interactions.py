"""Interactions: small state objects for one gesture each (orange-canvas-core's
`NewLinkAction`), so the scene's mouse handlers stay a few lines long.

* NewEdgeInteraction: a column is being dragged. The fields it may be dropped on are
  lit (green: free, orange: the drop replaces the field's edge), every other field is
  greyed out; releasing over a lit field asks the document to connect them.
* ProposalPreview: auto-map's proposed edges drawn dashed until the analyst accepts or
  dismisses them.

Mouse events and tests drive the same methods: `scene.start_edge_drag(column, pos)`,
then `move(pos)` and `release(pos)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QLineF, QPointF, Qt
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem

from esg_workbench.gui.mapping import items as it
from esg_workbench.gui.mapping.document import ADD, REPLACE
from esg_workbench.mapping.errors import MappingError
from esg_workbench.mapping.model import Edge, TableMapping, check_edge

if TYPE_CHECKING:
    from esg_workbench.gui.mapping.scene import MappingScene

CLICK_DISTANCE = 4.0


def _pen(color: str, width: float = 1.8, style=Qt.PenStyle.DashLine) -> QPen:
    pen = QPen(QColor(color), width, style)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    return pen


def _curve(start: QPointF, end: QPointF) -> QPainterPath:
    path = QPainterPath(start)
    dx = max(40.0, abs(end.x() - start.x()) * 0.5)
    path.cubicTo(QPointF(start.x() + dx, start.y()), QPointF(end.x() - dx, end.y()), end)
    return path


class NewEdgeInteraction:
    """Dragging a source column towards an entity field."""

    def __init__(self, scene: "MappingScene", column: it.ColumnItem, pos: QPointF):
        self.scene = scene
        self.document = scene.document
        self.column = column
        self.table_id = column.table_id
        self.press_pos = QPointF(pos)
        self.moved = False
        self.hovered: it.FieldItem | None = None
        self.targets = self.document.drop_targets(self.table_id, column.name)
        self.line = QGraphicsPathItem()
        self.line.setPen(_pen("#1565c0"))
        self.line.setZValue(10)
        scene.addItem(self.line)
        column.dragging = True
        column.setCursor(Qt.CursorShape.ClosedHandCursor)
        column.update()
        for field in scene.all_fields():
            if field.table_id != self.table_id or field.name not in self.targets:
                field.set_drag_state(it.GREYED)
            else:
                field.set_drag_state(it.REPLACEABLE if self.targets[field.name] == REPLACE else it.CANDIDATE)
        free = sum(1 for k in self.targets.values() if k == ADD)
        scene.hint.emit(f"Dragging {column.name} ({column.value_type}): drop it on a lit field "
                        f"({free} free, {len(self.targets) - free} to replace); the greyed ones cannot take it.")
        self.move(pos)

    def compatible(self, field: it.FieldItem | None) -> bool:
        return field is not None and field.table_id == self.table_id and field.name in self.targets

    def refusal(self, field: it.FieldItem) -> str:
        """Why the dragged column cannot go onto `field` (for the hint line)."""
        if field.table_id != self.table_id:
            return f"{field.name} belongs to another table mapping; drag from that row's source table."
        table: TableMapping = self.document.mapping.table(self.table_id)
        columns = self.document.columns_of(table) or {}
        probe = Edge(target=field.name, source=self.column.name, source_type=columns.get(self.column.name))
        # the field's own edge would be replaced: the reason is the column, not the duplicate
        without = TableMapping(stream=table.stream, entity=table.entity, id=table.id,
                               edges=[e for e in table.edges if e.target != field.name])
        try:
            check_edge(without, probe, self.document.catalog, columns)
        except MappingError as exc:
            return exc.message
        return f"{self.column.name} is already mapped onto {field.name}."

    def move(self, pos: QPointF) -> None:
        if QLineF(pos, self.press_pos).length() > CLICK_DISTANCE:
            self.moved = True
        field = self.scene.item_at_of(pos, it.FieldItem)
        target = field if self.compatible(field) else None
        end = target.port_pos() if target is not None else pos
        self.line.setPath(_curve(self.column.port_pos(), end))
        if target is not self.hovered:
            if self.hovered is not None:
                kind = self.targets.get(self.hovered.name)
                self.hovered.set_drag_state(it.REPLACEABLE if kind == REPLACE else it.CANDIDATE)
            self.hovered = target
            if target is not None:
                target.set_drag_state(it.HOVERED)
                verb = "replace the edge onto" if self.targets[target.name] == REPLACE else "map it onto"
                self.scene.hint.emit(f"Release to {verb} {target.fdef.label} ({target.name}).")
        if field is not None and target is None and self.moved:
            self.scene.hint.emit(f"Cannot drop {self.column.name} on {field.name}: {self.refusal(field)}")

    def release(self, pos: QPointF) -> Edge | None:
        self.move(pos)
        target = self.hovered
        self._clean_up()
        if target is not None:
            edge = self.document.connect_column(self.table_id, self.column.name, target.name)
            if edge is not None:
                self.scene.hint.emit(f"Mapped {self.column.name} onto {target.name}. Click the edge to edit its "
                                     "transforms; Ctrl+Z undoes.")
                item = self.scene.edge_item(edge.id)
                if item is not None:
                    self.scene.select_item(item)
            return edge
        if not self.moved:  # a click: select the column
            self.scene.clearSelection()
            self.column.setSelected(True)
        self.scene.hint.emit("")
        return None

    def cancel(self) -> None:
        self._clean_up()
        self.scene.hint.emit("")

    def _clean_up(self) -> None:
        if self.line.scene() is not None:
            self.scene.removeItem(self.line)
        self.column.dragging = False
        self.column.setCursor(Qt.CursorShape.OpenHandCursor)
        self.column.update()
        for field in self.scene.all_fields():
            field.set_drag_state(it.NORMAL)


class ProposalPreview:
    """Auto-map's proposals drawn as dashed green curves."""

    def __init__(self, scene: "MappingScene", proposals: list[tuple[str, Edge]]):
        self.scene = scene
        self.items: list[QGraphicsItem] = []
        for table_id, edge in proposals:
            column = scene.column_item(table_id, edge.source) if edge.source else None
            field = scene.field_item(table_id, edge.target)
            if column is None or field is None:
                continue
            item = QGraphicsPathItem(_curve(column.port_pos(), field.port_pos()))
            item.setPen(_pen("#43a047", 2.0, Qt.PenStyle.DashLine))
            item.setZValue(5)
            item.setToolTip(f"Proposed: {edge.source} → {edge.target}")
            scene.addItem(item)
            self.items.append(item)
            field.set_drag_state(it.CANDIDATE)

    def remove(self) -> None:
        for item in self.items:
            if item.scene() is not None:
                self.scene.removeItem(item)
        self.items = []
        for field in self.scene.all_fields():
            field.set_drag_state(it.NORMAL)
