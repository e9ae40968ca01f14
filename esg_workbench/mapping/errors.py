"""Typed mapping errors. The canvas highlights the item an error names.

Every validation problem is an instance of one of these classes, so a caller can both
raise it (when an edit is refused, e.g. while dragging) and list it (the validation
panel). `table_id`, `edge_id`, `field` and `column` say which item to select.
"""

from __future__ import annotations

from esg_workbench.core.errors import EsgError


class MappingError(EsgError):
    """Base of every mapping problem."""

    hint = "Open the mapping on the canvas and fix the highlighted item."
    #: "error" blocks saving-as-valid and applying; "warning" is shown but allowed
    severity = "error"

    def __init__(self, message: str, *, table_id: str | None = None, edge_id: str | None = None,
                 field: str | None = None, column: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.table_id = table_id
        self.edge_id = edge_id
        self.field = field
        self.column = column

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_json(self) -> dict:
        return {"kind": self.kind, "severity": self.severity, "message": self.message, "hint": self.hint,
                "table_id": self.table_id, "edge_id": self.edge_id, "field": self.field, "column": self.column}


class RequiredFieldUnmapped(MappingError):
    hint = "Drag a source column onto the field, or give it a constant."


class IncompatibleType(MappingError):
    hint = "Add a cast on the edge, or map a column of a matching type."


class IncompatibleUnit(MappingError):
    hint = "Pick a unit of the field's kind (e.g. kWh or MWh for energy), or fix the unit conversion."


class UnknownUnit(MappingError):
    hint = "Write the unit as e.g. kWh, MWh, litre, m3, ML, kg, t, km or h."


class AmbiguousUnit(UnknownUnit):
    """A unit text that names several units ('gallon': US or imperial; 'ton': short, long or
    metric): never guessed. `choices` are the unambiguous units to pick from."""

    def __init__(self, message: str, *, choices: tuple[str, ...] = (), **where):
        super().__init__(message, **where)
        self.choices = choices


class DuplicateMapping(MappingError):
    hint = "Remove one of the edges onto this field."


class MappedColumnMissing(MappingError):
    hint = "The column was dropped or renamed in the source. Re-map the field to an existing column."


class UnknownField(MappingError):
    hint = "Pick a field of the entity from the catalog."


class UnknownEntity(MappingError):
    hint = "Pick an ESG entity from the catalog."


class UnknownStream(MappingError):
    hint = "Sync the connector first, or pick a table that has been landed."


class ExpressionError(MappingError):
    hint = "Fix the expression: columns by name, 'text' in single quotes, functions like if(), round(), coalesce()."


class TransformError(MappingError):
    hint = "Fix the transform's settings on the edge."


class MissingKey(MappingError):
    severity = "warning"
    hint = "Set key columns on the table mapping so each record can be traced to its source row."


class UnitNotStated(MappingError):
    severity = "warning"
    hint = "Map the unit column, or add a unit conversion stating the source unit."


class FactorMissing(MappingError):
    hint = "Pick a value the emission factor set knows, or import a factor set that has it."
