"""A small, safe expression language for mapping edges (no Python eval).

    if(status = 'void', 0, kwh * 1.02)      round(amount / 1000, 3)
    coalesce(site_code, 'HQ')               concat(country, '-', site)
    upper(trim(fuel)) in ('DIESEL', 'GAS OIL')      [Meter Reading] > 0 and not estimated

Columns are named as they are (bare identifiers) or in [brackets] when the name holds
spaces or symbols; `value` is the edge's own source column. Text is in 'single quotes'.
Operators: + - * / %, = != <> < <= > >=, and or not, is [not] null, [not] in (...).
Functions: if, coalesce, nullif, abs, round, floor, ceil, min, max, upper, lower, trim,
length, substr, replace, concat, number, text, date, year, month, period.

An expression is parsed into a tree, type-checked against the source columns, and then
either compiled to SQL for the workspace (DuckDB or PostgreSQL) or evaluated in Python
over one row (for quick checks). Both follow SQL's NULL rules; division by zero is NULL.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from esg_workbench.mapping.errors import ExpressionError
from esg_workbench.mapping.sql import ANY, BOOLEAN, DATE, NULL, NUMBER, TEXT, TIMESTAMP, Dialect

# --- tokens -------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<bracket>\[[^\]]+\])
  | (?P<quoted>"(?:[^"]|"")+")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|<>|==|[-+*/%=<>(),])
""", re.VERBOSE)

KEYWORDS = {"and", "or", "not", "is", "null", "in", "true", "false"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ExpressionError(f"Unexpected character {text[pos]!r} at position {pos + 1} of the expression.")
        kind = m.lastgroup
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# --- the tree -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Any


@dataclass(frozen=True)
class Binary:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple


@dataclass(frozen=True)
class InList:
    operand: Any
    items: tuple
    negate: bool


@dataclass(frozen=True)
class IsNull:
    operand: Any
    negate: bool


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def word(self, *words: str) -> bool:
        return self.tok.kind == "ident" and self.tok.text.lower() in words

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def expect(self, text: str) -> None:
        if self.tok.text != text:
            where = "the end" if self.tok.kind == "end" else f"'{self.tok.text}' (position {self.tok.pos + 1})"
            raise ExpressionError(f"Expected '{text}' but found {where}.")
        self.take()

    def parse(self):
        if self.tok.kind == "end":
            raise ExpressionError("The expression is empty.")
        node = self.or_()
        if self.tok.kind != "end":
            raise ExpressionError(f"Unexpected '{self.tok.text}' at position {self.tok.pos + 1}.")
        return node

    def or_(self):
        node = self.and_()
        while self.word("or"):
            self.take()
            node = Binary("or", node, self.and_())
        return node

    def and_(self):
        node = self.not_()
        while self.word("and"):
            self.take()
            node = Binary("and", node, self.not_())
        return node

    def not_(self):
        if self.word("not"):
            self.take()
            return Unary("not", self.not_())
        return self.compare()

    def compare(self):
        node = self.add()
        if self.tok.kind == "op" and self.tok.text in ("=", "==", "!=", "<>", "<", "<=", ">", ">="):
            op = {"==": "=", "<>": "!="}.get(self.take().text, self.tokens[self.i - 1].text)
            return Binary(op, node, self.add())
        if self.word("is"):
            self.take()
            negate = False
            if self.word("not"):
                self.take()
                negate = True
            if not self.word("null"):
                raise ExpressionError("Write 'is null' or 'is not null'.")
            self.take()
            return IsNull(node, negate)
        negate = False
        if self.word("not") and self.tokens[self.i + 1].kind == "ident" and self.tokens[self.i + 1].text.lower() == "in":
            self.take()
            negate = True
        if self.word("in"):
            self.take()
            self.expect("(")
            items = [self.add()]
            while self.tok.text == ",":
                self.take()
                items.append(self.add())
            self.expect(")")
            return InList(node, tuple(items), negate)
        return node

    def add(self):
        node = self.mul()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            node = Binary(self.take().text, node, self.mul())
        return node

    def mul(self):
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/", "%"):
            node = Binary(self.take().text, node, self.unary())
        return node

    def unary(self):
        if self.tok.kind == "op" and self.tok.text in ("-", "+"):
            op = self.take().text
            operand = self.unary()
            if op == "-" and isinstance(operand, Literal) and isinstance(operand.value, (int, float)):
                return Literal(-operand.value)
            return Unary(op, operand) if op == "-" else operand
        return self.primary()

    def primary(self):
        t = self.tok
        if t.kind == "number":
            self.take()
            return Literal(float(t.text) if any(c in t.text for c in ".eE") else int(t.text))
        if t.kind == "string":
            self.take()
            return Literal(t.text[1:-1].replace("''", "'"))
        if t.kind == "bracket":
            self.take()
            return Column(t.text[1:-1].strip())
        if t.kind == "quoted":
            self.take()
            return Column(t.text[1:-1].replace('""', '"'))
        if t.kind == "op" and t.text == "(":
            self.take()
            node = self.or_()
            self.expect(")")
            return node
        if t.kind == "ident":
            low = t.text.lower()
            if low in ("true", "false"):
                self.take()
                return Literal(low == "true")
            if low == "null":
                self.take()
                return Literal(None)
            if low in KEYWORDS:
                raise ExpressionError(f"'{t.text}' cannot stand here (position {t.pos + 1}).")
            self.take()
            if self.tok.text == "(":
                self.take()
                args = []
                if self.tok.text != ")":
                    args.append(self.or_())
                    while self.tok.text == ",":
                        self.take()
                        args.append(self.or_())
                self.expect(")")
                if low not in FUNCTIONS:
                    raise ExpressionError(f"Unknown function {t.text}(). Known: {', '.join(sorted(FUNCTIONS))}.")
                return Call(low, tuple(args))
            return Column(t.text)
        if t.kind == "end":
            raise ExpressionError("The expression ends too early.")
        raise ExpressionError(f"Unexpected '{t.text}' at position {t.pos + 1}.")


# --- functions ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Fn:
    min_args: int
    max_args: int | None
    result: Callable[[list[str]], str]
    arg_types: Callable[[int, list[str]], str]  # the type each argument is cast to
    sql: Callable[[Dialect, list[str]], str]
    py: Callable[..., Any]


def _all(t: str):
    return lambda i, types: t


def _first_type(types: list[str]) -> str:
    known = [t for t in types if t not in (NULL, ANY)]
    return known[0] if known else NULL


def _common(i: int, types: list[str]) -> str:
    t = _first_type(types)
    return t if t != NULL else ANY


def _py_round(x, n=0):
    if x is None or n is None:
        return None
    q = Decimal(str(x)).quantize(Decimal(1).scaleb(-int(n)), rounding="ROUND_HALF_UP")
    return float(q)


def _py_substr(s, start, length=None):
    if s is None or start is None:
        return None
    start = int(start)
    begin = max(start - 1, 0)
    if length is None:
        return s[begin:]
    end = start - 1 + int(length)
    return s[begin:max(end, begin)]


def _nn(fn):
    """A Python function that returns NULL when any argument is NULL."""
    return lambda *a: None if any(x is None for x in a) else fn(*a)


FUNCTIONS: dict[str, _Fn] = {
    "if": _Fn(3, 3, lambda t: _first_type(t[1:]), lambda i, t: BOOLEAN if i == 0 else _common(i, t[1:]),
              lambda d, a: f"CASE WHEN {a[0]} THEN {a[1]} ELSE {a[2]} END",
              lambda c, a, b: a if c is True else b),
    "coalesce": _Fn(1, None, _first_type, _common, lambda d, a: f"COALESCE({', '.join(a)})",
                    lambda *a: next((x for x in a if x is not None), None)),
    "nullif": _Fn(2, 2, _first_type, _common, lambda d, a: f"NULLIF({a[0]}, {a[1]})",
                  lambda a, b: None if a is not None and b is not None and a == b else a),
    "abs": _Fn(1, 1, lambda t: NUMBER, _all(NUMBER), lambda d, a: f"abs({a[0]})", _nn(abs)),
    "round": _Fn(1, 2, lambda t: NUMBER, _all(NUMBER),
                 lambda d, a: f"round({a[0]}, CAST({a[1] if len(a) > 1 else 0} AS INTEGER))" if d.is_duckdb
                 else f"CAST(round(CAST({a[0]} AS numeric), CAST({a[1] if len(a) > 1 else 0} AS integer)) AS {d.double})",
                 _py_round),
    "floor": _Fn(1, 1, lambda t: NUMBER, _all(NUMBER), lambda d, a: f"floor({a[0]})", _nn(lambda x: float(math.floor(x)))),
    "ceil": _Fn(1, 1, lambda t: NUMBER, _all(NUMBER), lambda d, a: f"ceil({a[0]})", _nn(lambda x: float(math.ceil(x)))),
    "min": _Fn(2, None, _first_type, _common, lambda d, a: f"LEAST({', '.join(a)})",
               lambda *a: min((x for x in a if x is not None), default=None) if d_least_ignores_null() else _nn(min)(*a)),
    "max": _Fn(2, None, _first_type, _common, lambda d, a: f"GREATEST({', '.join(a)})",
               lambda *a: max((x for x in a if x is not None), default=None) if d_least_ignores_null() else _nn(max)(*a)),
    "upper": _Fn(1, 1, lambda t: TEXT, _all(TEXT), lambda d, a: f"upper({a[0]})", _nn(str.upper)),
    "lower": _Fn(1, 1, lambda t: TEXT, _all(TEXT), lambda d, a: f"lower({a[0]})", _nn(str.lower)),
    "trim": _Fn(1, 1, lambda t: TEXT, _all(TEXT), lambda d, a: f"trim({a[0]})", _nn(lambda s: s.strip(" "))),
    "length": _Fn(1, 1, lambda t: NUMBER, _all(TEXT), lambda d, a: f"length({a[0]})", _nn(len)),
    "substr": _Fn(2, 3, lambda t: TEXT, lambda i, t: TEXT if i == 0 else NUMBER,
                  lambda d, a: f"substr({a[0]}, CAST({a[1]} AS INTEGER)" + (f", CAST({a[2]} AS INTEGER))" if len(a) > 2 else ")"),
                  _py_substr),
    "replace": _Fn(3, 3, lambda t: TEXT, _all(TEXT), lambda d, a: f"replace({a[0]}, {a[1]}, {a[2]})",
                   _nn(lambda s, x, y: s.replace(x, y))),
    "concat": _Fn(1, None, lambda t: TEXT, _all(TEXT), lambda d, a: f"concat({', '.join(a)})",
                  lambda *a: "".join(x for x in a if x is not None)),
    "number": _Fn(1, 1, lambda t: NUMBER, _all(NUMBER), lambda d, a: a[0], lambda x: x),
    "text": _Fn(1, 1, lambda t: TEXT, _all(TEXT), lambda d, a: a[0], lambda x: x),
    "date": _Fn(1, 1, lambda t: DATE, _all(DATE), lambda d, a: a[0], lambda x: x),
    "year": _Fn(1, 1, lambda t: NUMBER, _all(DATE), lambda d, a: f"CAST(EXTRACT(YEAR FROM {a[0]}) AS {d.double})",
                _nn(lambda x: float(x.year))),
    "month": _Fn(1, 1, lambda t: NUMBER, _all(DATE), lambda d, a: f"CAST(EXTRACT(MONTH FROM {a[0]}) AS {d.double})",
                 _nn(lambda x: float(x.month))),
    "period": _Fn(1, 1, lambda t: TEXT, _all(DATE), lambda d, a: d.format_date(a[0], "%Y-%m"),
                  _nn(lambda x: f"{x.year:04d}-{x.month:02d}")),
}


def d_least_ignores_null() -> bool:
    # LEAST/GREATEST skip NULLs in both DuckDB and PostgreSQL; Python mirrors that.
    return True


# --- compiled expressions -----------------------------------------------------------------

class Expression:
    """A parsed expression. `columns` are the source columns it reads."""

    def __init__(self, text: str):
        self.text = text
        self.tree = _Parser(text).parse()

    @property
    def columns(self) -> set[str]:
        found: set[str] = set()

        def walk(n):
            if isinstance(n, Column):
                found.add(n.name)
            elif isinstance(n, Unary):
                walk(n.operand)
            elif isinstance(n, Binary):
                walk(n.left)
                walk(n.right)
            elif isinstance(n, Call):
                for a in n.args:
                    walk(a)
            elif isinstance(n, InList):
                walk(n.operand)
                for a in n.items:
                    walk(a)
            elif isinstance(n, IsNull):
                walk(n.operand)

        walk(self.tree)
        return found

    # types -------------------------------------------------------------------------------

    def result_type(self, column_types: dict[str, str]) -> str:
        return _Typer(column_types).type(self.tree)

    # SQL ---------------------------------------------------------------------------------

    def to_sql(self, dialect: Dialect, column_sql: dict[str, tuple[str, str]]) -> tuple[str, str]:
        """(SQL text, type). `column_sql` gives each column's SQL and value type."""
        return _Compiler(dialect, column_sql).compile(self.tree)

    # Python ------------------------------------------------------------------------------

    def evaluate(self, row: dict[str, Any]) -> Any:
        return _evaluate(self.tree, row)


class _Typer:
    def __init__(self, column_types: dict[str, str]):
        self.column_types = column_types

    def type(self, n) -> str:
        if isinstance(n, Literal):
            return _literal_type(n.value)
        if isinstance(n, Column):
            if n.name not in self.column_types:
                raise ExpressionError(f"The expression reads a column '{n.name}' that the source table does not have.",
                                      column=n.name)
            return self.column_types[n.name]
        if isinstance(n, Unary):
            self.type(n.operand)
            return BOOLEAN if n.op == "not" else NUMBER
        if isinstance(n, Binary):
            left, right = self.type(n.left), self.type(n.right)
            if n.op in ("and", "or") or n.op in ("=", "!=", "<", "<=", ">", ">="):
                return BOOLEAN
            if n.op in ("-", "+") and left in (DATE, TIMESTAMP):
                raise ExpressionError("Date arithmetic is not supported; compare dates or use year(), month(), period().")
            return NUMBER
        if isinstance(n, (InList, IsNull)):
            self.type(n.operand)
            for item in getattr(n, "items", ()):
                self.type(item)
            return BOOLEAN
        if isinstance(n, Call):
            fn = FUNCTIONS[n.name]
            if len(n.args) < fn.min_args or (fn.max_args is not None and len(n.args) > fn.max_args):
                want = f"{fn.min_args}" if fn.max_args == fn.min_args else f"{fn.min_args} or more" if fn.max_args is None else f"{fn.min_args} to {fn.max_args}"
                raise ExpressionError(f"{n.name}() takes {want} argument(s), not {len(n.args)}.")
            return fn.result([self.type(a) for a in n.args])
        raise ExpressionError("Unsupported expression.")


def _literal_type(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, (int, float, Decimal)):
        return NUMBER
    return TEXT


class _Compiler:
    def __init__(self, dialect: Dialect, column_sql: dict[str, tuple[str, str]]):
        self.d = dialect
        self.columns = column_sql

    def compile(self, n) -> tuple[str, str]:
        d = self.d
        if isinstance(n, Literal):
            t = _literal_type(n.value)
            if t == NUMBER:
                return d.number_literal(n.value), NUMBER
            return d.literal(n.value), t
        if isinstance(n, Column):
            if n.name not in self.columns:
                raise ExpressionError(f"The expression reads a column '{n.name}' that the source table does not have.",
                                      column=n.name)
            return self.columns[n.name]
        if isinstance(n, Unary):
            sql, t = self.compile(n.operand)
            if n.op == "not":
                return f"(NOT {d.cast(sql, t, BOOLEAN)})", BOOLEAN
            return f"(-{d.cast(sql, t, NUMBER)})", NUMBER
        if isinstance(n, Binary):
            (ls, lt), (rs, rt) = self.compile(n.left), self.compile(n.right)
            if n.op in ("and", "or"):
                return f"({d.cast(ls, lt, BOOLEAN)} {n.op.upper()} {d.cast(rs, rt, BOOLEAN)})", BOOLEAN
            if n.op in ("=", "!=", "<", "<=", ">", ">="):
                t = _compare_type(lt, rt)
                op = "<>" if n.op == "!=" else n.op
                return f"({d.cast(ls, lt, t)} {op} {d.cast(rs, rt, t)})", BOOLEAN
            a, b = d.cast(ls, lt, NUMBER), d.cast(rs, rt, NUMBER)
            if n.op == "/":
                return f"({a} / NULLIF({b}, 0))", NUMBER
            if n.op == "%":
                return f"(CAST({a} AS {d.double}) - CAST({b} AS {d.double}) * trunc({a} / NULLIF({b}, 0)))", NUMBER
            return f"({a} {n.op} {b})", NUMBER
        if isinstance(n, IsNull):
            sql, _ = self.compile(n.operand)
            return f"({sql} IS {'NOT ' if n.negate else ''}NULL)", BOOLEAN
        if isinstance(n, InList):
            sql, t = self.compile(n.operand)
            items = [self.compile(i) for i in n.items]
            common = t if t not in (NULL, ANY) else _first_type([it for _, it in items])
            if common in (NULL, ANY):
                common = TEXT
            values = ", ".join(d.cast(s, it, common) for s, it in items)
            return f"({d.cast(sql, t, common)} {'NOT ' if n.negate else ''}IN ({values}))", BOOLEAN
        if isinstance(n, Call):
            fn = FUNCTIONS[n.name]
            if len(n.args) < fn.min_args or (fn.max_args is not None and len(n.args) > fn.max_args):
                raise ExpressionError(f"{n.name}() takes a different number of arguments.")
            compiled = [self.compile(a) for a in n.args]
            types = [t for _, t in compiled]
            args = []
            for i, (s, t) in enumerate(compiled):
                want = fn.arg_types(i, types)
                args.append(d.cast(s, t, want) if want not in (ANY,) else s)
            return fn.sql(d, args), fn.result(types)
        raise ExpressionError("Unsupported expression.")


def _compare_type(lt: str, rt: str) -> str:
    if lt == rt:
        return lt if lt not in (NULL, ANY) else TEXT
    for t in (TIMESTAMP, DATE, NUMBER, BOOLEAN):
        if t in (lt, rt):
            return t
    return TEXT


# --- Python evaluation (NULL rules as in SQL) ------------------------------------------------

def _num(x):
    if x is None:
        return None
    if isinstance(x, bool):
        return 1.0 if x else 0.0
    if isinstance(x, (int, float, Decimal)):
        return float(x)
    try:
        return float(str(x).strip().replace(",", ""))
    except ValueError:
        return None


def _text(x):
    if x is None:
        return None
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, dt.datetime):
        return x.isoformat(timespec="seconds")
    return str(x)


def _date(x):
    if x is None:
        return None
    if isinstance(x, dt.datetime):
        return x.date()
    if isinstance(x, dt.date):
        return x
    try:
        return dt.date.fromisoformat(str(x).strip()[:10])
    except ValueError:
        return None


def _bool(x):
    if x is None or isinstance(x, bool):
        return x
    if isinstance(x, (int, float, Decimal)):
        return x != 0
    s = str(x).strip().lower()
    return True if s in ("true", "t", "yes", "y", "1", "on") else False if s in ("false", "f", "no", "n", "0", "off") else None


_PY_CAST = {NUMBER: _num, TEXT: _text, DATE: _date, TIMESTAMP: lambda x: x, BOOLEAN: _bool}


def _py_type(x) -> str:
    if x is None:
        return NULL
    if isinstance(x, bool):
        return BOOLEAN
    if isinstance(x, (int, float, Decimal)):
        return NUMBER
    if isinstance(x, dt.datetime):
        return TIMESTAMP
    if isinstance(x, dt.date):
        return DATE
    return TEXT


def _evaluate(n, row: dict[str, Any]) -> Any:
    if isinstance(n, Literal):
        return float(n.value) if isinstance(n.value, int) and not isinstance(n.value, bool) else n.value
    if isinstance(n, Column):
        if n.name not in row:
            raise ExpressionError(f"The expression reads a column '{n.name}' that the row does not have.", column=n.name)
        value = row[n.name]
        return float(value) if isinstance(value, Decimal) else value
    if isinstance(n, Unary):
        v = _evaluate(n.operand, row)
        if n.op == "not":
            b = _bool(v)
            return None if b is None else not b
        v = _num(v)
        return None if v is None else -v
    if isinstance(n, Binary):
        if n.op in ("and", "or"):
            a, b = _bool(_evaluate(n.left, row)), _bool(_evaluate(n.right, row))
            if n.op == "and":
                if a is False or b is False:
                    return False
                return None if a is None or b is None else True
            if a is True or b is True:
                return True
            return None if a is None or b is None else False
        a, b = _evaluate(n.left, row), _evaluate(n.right, row)
        if n.op in ("=", "!=", "<", "<=", ">", ">="):
            t = _compare_type(_py_type(a), _py_type(b))
            a, b = _PY_CAST[t](a), _PY_CAST[t](b)
            if a is None or b is None:
                return None
            return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[n.op]
        a, b = _num(a), _num(b)
        if a is None or b is None:
            return None
        if n.op == "+":
            return a + b
        if n.op == "-":
            return a - b
        if n.op == "*":
            return a * b
        if b == 0:
            return None
        if n.op == "/":
            return a / b
        return a - b * math.trunc(a / b)
    if isinstance(n, IsNull):
        v = _evaluate(n.operand, row)
        return (v is not None) if n.negate else (v is None)
    if isinstance(n, InList):
        v = _evaluate(n.operand, row)
        items = [_evaluate(i, row) for i in n.items]
        t = _py_type(v) if v is not None else _first_type([_py_type(i) for i in items])
        t = TEXT if t in (NULL, ANY) else t
        v = _PY_CAST[t](v)
        if v is None:
            return None
        cast = [_PY_CAST[t](i) for i in items]
        if v in cast:
            return not n.negate
        if any(c is None for c in cast):
            return None
        return n.negate
    if isinstance(n, Call):
        fn = FUNCTIONS[n.name]
        values = [_evaluate(a, row) for a in n.args]
        types = [_py_type(v) for v in values]
        cast = []
        for i, v in enumerate(values):
            want = fn.arg_types(i, types)
            cast.append(_PY_CAST[want](v) if want in _PY_CAST else v)
        return fn.py(*cast)
    raise ExpressionError("Unsupported expression.")


def parse(text: str) -> Expression:
    """Parse an expression; ExpressionError says where it is wrong."""
    return Expression(text)
