"""What every command group shares: the exit codes, the Output (human text or --json),
plain-text tables and the way a group adds its actions. Command modules import from here,
never from each other."""

from __future__ import annotations

import datetime as dt
import json
import sys
from decimal import Decimal
from typing import Any

from esg_workbench.core.errors import EsgError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_CANCELLED = 0, 1, 2, 3, 4


class UsageError(EsgError):
    """A value on the command line is wrong (exit 2, like argparse's own errors)."""


def json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "__dict__"):
        return value.__dict__
    return str(value)


def dump_json(data: Any) -> str:
    return json.dumps(data, default=json_default, indent=2, ensure_ascii=False)


class Output:
    """A command's result goes to stdout (text or JSON); progress notes go to stderr and
    are left out under --json so that stdout stays one JSON document."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def emit(self, data: Any, text: str) -> None:
        print(dump_json(data) if self.as_json else text)

    def info(self, text: str) -> None:
        if not self.as_json:
            print(text, file=sys.stderr, flush=True)


def plain(value: Any) -> str:
    """A value as a person reads it: no Python reprs (tuples, dicts, None, microseconds)."""
    if value is None:
        return "none"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (tuple, list, set)):
        return ", ".join(plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {plain(v)}" for k, v in value.items()) or "none"
    return str(value)


def table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def command_group(sub, name: str, help: str, common):
    """`esg-workbench NAME ACTION ...`: adds the command NAME and returns
    `action(action_name, func, help) -> parser` that adds one action to it (taking the
    common options, run by `func`); the caller adds the action's own arguments."""
    group = sub.add_parser(name, help=help)
    actions = group.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)

    def action(action_name: str, func, action_help: str):
        parser = actions.add_parser(action_name, parents=[common], help=action_help)
        parser.set_defaults(func=func)
        return parser

    return action
