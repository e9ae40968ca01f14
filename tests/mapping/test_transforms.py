"""Every transform and the expression language, compiled to SQL and run in DuckDB."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from esg_workbench.mapping import factors
from esg_workbench.mapping.catalog import load_catalog
from esg_workbench.mapping.errors import ExpressionError, IncompatibleUnit, TransformError
from esg_workbench.mapping.expressions import parse
from esg_workbench.mapping.sql import DATE, DUCKDB, NUMBER, TEXT
from esg_workbench.mapping.transforms import (
    Cast, Constant, Context, Expression, FuelEnergy, Lookup, Period, Transform, Unit, ValueMap,
)

ROW = {"kwh": 1500, "txt": " 1,234.5 ", "code": "DSL", "d": dt.date(2024, 3, 5), "flag": "yes", "bad": "n/a"}
TYPES = {"kwh": NUMBER, "txt": TEXT, "code": TEXT, "d": DATE, "flag": TEXT, "bad": TEXT}


class Ctx(Context):
    def __init__(self):
        self.dialect = DUCKDB
        self.columns = {k: (k, t) for k, t in TYPES.items()}
        self.catalog = load_catalog()
        self.factor_set = factors.builtin()


def run(transforms, column):
    sql, t = (column, TYPES[column]) if column else ("NULL", "null")
    ctx = Ctx()
    for tr in transforms:
        sql, t = tr.compile(sql, t, ctx)
    con = duckdb.connect()
    src = "SELECT 1500 AS kwh, ' 1,234.5 ' AS txt, 'DSL' AS code, DATE '2024-03-05' AS d, 'yes' AS flag, 'n/a' AS bad"
    return con.execute(f"SELECT {sql} FROM ({src})").fetchone()[0], t


def test_cast():
    assert run([Cast("number")], "txt") == (1234.5, NUMBER)
    assert run([Cast("number")], "bad")[0] is None  # a bad value becomes NULL, the apply goes on
    assert run([Cast("boolean")], "flag")[0] is True
    assert run([Cast("text")], "d")[0] == "2024-03-05"
    assert run([Cast("date")], "d")[0] == dt.date(2024, 3, 5)
    assert run([Cast("integer")], "txt")[0] == 1234 or run([Cast("integer")], "txt")[0] == 1235
    with pytest.raises(TransformError):
        run([Cast("colour")], "kwh")


def test_unit():
    assert run([Unit("kWh", "MWh")], "kwh")[0] == pytest.approx(1.5)
    assert run([Unit("m3", "ML")], "kwh")[0] == pytest.approx(1.5)
    assert run([Unit("kg", "t")], "kwh")[0] == pytest.approx(1.5)
    assert Unit("kWh", "MWh").output_unit(None) == "MWh"
    with pytest.raises(IncompatibleUnit):
        run([Unit("kg", "kWh")], "kwh")


def test_fuel_energy_litres_diesel_to_mwh():
    value, _ = run([Constant(1000), FuelEnergy("diesel", "litre"), Unit("kWh", "MWh")], None)
    assert value == pytest.approx(10.5072, rel=1e-4)
    with pytest.raises(TransformError):
        run([FuelEnergy("unobtainium", "litre")], "kwh")


def test_value_map():
    assert run([ValueMap({"dsl": "diesel", "pet": "petrol"})], "code") == ("diesel", TEXT)  # case-insensitive
    assert run([ValueMap({"x": "y"}, default="other")], "code")[0] == "other"
    assert run([ValueMap({"x": "y"}, keep_unmapped=True)], "code")[0] == "DSL"
    assert run([ValueMap({"dsl": 2.5})], "code") == (2.5, NUMBER)


def test_constant_and_period():
    assert run([Constant("natural_gas")], None) == ("natural_gas", TEXT)
    assert run([Constant(3)], None) == (3.0, NUMBER)
    assert run([Period()], "d") == ("2024-03", TEXT)
    assert run([Period()], "code")[0] is None  # not a date
    with pytest.raises(TransformError):
        run([Period("quarter")], "d")


def test_expression_transform_reads_value_and_other_columns():
    assert run([Expression("value * 2 + length(code)")], "kwh")[0] == pytest.approx(3003)
    assert run([Expression("if(flag = 'yes', value / 1000, 0)")], "kwh")[0] == pytest.approx(1.5)


def test_transforms_round_trip_json():
    items = [Cast("number"), Unit("kWh", "MWh"), FuelEnergy("diesel"), ValueMap({"a": "b"}, "c"), Constant(1),
             Period(), Expression("value"), Lookup("sites", "id", "site_code")]
    again = [Transform.from_json(t.to_json()) for t in items]
    assert again == items
    with pytest.raises(TransformError):
        Transform.from_json({"kind": "teleport"})


EXPRESSIONS = [
    ("if(code = 'void', 0, kwh * 1.02)", 1530.0),
    ("round(kwh / 7, 2)", 214.29),
    ("coalesce(null, 'HQ')", "HQ"),
    ("concat(code, '-', kwh)", "DSL-1500"),
    ("upper(trim(' dsl ')) in ('DSL', 'X')", True),
    ("code not in ('A', 'B')", True),
    ("[kwh] > 0 and not (code is null)", True),
    ("kwh / 0", None),
    ("period(d)", "2024-03"),
    ("year(d) * 100 + month(d)", 202403.0),
    ("max(kwh, null, 3)", 1500.0),
    ("-kwh % 7", -2.0),
    ("substr('abcdef', 2, 3)", "bcd"),
    ("number(txt) + 1", 1235.5),
    ("replace(code, 'S', 's')", "DsL"),
    ("nullif(code, 'DSL') is null", True),
    ("null = 1", None),
    ("abs(-2) + floor(2.7) + ceil(0.2)", 5.0),
]


@pytest.mark.parametrize("text,expected", EXPRESSIONS)
def test_expression_sql_and_python_agree(text, expected):
    expr = parse(text)
    sql, _ = expr.to_sql(DUCKDB, {k: (k, t) for k, t in TYPES.items()})
    src = "SELECT 1500 AS kwh, ' 1,234.5 ' AS txt, 'DSL' AS code, DATE '2024-03-05' AS d"
    got = duckdb.connect().execute(f"SELECT {sql} FROM ({src})").fetchone()[0]
    py = expr.evaluate(ROW)
    if isinstance(expected, float):
        assert got == pytest.approx(expected) and py == pytest.approx(expected)
    else:
        assert got == expected and py == expected


@pytest.mark.parametrize("text", ["kwh +", "foo(1)", "'open", "kwh between 1 and 2", "", "__import__('os')", "a; DROP TABLE x"])
def test_expression_errors_are_typed(text):
    with pytest.raises(ExpressionError):
        parse(text)


def test_expression_unknown_column_and_arity():
    with pytest.raises(ExpressionError):
        parse("nope + 1").result_type(TYPES)
    with pytest.raises(ExpressionError):
        parse("round()").result_type(TYPES)
    assert parse("[Meter Reading] * 2").columns == {"Meter Reading"}
