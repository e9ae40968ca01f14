"""The controller of the canvas (orange-canvas-core's `document/`): the mapping being
edited, its undo stack, the columns of the landed tables, and the validation problems.

The model emits, the view follows: the Qt-free `Mapping` notifies its listeners of every
`Change`; this document turns them into Qt signals the scene connects to. Nothing edits
the mapping except through `edit()` (an OperationCommand pushed on the QUndoStack), so
every change can be undone, and "modified" is `not undo_stack.isClean()`.
"""

from __future__ import annotations

import contextlib
import re
from typing import Hashable, Iterator

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from esg_workbench.gui.mapping.commands import OperationCommand
from esg_workbench.gui.mapping.tasks import SourceContext
from esg_workbench.mapping import units
from esg_workbench.mapping.catalog import Catalog, FieldDef, load_catalog
from esg_workbench.mapping.errors import MappingError
from esg_workbench.mapping.model import (
    AddEdge,
    AddTable,
    Change,
    Edge,
    Mapping,
    Operation,
    RemoveEdge,
    RemoveTable,
    SetEdge,
    TableMapping,
    check_edge,
    compatible_fields,
    propose_edges,
    validate,
)
from esg_workbench.mapping.sql import DATE, NUMBER, TIMESTAMP
from esg_workbench.mapping.transforms import Period, Transform, Unit

ADD, REPLACE = "add", "replace"


class MappingDocument(QObject):
    reset = Signal()  # another mapping (or version) was opened: redraw everything
    table_added = Signal(str)  # table_id
    table_removed = Signal(str)
    table_changed = Signal(str, str)  # table_id, attribute
    edge_added = Signal(str, str)  # table_id, edge_id
    edge_removed = Signal(str, str)
    edge_changed = Signal(str, str, str)  # table_id, edge_id, attribute
    mapping_changed = Signal(str)  # attribute
    problems_changed = Signal(list)  # [MappingError]
    modified_changed = Signal(bool)

    def __init__(self, catalog: Catalog | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.catalog = catalog or load_catalog()
        self.mapping: Mapping | None = None
        self.context = SourceContext("")
        self.problems: list[MappingError] = []
        self._unsaved = False
        self.undo_stack = QUndoStack(self)
        self.undo_stack.setUndoLimit(500)
        self.undo_stack.cleanChanged.connect(self._clean_changed)

    # --- the document ---------------------------------------------------------------------

    def set_mapping(self, mapping: Mapping | None, context: SourceContext | None = None, *,
                    modified: bool = False) -> None:
        """Open `mapping` (a fresh undo stack). `modified`: it differs from its stored
        version (an older version opened to be restored, a new mapping)."""
        if self.mapping is not None:
            self.mapping.unsubscribe(self._changed)
        self.mapping = mapping
        self.context = context or SourceContext(mapping.connector if mapping else "")
        self.undo_stack.clear()
        self._unsaved = modified
        if mapping is not None:
            mapping.subscribe(self._changed)
        self.reset.emit()
        self.modified_changed.emit(self.modified)
        self.revalidate()

    def _clean_changed(self, clean: bool) -> None:
        self.modified_changed.emit(self.modified)

    def set_context(self, context: SourceContext) -> None:
        """New columns of the landed tables (after a sync): redraw, revalidate; the edits
        and the undo stack stay."""
        self.context = context
        self.reset.emit()
        self.revalidate()

    @property
    def modified(self) -> bool:
        return self.mapping is not None and (self._unsaved or not self.undo_stack.isClean())

    def mark_saved(self, saved: Mapping) -> None:
        m = self.mapping
        m.version, m.author, m.created_at, m.mapping_id = saved.version, saved.author, saved.created_at, saved.mapping_id
        m.catalog_version = saved.catalog_version
        self._unsaved = False
        self.undo_stack.setClean()
        self.modified_changed.emit(False)

    def columns_of(self, table: TableMapping | str) -> dict[str, str] | None:
        if isinstance(table, str):
            table = self.mapping.table(table)
        return self.context.columns.get(table.stream)

    def keys_of(self, table: TableMapping) -> list[str]:
        return table.key_columns or self.context.keys.get(table.stream) or []

    # --- model -> Qt signals ----------------------------------------------------------------

    def _changed(self, change: Change) -> None:
        kind = change.kind
        if kind == "table_added":
            self.table_added.emit(change.table_id)
        elif kind == "table_removed":
            self.table_removed.emit(change.table_id)
        elif kind == "table_changed":
            self.table_changed.emit(change.table_id, change.attribute or "")
        elif kind == "edge_added":
            self.edge_added.emit(change.table_id, change.edge_id)
        elif kind == "edge_removed":
            self.edge_removed.emit(change.table_id, change.edge_id)
        elif kind == "edge_changed":
            self.edge_changed.emit(change.table_id, change.edge_id, change.attribute or "")
        else:
            self.mapping_changed.emit(change.attribute or "")
        self.revalidate()

    def revalidate(self) -> list[MappingError]:
        if self.mapping is None:
            self.problems = []
        else:
            columns = {s: c for s, c in self.context.columns.items()}
            self.problems = validate(self.mapping, self.catalog, columns, self.context.keys)
        self.problems_changed.emit(self.problems)
        return self.problems

    @property
    def errors(self) -> list[MappingError]:
        return [p for p in self.problems if p.severity == "error"]

    # --- edits (each one a command on the undo stack) -----------------------------------------

    def edit(self, op: Operation, text: str, merge_key: Hashable | None = None) -> None:
        self.undo_stack.push(OperationCommand(self.mapping, op, text, merge_key))

    @contextlib.contextmanager
    def macro(self, text: str) -> Iterator[None]:
        self.undo_stack.beginMacro(text)
        try:
            yield
        finally:
            self.undo_stack.endMacro()

    def drop_targets(self, table_id: str, column: str) -> dict[str, str]:
        """The fields of the table's entity that `column` may be dropped on: ADD for a
        free field, REPLACE for a field whose edge the drop would replace. The others are
        greyed out while dragging."""
        table = self.mapping.table(table_id)
        columns = self.columns_of(table)
        entity = self.catalog.entity(table.entity)
        if columns is None or column not in columns or entity is None:
            return {}
        targets = {name: ADD for name in compatible_fields(table, column, self.catalog, columns)}
        for fdef in entity.fields:
            existing = table.edges_to(fdef.name)
            if fdef.name in targets or not existing or any(e.source == column for e in existing):
                continue
            without = TableMapping(stream=table.stream, entity=table.entity, id=table.id,
                                   edges=[e for e in table.edges if e.target != fdef.name])
            try:
                check_edge(without, Edge(target=fdef.name, source=column, source_type=columns[column]),
                           self.catalog, columns)
            except MappingError:
                continue
            targets[fdef.name] = REPLACE
        return targets

    def connect_column(self, table_id: str, column: str, field: str) -> Edge | None:
        """Map `column` onto `field` (replacing the field's edge); None when refused."""
        kind = self.drop_targets(table_id, column).get(field)
        if kind is None:
            return None
        table = self.mapping.table(table_id)
        columns = self.columns_of(table)
        fdef = self.catalog.entity(table.entity).field(field)
        edge = Edge(target=field, source=column, source_type=columns[column],
                    transforms=suggest_transforms(fdef, column, columns[column]))
        text = f"Map {column} onto {field}"
        if kind == REPLACE:
            with self.macro(text + " (replacing its edge)"):
                for old in table.edges_to(field):
                    self.edit(RemoveEdge(table_id, old.id), f"Remove the edge onto {field}")
                self.edit(AddEdge(table_id, edge), text)
        else:
            self.edit(AddEdge(table_id, edge), text)
        return edge

    def remove_edges(self, edges: list[tuple[str, str]]) -> None:
        if not edges:
            return
        with self.macro(f"Delete {len(edges)} edge{'s' if len(edges) > 1 else ''}"):
            for table_id, edge_id in edges:
                self.edit(RemoveEdge(table_id, edge_id), "Delete edge")

    def remove_tables(self, table_ids: list[str]) -> None:
        if not table_ids:
            return
        with self.macro(f"Remove {len(table_ids)} table mapping{'s' if len(table_ids) > 1 else ''}"):
            for table_id in table_ids:
                self.edit(RemoveTable(table_id), "Remove table mapping")

    def add_table(self, stream: str, entity: str, label: str = "") -> TableMapping:
        table = TableMapping(stream=stream, entity=entity, label=label)
        self.edit(AddTable(table), f"Add {stream} → {entity}")
        return table

    def set_transforms(self, table_id: str, edge_id: str, transforms: list[Transform],
                       merge_key: Hashable | None = None) -> None:
        fresh = [Transform.from_json(t.to_json()) for t in transforms]  # never share objects with the stack
        self.edit(SetEdge(table_id, edge_id, "transforms", fresh), "Edit transforms",
                  None if merge_key is None else ("transforms", edge_id, merge_key))

    def set_edge_source(self, table_id: str, edge_id: str, column: str | None) -> None:
        columns = self.columns_of(table_id) or {}
        with self.macro(f"Map {column or 'no column'}"):
            self.edit(SetEdge(table_id, edge_id, "source", column), "Set source column")
            self.edit(SetEdge(table_id, edge_id, "source_type", columns.get(column) if column else None),
                      "Set source type")

    def proposals(self, table_ids: list[str] | None = None) -> list[tuple[str, Edge]]:
        """Auto-map: edges proposed by name and type similarity, per table (not applied)."""
        out = []
        for table in self.mapping.tables:
            if table_ids and table.id not in table_ids:
                continue
            columns = self.columns_of(table)
            if not columns:
                continue
            entity = self.catalog.entity(table.entity)
            for edge in propose_edges(table, self.catalog, columns):
                fdef = entity.field(edge.target) if entity else None
                if fdef is not None:
                    edge.transforms = suggest_transforms(fdef, edge.source, columns[edge.source])
                out.append((table.id, edge))
        return out

    def accept_proposals(self, proposals: list[tuple[str, Edge]]) -> None:
        if not proposals:
            return
        with self.macro(f"Auto-map {len(proposals)} edge{'s' if len(proposals) > 1 else ''}"):
            for table_id, edge in proposals:
                self.edit(AddEdge(table_id, edge), f"Map {edge.source} onto {edge.target}")


# --- small helpers ------------------------------------------------------------------------------

_UNIT_WORDS = {k for k in units.ALIASES if len(k) >= 2 and " " not in k and k not in ("number", "count")}
_UNIT_WORDS |= {"t", "l"} | set(units.CASE_SENSITIVE)


def column_unit(column: str) -> str | None:
    """A unit named in a column name: kwh, mass_kg, withdrawal_m3, distance_km."""
    for token in reversed(re.split(r"[^A-Za-z0-9³]+", column)):
        if token in units.CASE_SENSITIVE:
            return token
        if token.lower() in _UNIT_WORDS and units.is_known(token.lower()):
            return _pretty_unit(token.lower())
    return None


def suggest_transforms(fdef: FieldDef, column: str, column_type: str) -> list[Transform]:
    """Sensible first transforms for a new edge: a unit conversion when the column name
    states a unit of the field's kind (kwh -> MWh), a date -> month for a period field."""
    if fdef.role == "period" and column_type in (DATE, TIMESTAMP):
        return [Period()]
    if fdef.role == "measure" and column_type == NUMBER:
        unit = column_unit(column)
        if unit is None:
            return []
        for dim in fdef.allowed_dimensions:
            target = fdef.unit_for_dimension(dim)
            if target and units.unit_of_dimension(unit, dim):
                if units.canonical_text(unit) == units.canonical_text(target):
                    return []
                return [Unit(from_unit=unit, to_unit=target)]
    return []


def _pretty_unit(word: str) -> str:
    return {"kwh": "kWh", "mwh": "MWh", "gwh": "GWh", "gj": "GJ", "mj": "MJ", "tj": "TJ", "wh": "Wh",
            "l": "litre", "lt": "litre", "ltr": "litre"}.get(word, word)
