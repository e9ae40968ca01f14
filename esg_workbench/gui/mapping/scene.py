"""The canvas scene: draws the document and follows its signals (orange-canvas-core's
`CanvasScene`, whose `add_node` is connected to `scheme.node_added`).

One row per table mapping: the source table on the left, the ESG entity on the right,
the edges between them. Mouse presses on a column start a NewEdgeInteraction (a small
state object, interactions.py); everything else is Qt's own selection handling. The
scene never edits the model itself: gestures call the document, whose commands change
the model, whose changes come back here as signals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsScene, QGraphicsSimpleTextItem

from esg_workbench.gui.mapping import items as it
from esg_workbench.gui.mapping.document import MappingDocument
from esg_workbench.gui.mapping.interactions import NewEdgeInteraction, ProposalPreview
from esg_workbench.mapping.errors import MappingError

SOURCE_X = 0.0
EDGE_SPAN = 320.0  # room between the source and entity nodes for the edges and their labels
ROW_GAP = 46.0
LABEL_H = 24.0


@dataclass
class TableRow:
    table_id: str
    label: QGraphicsSimpleTextItem
    source: it.SourceNode
    entity: it.EntityNode
    edges: dict[str, it.EdgeItem] = field(default_factory=dict)
    top: float = 0.0

    @property
    def height(self) -> float:
        return LABEL_H + max(self.source.height, self.entity.height)


class MappingScene(QGraphicsScene):
    edge_activated = Signal(str, str)  # table_id, edge_id: double-click on an edge
    hint = Signal(str)  # what the user is dragging onto (and why a field is greyed)
    focus_item = Signal(object)  # an item to bring into view
    current_table_changed = Signal(str)  # the table of the selected item
    map_requested = Signal(str, str)  # table_id, column: Enter on a selected column (map it by keyboard)

    def __init__(self, document: MappingDocument, parent=None):
        super().__init__(parent)
        self.document = document
        self.rows: dict[str, TableRow] = {}
        self.interaction: NewEdgeInteraction | None = None
        self.proposals: ProposalPreview | None = None
        self._empty: QGraphicsSimpleTextItem | None = None
        self.setBackgroundBrush(QColor("#fafbfc"))
        document.reset.connect(self.rebuild)
        document.table_added.connect(self._table_added)
        document.table_removed.connect(self._table_removed)
        document.table_changed.connect(self._table_changed)
        document.edge_added.connect(self._edge_added)
        document.edge_removed.connect(self._edge_removed)
        document.edge_changed.connect(self._edge_changed)
        document.problems_changed.connect(self.show_problems)
        self.selectionChanged.connect(self._selection_changed)
        self._current_table: str | None = None

    # --- building -------------------------------------------------------------------------

    def rebuild(self) -> None:
        self.cancel_interaction()
        self.clear_proposals()
        self.clear()
        self.rows = {}
        self._empty = None
        mapping = self.document.mapping
        if mapping is not None:
            for table in mapping.tables:
                self._build_row(table.id)
        self.relayout()
        self.show_problems(self.document.problems)

    def _build_row(self, table_id: str) -> TableRow:
        doc = self.document
        table = doc.mapping.table(table_id)
        columns = doc.columns_of(table)
        keys = set(doc.keys_of(table))
        entity = doc.catalog.entity(table.entity)
        if columns is None:
            subtitle = "not landed in the workspace: sync it first"
        else:
            subtitle = f"source table · {len(columns)} columns" + (f" · key {', '.join(sorted(keys))}" if keys else "")
        shown = dict(columns or {})
        for edge in table.edges:  # columns the mapping uses that the landed table lacks (drift)
            if edge.source and edge.source not in shown:
                shown[edge.source] = None
        width = it.source_width(shown)
        source = it.SourceNode(table_id, table.stream, subtitle, width)
        for name, vtype in shown.items():
            source.add_row(it.ColumnItem(source, name, vtype, width, is_key=name in keys))
        required = len(entity.required_fields) if entity else 0
        ent = it.EntityNode(table_id, entity.label if entity else table.entity,
                            f"ESG entity {table.entity} · {required} required" if entity else "not in the catalog",
                            it.ENTITY_W)
        for fdef in entity.fields if entity else ():
            ent.add_row(it.FieldItem(ent, fdef, it.ENTITY_W))
        label = QGraphicsSimpleTextItem(self._label_text(table))
        font = QFont()
        font.setPointSizeF(9.5)
        font.setBold(True)
        label.setFont(font)
        label.setBrush(QColor("#546e7a"))
        for item in (label, source, ent):
            self.addItem(item)
        row = TableRow(table_id, label, source, ent)
        self.rows[table_id] = row
        for edge in table.edges:
            self._add_edge_item(row, edge.id)
        return row

    @staticmethod
    def _label_text(table) -> str:
        return f"{table.label or table.stream}   ({table.stream} → {table.entity})"

    def _add_edge_item(self, row: TableRow, edge_id: str) -> it.EdgeItem:
        item = it.EdgeItem(row.table_id, edge_id)
        self.addItem(item)
        row.edges[edge_id] = item
        return item

    def relayout(self) -> None:
        y = 0.0
        mapping = self.document.mapping
        order = [t.id for t in mapping.tables] if mapping else []
        # one column of entity nodes, right of the widest source node
        entity_x = SOURCE_X + max([self.rows[t].source.width for t in order if t in self.rows] or [it.SOURCE_W]) \
            + EDGE_SPAN
        for table_id in order:
            row = self.rows.get(table_id)
            if row is None:
                continue
            row.top = y
            row.label.setPos(SOURCE_X, y)
            row.source.setPos(SOURCE_X, y + LABEL_H)
            row.entity.setPos(entity_x, y + LABEL_H)
            for edge_id in row.edges:
                self._update_edge(row, edge_id)
            self._update_mapped(row)
            y += row.height + ROW_GAP
        if not order:
            self._show_empty()
        elif self._empty is not None:
            self.removeItem(self._empty)
            self._empty = None
        width = entity_x + it.ENTITY_W
        self.setSceneRect(QRectF(-60, -40, width + 120, max(y, 200) + 40))

    def _show_empty(self) -> None:
        if self._empty is None:
            text = ("No table mappings yet.\nAdd a table (a landed source table and the ESG entity it feeds),\n"
                    "then drag its columns onto the entity's fields." if self.document.mapping is not None else
                    "No mapping open.\nCreate one with New mapping…, or load the sample data.")
            self._empty = QGraphicsSimpleTextItem(text)
            self._empty.setBrush(QColor("#78909c"))
            font = QFont()
            font.setPointSizeF(11)
            self._empty.setFont(font)
            self.addItem(self._empty)
            self._empty.setPos(40, 40)

    def _update_edge(self, row: TableRow, edge_id: str) -> None:
        table = self.document.mapping.table(row.table_id)
        edge = table.edge(edge_id)
        item = row.edges.get(edge_id)
        if edge is None or item is None:
            return
        field = row.entity.fields.get(edge.target)
        end = field.port_pos() if field else row.entity.mapToScene(QPointF(0, it.HEADER_H / 2))
        column = row.source.columns.get(edge.source) if edge.source else None
        if column is not None:
            start, tag = column.port_pos(), ""
        else:
            start, tag = end - QPointF(150, 0), it.constant_tag(edge.transforms)
        item.set_geometry(start, end, it.transforms_label(edge.transforms), tag)

    def _update_mapped(self, row: TableRow) -> None:
        table = self.document.mapping.table(row.table_id)
        targets = {e.target for e in table.edges}
        sources = {e.source for e in table.edges if e.source}
        for name, f in row.entity.fields.items():
            f.set_mapped(name in targets)
        for name, c in row.source.columns.items():
            c.set_mapped(name in sources)

    # --- following the document --------------------------------------------------------------

    def _table_added(self, table_id: str) -> None:
        self._build_row(table_id)
        self.relayout()
        self.focus_item.emit(self.rows[table_id].entity)

    def _table_removed(self, table_id: str) -> None:
        row = self.rows.pop(table_id, None)
        if row is None:
            return
        for item in (row.label, row.source, row.entity, *row.edges.values()):
            self.removeItem(item)
        self.relayout()

    def _table_changed(self, table_id: str, attribute: str) -> None:
        if attribute == "label":
            self.rows[table_id].label.setText(self._label_text(self.document.mapping.table(table_id)))
            return
        selected = self._selected_keys()
        self._table_removed(table_id)
        self._build_row(table_id)
        self.relayout()
        self._restore_selection(selected)

    def _edge_added(self, table_id: str, edge_id: str) -> None:
        row = self.rows[table_id]
        edge = self.document.mapping.table(table_id).edge(edge_id)
        if edge.source and edge.source not in row.source.columns:
            self._table_changed(table_id, "edges")  # a missing column needs its row
            return
        self._add_edge_item(row, edge_id)
        self._update_edge(row, edge_id)
        self._update_mapped(row)

    def _edge_removed(self, table_id: str, edge_id: str) -> None:
        row = self.rows.get(table_id)
        if row is None:
            return
        item = row.edges.pop(edge_id, None)
        if item is not None:
            self.removeItem(item)
        used = {e.source for e in self.document.mapping.table(table_id).edges}
        if any(c.value_type is None and name not in used for name, c in row.source.columns.items()):
            self._table_changed(table_id, "edges")  # a missing column nothing uses any more goes away
            return
        self._update_mapped(row)

    def _edge_changed(self, table_id: str, edge_id: str, attribute: str) -> None:
        row = self.rows[table_id]
        edge = self.document.mapping.table(table_id).edge(edge_id)
        if attribute == "source" and edge.source and edge.source not in row.source.columns:
            self._table_changed(table_id, "edges")
            return
        self._update_edge(row, edge_id)
        self._update_mapped(row)

    # --- problems ------------------------------------------------------------------------------

    def show_problems(self, problems: list[MappingError]) -> None:
        for row in self.rows.values():
            row.source.set_problem(None)
            row.entity.set_problem(None)
            for item in (*row.source.rows.values(), *row.entity.rows.values(), *row.edges.values()):
                item.set_problem(None)
        for p in sorted(problems, key=lambda p: p.severity == "error"):  # errors win over warnings
            for item in self.items_of(p):
                item.set_problem(p.severity, p.message)

    def items_of(self, problem: MappingError) -> list[QGraphicsItem]:
        """The items a problem names, most specific first."""
        row = self.rows.get(problem.table_id or "")
        if row is None:
            return []
        found: list[QGraphicsItem] = []
        if problem.edge_id and problem.edge_id in row.edges:
            found.append(row.edges[problem.edge_id])
        if problem.field and problem.field in row.entity.fields and not problem.edge_id:
            found.append(row.entity.fields[problem.field])
        if problem.column and problem.column in row.source.columns:
            found.append(row.source.columns[problem.column])
        if not found:
            found.append(row.entity if problem.kind not in ("UnknownStream", "MissingKey") else row.source)
        return found

    def select_problem(self, problem: MappingError) -> QGraphicsItem | None:
        """Select (and bring into view) the item a validation message names."""
        found = self.items_of(problem)
        if not found:
            return None
        self.select_item(found[0])
        return found[0]

    def select_item(self, item: QGraphicsItem) -> None:
        self.clearSelection()
        item.setSelected(True)
        self.focus_item.emit(item)

    # --- lookups --------------------------------------------------------------------------------

    def edge_item(self, edge_id: str) -> it.EdgeItem | None:
        for row in self.rows.values():
            if edge_id in row.edges:
                return row.edges[edge_id]
        return None

    def column_item(self, table_id: str, column: str) -> it.ColumnItem | None:
        row = self.rows.get(table_id)
        return row.source.columns.get(column) if row else None

    def field_item(self, table_id: str, field: str) -> it.FieldItem | None:
        row = self.rows.get(table_id)
        return row.entity.fields.get(field) if row else None

    def all_fields(self) -> list[it.FieldItem]:
        return [f for row in self.rows.values() for f in row.entity.fields.values()]

    def item_at_of(self, pos: QPointF, kind: type) -> QGraphicsItem | None:
        for item in self.items(pos):
            if isinstance(item, kind):
                return item
        return None

    def selected_edges(self) -> list[it.EdgeItem]:
        return [i for i in self.selectedItems() if isinstance(i, it.EdgeItem)]

    def selected_tables(self) -> list[str]:
        return [i.table_id for i in self.selectedItems() if isinstance(i, it.NodeItem)]

    def current_table(self) -> str | None:
        if self._current_table and self._current_table in self.rows:
            return self._current_table
        return next(iter(self.rows), None)

    def _selection_changed(self) -> None:
        for item in self.selectedItems():
            table_id = getattr(item, "table_id", None)
            if table_id and table_id != self._current_table:
                self._current_table = table_id
                self.current_table_changed.emit(table_id)
            break

    def _selected_keys(self) -> list[tuple]:
        keys = []
        for item in self.selectedItems():
            if isinstance(item, it.EdgeItem):
                keys.append(("edge", item.table_id, item.edge_id))
            elif isinstance(item, it.NodeItem):
                keys.append(("node", item.table_id, "source" if isinstance(item, it.SourceNode) else "entity"))
            elif isinstance(item, it.PortRow):
                keys.append((type(item).__name__, item.table_id, item.name))
        return keys

    def _restore_selection(self, keys: list[tuple]) -> None:
        for kind, table_id, name in keys:
            row = self.rows.get(table_id)
            if kind == "node":
                item = None if row is None else row.source if name == "source" else row.entity
            else:
                item = (self.edge_item(name) if kind == "edge" else self.column_item(table_id, name)
                        if kind == "ColumnItem" else self.field_item(table_id, name))
            if item is not None:
                item.setSelected(True)

    # --- interactions ------------------------------------------------------------------------

    def start_edge_drag(self, column: it.ColumnItem, pos: QPointF) -> NewEdgeInteraction | None:
        """Begin dragging a column (what a mouse press on a column does)."""
        if column.value_type is None or self.document.mapping is None:
            return None
        self.cancel_interaction()
        self.interaction = NewEdgeInteraction(self, column, pos)
        return self.interaction

    def cancel_interaction(self) -> None:
        if self.interaction is not None:
            self.interaction.cancel()
            self.interaction = None

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.interaction is None:
            column = self.item_at_of(event.scenePos(), it.ColumnItem)
            if column is not None and column.value_type is not None:
                self.start_edge_drag(column, event.scenePos())
                event.accept()
                return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self.interaction is not None:
            self.interaction.move(event.scenePos())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if self.interaction is not None and event.button() == Qt.MouseButton.LeftButton:
            interaction, self.interaction = self.interaction, None
            interaction.release(event.scenePos())
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:
        edge = self.item_at_of(event.scenePos(), it.EdgeItem)
        if edge is not None:
            self.edge_activated.emit(edge.table_id, edge.edge_id)
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def step_column(self, step: int) -> it.ColumnItem | None:
        """Select the next (+1) or previous (-1) source column, across tables; the first
        column when none is selected. The keyboard's way onto the canvas."""
        columns = [c for row in self.rows.values() for c in row.source.columns.values()]
        if not columns:
            return None
        selected = [i for i in self.selectedItems() if isinstance(i, it.ColumnItem)]
        at = columns.index(selected[0]) + step if selected and selected[0] in columns else 0
        column = columns[max(0, min(len(columns) - 1, at))]
        self.select_item(column)
        return column

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Up, Qt.Key.Key_Down) and self.interaction is None:
            self.step_column(1 if event.key() == Qt.Key.Key_Down else -1)
            event.accept()
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.interaction is None:
            columns = [i for i in self.selectedItems() if isinstance(i, it.ColumnItem)]
            if len(columns) == 1:
                self.map_requested.emit(columns[0].table_id, columns[0].name)
                event.accept()
                return
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self.interaction is None:
            if self.delete_selected():
                event.accept()
                return
        if event.key() == Qt.Key.Key_Escape:
            if self.interaction is not None:
                self.cancel_interaction()
            else:
                self.clearSelection()
            event.accept()
            return
        super().keyPressEvent(event)

    def delete_selected(self) -> bool:
        """Delete the selected edges (or, with no edge selected, the selected table
        mappings): one undo step."""
        edges = [(e.table_id, e.edge_id) for e in self.selected_edges()]
        if edges:
            self.document.remove_edges(edges)
            return True
        tables = self.selected_tables()
        if tables:
            self.document.remove_tables(tables)
            return True
        return False

    # --- auto-map proposals ------------------------------------------------------------------

    def show_proposals(self, proposals) -> None:
        self.clear_proposals()
        self.proposals = ProposalPreview(self, proposals)

    def clear_proposals(self) -> None:
        if self.proposals is not None:
            self.proposals.remove()
            self.proposals = None


def dashed(color: str, width: float = 1.6) -> QPen:
    pen = QPen(QColor(color), width, Qt.PenStyle.DashLine)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    return pen
