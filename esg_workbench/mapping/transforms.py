"""Transforms on a mapping edge, applied in order to the source column's value.

Each transform is a small serializable object that compiles to a SQL expression over the
raw table (set-based apply; nothing runs per row in Python):

* `cast`        to number, text, date, timestamp or boolean (bad values become NULL);
* `unit`        a unit conversion through pint (kWh -> MWh, m3 -> ML, kg -> t);
* `fuel_energy` fuel quantity -> energy by the factor set's energy content
                (litres of diesel -> kWh), before a unit conversion to MWh;
* `value_map`   codes -> catalog values (supplier codes -> fuel types), with a default;
* `constant`    a fixed value (an edge without a source column);
* `period`      a date -> its reporting month 'YYYY-MM';
* `expression`  the safe expression language (expressions.py); `value` is the input;
* `lookup`      a value from another landed table of the same connector, by key
                (meter_id -> meters.site_id -> sites.site_code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from esg_workbench.mapping import units
from esg_workbench.mapping.errors import ExpressionError, TransformError
from esg_workbench.mapping.expressions import parse as parse_expression
from esg_workbench.mapping.sql import ANY, BOOLEAN, DATE, NULL, NUMBER, TEXT, TIMESTAMP

CAST_TYPES = {"number": NUMBER, "integer": NUMBER, "text": TEXT, "date": DATE, "timestamp": TIMESTAMP,
              "boolean": BOOLEAN}


class Context:
    """What compiling needs besides the value: the dialect, the row's other columns,
    joins for lookups, the factor set. Set up by the compiler (compiler.py)."""

    dialect: Any
    columns: dict[str, tuple[str, str]]  # column -> (SQL, type)
    factor_set: Any
    catalog: Any
    add_lookup: Callable[[str, str, str, tuple[str, str]], tuple[str, str]]


@dataclass
class Transform:
    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.kind:
            Transform.registry[cls.kind] = cls

    def to_json(self) -> dict[str, Any]:
        data = {"kind": self.kind}
        data.update({k: v for k, v in self.__dict__.items() if not k.startswith("_")})
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> "Transform":
        data = dict(data)
        kind = data.pop("kind", None)
        cls = Transform.registry.get(kind)
        if cls is None:
            raise TransformError(f"Unknown transform '{kind}'. Known: {', '.join(sorted(Transform.registry))}.")
        try:
            return cls(**data)
        except TypeError as exc:
            raise TransformError(f"The {kind} transform has wrong settings: {exc}.") from None

    def describe(self) -> str:
        return self.kind

    def output_type(self, input_type: str) -> str:
        return input_type

    def output_unit(self, input_unit: str | None) -> str | None:
        """The unit of the output, when the transform fixes one."""
        return input_unit

    def check(self, input_type: str, ctx_columns: dict[str, str] | None = None) -> None:
        """Raise a MappingError when the settings cannot work."""

    def compile(self, sql: str, input_type: str, ctx: Context) -> tuple[str, str]:
        raise NotImplementedError


@dataclass
class Cast(Transform):
    kind: ClassVar[str] = "cast"
    to: str = "number"

    def describe(self) -> str:
        return f"as {self.to}"

    def check(self, input_type, ctx_columns=None):
        if self.to not in CAST_TYPES:
            raise TransformError(f"Cannot cast to '{self.to}'; pick one of {', '.join(CAST_TYPES)}.")

    def output_type(self, input_type):
        return CAST_TYPES.get(self.to, input_type)

    def compile(self, sql, input_type, ctx):
        self.check(input_type)
        out = ctx.dialect.cast(sql, input_type, CAST_TYPES[self.to])
        if self.to == "integer":
            out = f"round({out})"
        return out, CAST_TYPES[self.to]


@dataclass
class Unit(Transform):
    kind: ClassVar[str] = "unit"
    from_unit: str = ""
    to_unit: str = ""

    def describe(self) -> str:
        return f"{self.from_unit} → {self.to_unit}"

    def check(self, input_type, ctx_columns=None):
        units.factor(self.from_unit, self.to_unit)  # UnknownUnit / IncompatibleUnit
        if input_type not in (NUMBER, NULL, ANY):
            from esg_workbench.mapping.errors import IncompatibleType

            raise IncompatibleType(f"A unit conversion needs a number, not {input_type}; add a cast to number first.")

    def output_type(self, input_type):
        return NUMBER

    def output_unit(self, input_unit):
        return self.to_unit

    def compile(self, sql, input_type, ctx):
        self.check(input_type)
        number = ctx.dialect.cast(sql, input_type, NUMBER)
        f = units.factor(self.from_unit, self.to_unit)
        return (number if f == 1.0 else f"({number} * {ctx.dialect.number_literal(f)})"), NUMBER


@dataclass
class FuelEnergy(Transform):
    """Fuel quantity in `from_unit` -> kWh by the energy content of `fuel` (a fuel_type
    vocabulary value) in the factor set, on the `basis` calorific value."""

    kind: ClassVar[str] = "fuel_energy"
    fuel: str = ""
    from_unit: str = "litre"
    basis: str = "Gross CV"

    def describe(self) -> str:
        return f"{self.fuel} {self.from_unit} → kWh ({self.basis})"

    def kwh_per_unit(self, catalog, factor_set) -> float:
        entry = catalog.vocabulary("fuel_type").get(self.fuel)
        if entry is None:
            raise TransformError(f"'{self.fuel}' is not a fuel type of the catalog.")
        found = factor_set.energy_per_unit(entry["factor"], self.from_unit, self.basis)
        if found is None:
            raise TransformError(f"{factor_set.label} gives no energy content for {self.fuel} per {self.from_unit}.")
        return found[0]

    def output_type(self, input_type):
        return NUMBER

    def output_unit(self, input_unit):
        return "kWh"

    def compile(self, sql, input_type, ctx):
        k = self.kwh_per_unit(ctx.catalog, ctx.factor_set)
        return f"({ctx.dialect.cast(sql, input_type, NUMBER)} * {ctx.dialect.number_literal(k)})", NUMBER


@dataclass
class ValueMap(Transform):
    """Codes -> values. Matching ignores case and surrounding spaces. `default`: the value
    for codes not in the map; with `keep_unmapped` they pass unchanged instead."""

    kind: ClassVar[str] = "value_map"
    mapping: dict[str, Any] = field(default_factory=dict)
    default: Any = None
    keep_unmapped: bool = False

    def describe(self) -> str:
        return f"map {len(self.mapping)} values"

    def output_type(self, input_type):
        values = [v for v in self.mapping.values() if v is not None]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return NUMBER
        if values and all(isinstance(v, bool) for v in values):
            return BOOLEAN
        return TEXT

    def compile(self, sql, input_type, ctx):
        d = ctx.dialect
        key = f"lower(trim({d.to_text(sql, input_type)}))"
        out_type = self.output_type(input_type)
        if not self.mapping:
            raise TransformError("The value map is empty.")
        whens = " ".join(f"WHEN {d.literal(str(k).strip().lower())} THEN {self._lit(d, v, out_type)}"
                         for k, v in self.mapping.items())
        otherwise = d.to_text(sql, input_type) if self.keep_unmapped and out_type == TEXT else self._lit(d, self.default, out_type)
        return f"(CASE {key} {whens} ELSE {otherwise} END)", out_type

    @staticmethod
    def _lit(d, value, out_type):
        if value is None:
            return f"CAST(NULL AS {d.double if out_type == NUMBER else 'BOOLEAN' if out_type == BOOLEAN else d.text})"
        return d.number_literal(value) if out_type == NUMBER else d.literal(value)


@dataclass
class Constant(Transform):
    kind: ClassVar[str] = "constant"
    value: Any = None

    def describe(self) -> str:
        return f"= {self.value!r}"

    def output_type(self, input_type):
        if isinstance(self.value, bool):
            return BOOLEAN
        if isinstance(self.value, (int, float)):
            return NUMBER
        return NULL if self.value is None else TEXT

    def compile(self, sql, input_type, ctx):
        d = ctx.dialect
        t = self.output_type(input_type)
        return (d.number_literal(self.value) if t == NUMBER else d.literal(self.value)), t


@dataclass
class Period(Transform):
    kind: ClassVar[str] = "period"
    granularity: str = "month"

    def describe(self) -> str:
        return "date → month"

    def check(self, input_type, ctx_columns=None):
        if self.granularity != "month":
            raise TransformError("Staging rows are monthly; map the date and roll up to quarters and years in KPIs.")

    def output_type(self, input_type):
        return TEXT

    def compile(self, sql, input_type, ctx):
        self.check(input_type)
        return ctx.dialect.month_label(sql, input_type), TEXT


@dataclass
class Expression(Transform):
    kind: ClassVar[str] = "expression"
    text: str = "value"

    def describe(self) -> str:
        return self.text

    def _parsed(self):
        return parse_expression(self.text)

    def check(self, input_type, ctx_columns=None):
        parsed = self._parsed()
        if ctx_columns is not None:
            parsed.result_type({**ctx_columns, "value": input_type})

    def output_type(self, input_type):
        try:
            return self._parsed().result_type(_AnyColumns(input_type))
        except ExpressionError:
            return ANY

    def compile(self, sql, input_type, ctx):
        return self._parsed().to_sql(ctx.dialect, {**ctx.columns, "value": (sql, input_type)})


class _AnyColumns(dict):
    def __init__(self, value_type):
        super().__init__(value=value_type)

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return dict.get(self, key, ANY)


@dataclass
class Lookup(Transform):
    """The value of `value_column` in the landed table `stream` (same connector) of the row
    whose `key_column` equals the input. Several lookups chain (meter -> site -> code)."""

    kind: ClassVar[str] = "lookup"
    stream: str = ""
    key_column: str = "id"
    value_column: str = ""

    def describe(self) -> str:
        return f"{self.stream}.{self.key_column} → {self.value_column}"

    def output_type(self, input_type):
        return ANY

    def compile(self, sql, input_type, ctx):
        if not self.stream or not self.value_column:
            raise TransformError("A lookup needs a table and the column to read.")
        return ctx.add_lookup(self.stream, self.key_column, self.value_column, (sql, input_type))


def transforms_from_json(items: list[dict[str, Any]] | None) -> list[Transform]:
    return [Transform.from_json(i) for i in items or []]


def transforms_to_json(items: list[Transform]) -> list[dict[str, Any]]:
    return [t.to_json() for t in items]
