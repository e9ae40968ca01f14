"""The mapping model, Qt-free: what the canvas draws and edits.

    Mapping                     a named, versioned document (one connector)
      └─ TableMapping           one source table (stream) -> one ESG entity, with an
           │                    optional row filter and the key columns for lineage
           └─ Edge              a source column (or none: a constant) -> an entity field,
                                with a list of transforms

Columns are referred to by name (and checked against their type), never by position.

Every change goes through an edit operation (`AddEdge`, `RemoveEdge`, `SetEdge`,
`AddTable`, `RemoveTable`, `SetTable`): `mapping.apply(op)` performs it, notifies the
listeners and returns the inverse operation. A canvas wraps each in a QUndoCommand
(redo: `mapping.apply(op)`; undo: `mapping.apply(inverse)`) and groups the edits of one
gesture in a macro. Listeners get a `Change` naming what changed.

Validation (`validate`) returns typed errors (errors.py) that name the table, edge,
field or column concerned; `check_edge` raises the first problem of a would-be edge, so
a canvas can grey out incompatible fields while a column is dragged.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from esg_workbench.mapping import units
from esg_workbench.mapping.catalog import Catalog, EntityDef, FieldDef
from esg_workbench.mapping.errors import (
    DuplicateMapping,
    ExpressionError,
    IncompatibleType,
    IncompatibleUnit,
    MappedColumnMissing,
    MappingError,
    MissingKey,
    RequiredFieldUnmapped,
    TransformError,
    UnitNotStated,
    UnknownEntity,
    UnknownField,
    UnknownStream,
    UnknownUnit,
)
from esg_workbench.mapping.sql import ANY, BOOLEAN, DATE, NULL, NUMBER, TEXT, TIMESTAMP
from esg_workbench.mapping.transforms import (
    Constant,
    Expression,
    Lookup,
    Transform,
    Unit,
    transforms_from_json,
    transforms_to_json,
)

FORMAT = 1  # of the JSON definition


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class Edge:
    target: str  # the entity field
    source: str | None = None  # the source column; None with a constant transform
    transforms: list[Transform] = field(default_factory=list)
    id: str = field(default_factory=lambda: new_id("e"))
    source_type: str | None = None  # the column's type when the edge was drawn (drift check)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "source_type": self.source_type, "target": self.target,
                "transforms": transforms_to_json(self.transforms)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Edge":
        return cls(target=data["target"], source=data.get("source"), transforms=transforms_from_json(data.get("transforms")),
                   id=data.get("id") or new_id("e"), source_type=data.get("source_type"))


@dataclass
class TableMapping:
    stream: str  # the source table as the connector names it (schema.table or table)
    entity: str  # catalog entity
    edges: list[Edge] = field(default_factory=list)
    filter: str | None = None  # an expression: only rows where it is true are mapped
    key_columns: list[str] | None = None  # None: the table's primary key
    id: str = field(default_factory=lambda: new_id("t"))
    label: str = ""
    # the business key of a record (e.g. invoice number, or meter and period): rows sharing
    # it are duplicates, flagged; with duplicates="count_once" only the first (by source
    # key) is counted, the others are kept in staging without value, flagged duplicate_ignored
    business_key: list[str] | None = None
    duplicates: str = "flag"  # flag | count_once

    def edge(self, edge_id: str) -> Edge | None:
        return next((e for e in self.edges if e.id == edge_id), None)

    def edges_to(self, target: str) -> list[Edge]:
        return [e for e in self.edges if e.target == target]

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "stream": self.stream, "entity": self.entity, "label": self.label, "filter": self.filter,
               "key_columns": self.key_columns, "edges": [e.to_json() for e in self.edges]}
        if self.business_key:  # only when set, so older mappings keep their definition hash
            out["business_key"] = list(self.business_key)
            out["duplicates"] = self.duplicates
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TableMapping":
        return cls(stream=data["stream"], entity=data["entity"], edges=[Edge.from_json(e) for e in data.get("edges", [])],
                   filter=data.get("filter"), key_columns=data.get("key_columns"), id=data.get("id") or new_id("t"),
                   label=data.get("label", ""), business_key=data.get("business_key") or None,
                   duplicates=data.get("duplicates") or "flag")


DUPLICATE_CHOICES = ("flag", "count_once")


@dataclass
class Change:
    kind: str  # table_added, table_removed, table_changed, edge_added, edge_removed, edge_changed, mapping_changed
    table_id: str | None = None
    edge_id: str | None = None
    attribute: str | None = None


@dataclass
class Mapping:
    name: str
    connector: str  # connector name (or id)
    tables: list[TableMapping] = field(default_factory=list)
    description: str = ""
    factor_set: str | None = None  # None: the shipped DESNZ set
    factor_set_version: str | None = None
    catalog_version: str | None = None
    # the region whose factors an activity of a site takes when the site's own region has
    # none (never for regional activities such as grid electricity); such results are
    # flagged factor_other_region. None: no emission and no_factor instead.
    factor_fallback_region: str | None = None
    # set when loaded from the workspace
    version: int | None = None
    author: str | None = None
    created_at: Any = None
    mapping_id: int | None = None
    _listeners: list[Callable[[Change], None]] = field(default_factory=list, repr=False, compare=False)

    # --- lookups ----------------------------------------------------------------------

    def table(self, table_id: str) -> TableMapping:
        for t in self.tables:
            if t.id == table_id:
                return t
        raise KeyError(f"no table mapping {table_id}")

    def find_edge(self, edge_id: str) -> tuple[TableMapping, Edge]:
        for t in self.tables:
            e = t.edge(edge_id)
            if e is not None:
                return t, e
        raise KeyError(f"no edge {edge_id}")

    # --- listeners and edits ------------------------------------------------------------

    def subscribe(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Change], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def apply(self, op: "Operation") -> "Operation":
        """Perform an edit; returns the operation that undoes it."""
        inverse, change = op.perform(self)
        for listener in list(self._listeners):
            listener(change)
        return inverse

    # --- (de)serialization -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out = {"format": FORMAT, "name": self.name, "connector": self.connector, "description": self.description,
               "factor_set": self.factor_set, "factor_set_version": self.factor_set_version,
               "catalog_version": self.catalog_version, "tables": [t.to_json() for t in self.tables]}
        if self.factor_fallback_region:  # only when set, so older mappings keep their definition hash
            out["factor_fallback_region"] = self.factor_fallback_region
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Mapping":
        return cls(name=data["name"], connector=data["connector"], description=data.get("description", ""),
                   factor_set=data.get("factor_set"), factor_set_version=data.get("factor_set_version"),
                   catalog_version=data.get("catalog_version"),
                   factor_fallback_region=data.get("factor_fallback_region") or None,
                   tables=[TableMapping.from_json(t) for t in data.get("tables", [])])

    def definition_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def copy(self) -> "Mapping":
        clone = Mapping.from_json(copy.deepcopy(self.to_json()))
        clone.version, clone.author, clone.created_at, clone.mapping_id = self.version, self.author, self.created_at, self.mapping_id
        return clone


# --- edit operations --------------------------------------------------------------------------

class Operation:
    """An undoable edit. `perform` returns (inverse operation, change)."""

    def perform(self, mapping: Mapping) -> tuple["Operation", Change]:
        raise NotImplementedError


@dataclass
class AddTable(Operation):
    table: TableMapping
    index: int | None = None

    def perform(self, mapping):
        index = len(mapping.tables) if self.index is None else self.index
        mapping.tables.insert(index, self.table)
        return RemoveTable(self.table.id), Change("table_added", self.table.id)


@dataclass
class RemoveTable(Operation):
    table_id: str

    def perform(self, mapping):
        table = mapping.table(self.table_id)
        index = mapping.tables.index(table)
        mapping.tables.remove(table)
        return AddTable(table, index), Change("table_removed", self.table_id)


@dataclass
class SetTable(Operation):
    table_id: str
    attribute: str  # stream | entity | filter | key_columns | label
    value: Any

    def perform(self, mapping):
        if self.attribute not in ("stream", "entity", "filter", "key_columns", "label", "business_key", "duplicates"):
            raise ValueError(f"cannot set {self.attribute} of a table mapping")
        table = mapping.table(self.table_id)
        old = getattr(table, self.attribute)
        setattr(table, self.attribute, self.value)
        return SetTable(self.table_id, self.attribute, old), Change("table_changed", self.table_id, attribute=self.attribute)


@dataclass
class AddEdge(Operation):
    table_id: str
    edge: Edge
    index: int | None = None

    def perform(self, mapping):
        table = mapping.table(self.table_id)
        index = len(table.edges) if self.index is None else self.index
        table.edges.insert(index, self.edge)
        return RemoveEdge(self.table_id, self.edge.id), Change("edge_added", self.table_id, self.edge.id)


@dataclass
class RemoveEdge(Operation):
    table_id: str
    edge_id: str

    def perform(self, mapping):
        table = mapping.table(self.table_id)
        edge = table.edge(self.edge_id)
        if edge is None:
            raise KeyError(f"no edge {self.edge_id}")
        index = table.edges.index(edge)
        table.edges.remove(edge)
        return AddEdge(self.table_id, edge, index), Change("edge_removed", self.table_id, self.edge_id)


@dataclass
class SetEdge(Operation):
    table_id: str
    edge_id: str
    attribute: str  # source | target | transforms | source_type
    value: Any

    def perform(self, mapping):
        if self.attribute not in ("source", "target", "transforms", "source_type"):
            raise ValueError(f"cannot set {self.attribute} of an edge")
        edge = mapping.table(self.table_id).edge(self.edge_id)
        if edge is None:
            raise KeyError(f"no edge {self.edge_id}")
        old = getattr(edge, self.attribute)
        setattr(edge, self.attribute, list(self.value) if self.attribute == "transforms" else self.value)
        return (SetEdge(self.table_id, self.edge_id, self.attribute, old),
                Change("edge_changed", self.table_id, self.edge_id, self.attribute))


@dataclass
class SetMapping(Operation):
    attribute: str  # description | factor_set | factor_set_version | connector | name
    value: Any

    def perform(self, mapping):
        if self.attribute not in ("description", "factor_set", "factor_set_version", "connector", "name",
                                  "factor_fallback_region"):
            raise ValueError(f"cannot set {self.attribute} of a mapping")
        old = getattr(mapping, self.attribute)
        setattr(mapping, self.attribute, self.value)
        return SetMapping(self.attribute, old), Change("mapping_changed", attribute=self.attribute)


# --- validation -------------------------------------------------------------------------------

#: which value types a field type accepts without a cast
_ACCEPTS = {
    "number": {NUMBER, NULL, ANY},
    "text": {TEXT, NUMBER, DATE, TIMESTAMP, BOOLEAN, NULL, ANY},
    "date": {DATE, TIMESTAMP, NULL, ANY},
    "boolean": {BOOLEAN, NULL, ANY},
}


def edge_output(edge: Edge, columns: dict[str, str]) -> tuple[str, str | None]:
    """(value type, unit stated by the transforms) of what the edge delivers."""
    if edge.source is None:
        value_type = NULL
    else:
        value_type = columns.get(edge.source, edge.source_type or ANY)
    unit = None
    for t in edge.transforms:
        t.check(value_type, columns)
        value_type = t.output_type(value_type)
        unit = t.output_unit(unit)
    return value_type, unit


def check_edge(table: TableMapping, edge: Edge, catalog: Catalog, columns: dict[str, str] | None) -> None:
    """Raise the first problem of `edge` in `table` (a typed MappingError)."""
    for problem in _edge_problems(table, edge, catalog, columns, check_duplicates=True):
        if problem.severity == "error":
            raise problem


def compatible_fields(table: TableMapping, column: str, catalog: Catalog, columns: dict[str, str]) -> list[str]:
    """The entity fields a column may be dropped on (for greying out the others)."""
    entity = catalog.entity(table.entity)
    if entity is None:
        return []
    out = []
    for f in entity.fields:
        probe = Edge(target=f.name, source=column, source_type=columns.get(column))
        try:
            check_edge(table, probe, catalog, columns)
            out.append(f.name)
        except MappingError:
            pass
    return out


def _edge_problems(table: TableMapping, edge: Edge, catalog: Catalog, columns: dict[str, str] | None,
                   check_duplicates: bool = False) -> list[MappingError]:
    where = {"table_id": table.id, "edge_id": edge.id, "field": edge.target, "column": edge.source}
    entity = catalog.entity(table.entity)
    if entity is None:
        return []
    fdef = entity.field(edge.target)
    if fdef is None:
        return [UnknownField(f"{entity.label} has no field '{edge.target}'.", **where)]
    problems: list[MappingError] = []
    if check_duplicates and any(e.target == edge.target and e.id != edge.id for e in table.edges):
        problems.append(DuplicateMapping(f"{entity.label}.{fdef.label} is already mapped in {table.stream}.", **where))
    if edge.source is None and not any(isinstance(t, (Constant, Expression)) for t in edge.transforms):
        problems.append(RequiredFieldUnmapped(f"The edge onto {fdef.label} has neither a source column nor a constant.", **where))
    if columns is not None:
        missing = []
        if edge.source is not None and edge.source not in columns:
            missing.append(edge.source)
        for t in edge.transforms:
            if isinstance(t, Expression):
                try:
                    missing += [c for c in t._parsed().columns if c != "value" and c not in columns]
                except ExpressionError:
                    pass
        for name in dict.fromkeys(missing):
            problems.append(MappedColumnMissing(
                f"Column '{name}' of {table.stream} (mapped onto {fdef.label}) is not in the source any more.",
                **{**where, "column": name}))
        if missing:
            return problems
        if edge.source is not None and edge.source_type and columns.get(edge.source) not in (None, edge.source_type):
            pass  # a retyped column is fine as long as the type still fits (checked below)
    try:
        value_type, unit = edge_output(edge, columns or {})
    except MappingError as exc:
        exc.table_id, exc.edge_id, exc.field, exc.column = table.id, edge.id, edge.target, edge.source
        return problems + [exc]
    accepted = _ACCEPTS.get(fdef.type, {TEXT, NULL, ANY})
    if fdef.role == "date":
        accepted = {DATE, TIMESTAMP, TEXT, NULL, ANY}
    if fdef.role in ("unit", "category", "subcategory", "site", "attribute", "period") and fdef.type == "text":
        accepted = {TEXT, NUMBER, BOOLEAN, DATE, TIMESTAMP, NULL, ANY}
    if fdef.role == "measure" and value_type == TEXT:
        problems.append(IncompatibleType(
            f"{edge.source or 'The value'} is text; {fdef.label} needs a number. Add a cast to number.", **where))
    elif value_type not in accepted:
        problems.append(IncompatibleType(
            f"{edge.source or 'The value'} gives a {value_type}; {fdef.label} needs a {fdef.type}.", **where))
    if fdef.role in ("measure", "market_factor") and unit is not None:
        dims = fdef.allowed_dimensions
        if dims and not any(units.unit_of_dimension(unit, d) for d in dims):
            problems.append(IncompatibleUnit(
                f"{fdef.label} is {' or '.join(dims)}; the edge delivers {unit} ({units.dimension(unit)}).", **where))
    return problems


def validate(mapping: Mapping, catalog: Catalog, columns_by_stream: dict[str, dict[str, str]] | None = None,
             keys_by_stream: dict[str, list[str]] | None = None) -> list[MappingError]:
    """Every problem of the mapping, errors and warnings.

    `columns_by_stream`: stream -> {column: value type} of the landed (or discovered)
    tables; without it, columns are not checked. A stream missing from it is reported as
    not landed.
    """
    problems: list[MappingError] = []
    for table in mapping.tables:
        entity = catalog.entity(table.entity)
        if entity is None:
            problems.append(UnknownEntity(f"'{table.entity}' is not an entity of the catalog.", table_id=table.id))
            continue
        columns = None
        if columns_by_stream is not None:
            columns = columns_by_stream.get(table.stream)
            if columns is None:
                problems.append(UnknownStream(f"{table.stream} has not been landed in the workspace.", table_id=table.id))
        for edge in table.edges:
            problems += _edge_problems(table, edge, catalog, columns)
        # one edge per field
        seen: dict[str, Edge] = {}
        for edge in table.edges:
            if edge.target in seen:
                fdef = entity.field(edge.target)
                problems.append(DuplicateMapping(
                    f"{entity.label}.{fdef.label if fdef else edge.target} is mapped twice in {table.stream} "
                    f"(from {seen[edge.target].source or 'a constant'} and {edge.source or 'a constant'}).",
                    table_id=table.id, edge_id=edge.id, field=edge.target, column=edge.source))
            seen.setdefault(edge.target, edge)
        mapped = set(seen)
        for fdef in entity.required_fields:
            if fdef.name not in mapped:
                problems.append(RequiredFieldUnmapped(
                    f"{entity.label}.{fdef.label} is required but not mapped in {table.stream}.",
                    table_id=table.id, field=fdef.name))
        if entity.kind == "records" and not mapped & {f.name for f in entity.by_role("date") + entity.by_role("period")}:
            problems.append(RequiredFieldUnmapped(
                f"{entity.label} needs a date or a reporting month; map one in {table.stream}.",
                table_id=table.id, field="activity_date"))
        for measure in entity.measures:
            if measure.name in mapped:
                unit_field = entity.unit_field_for(measure.name)
                stated = any(isinstance(t, Unit) or t.output_unit(None) for t in seen[measure.name].transforms)
                if not stated and not (unit_field and unit_field.name in mapped) and measure.dimension not in ("count", None):
                    problems.append(UnitNotStated(
                        f"The unit of {entity.label}.{measure.label} is not stated; {measure.unit} is assumed.",
                        table_id=table.id, edge_id=seen[measure.name].id, field=measure.name))
        if table.filter:
            try:
                from esg_workbench.mapping.expressions import parse

                parsed = parse(table.filter)
                if columns is not None:
                    parsed.result_type(columns)
            except ExpressionError as exc:
                exc.table_id = table.id
                problems.append(exc)
        if columns is not None and table.key_columns:
            for k in table.key_columns:
                if k not in columns:
                    problems.append(MappedColumnMissing(f"Key column '{k}' of {table.stream} is not in the source any more.",
                                                        table_id=table.id, column=k))
        if table.duplicates not in DUPLICATE_CHOICES:
            problems.append(TransformError(f"duplicates must be one of {', '.join(DUPLICATE_CHOICES)}, not '{table.duplicates}'.",
                                           table_id=table.id))
        if columns is not None and table.business_key:
            for k in table.business_key:
                if k not in columns:
                    problems.append(MappedColumnMissing(
                        f"Business key column '{k}' of {table.stream} is not in the source.", table_id=table.id, column=k))
        if keys_by_stream is not None and not table.key_columns and not keys_by_stream.get(table.stream):
            problems.append(MissingKey(f"{table.stream} has no primary key; records are traced by a hash of their values.",
                                       table_id=table.id))
    return problems


def errors_only(problems: list[MappingError]) -> list[MappingError]:
    return [p for p in problems if p.severity == "error"]


# --- auto-map ---------------------------------------------------------------------------------

def _words(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


def propose_edges(table: TableMapping, catalog: Catalog, columns: dict[str, str], threshold: float = 0.72) -> list[Edge]:
    """Edges proposed by name and type similarity, for the analyst to accept; fields
    already mapped are left alone."""
    entity = catalog.entity(table.entity)
    if entity is None:
        return []
    mapped = {e.target for e in table.edges}
    used = {e.source for e in table.edges}
    proposals: list[tuple[float, Edge]] = []
    for fdef in entity.fields:
        if fdef.name in mapped:
            continue
        best: tuple[float, str] | None = None
        for column, value_type in columns.items():
            if column in used or column.startswith("_esg_"):
                continue
            names = [fdef.name, *fdef.synonyms]
            score = max(difflib.SequenceMatcher(None, _words(column), _words(n)).ratio() for n in names)
            probe = Edge(target=fdef.name, source=column, source_type=value_type)
            if any(p.severity == "error" for p in _edge_problems(table, probe, catalog, columns)):
                continue
            if best is None or score > best[0]:
                best = (score, column)
        if best and best[0] >= threshold:
            proposals.append((best[0], Edge(target=fdef.name, source=best[1], source_type=columns[best[1]])))
            used.add(best[1])
    return [e for _, e in sorted(proposals, key=lambda p: -p[0])]
