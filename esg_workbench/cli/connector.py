"""`esg-workbench connector add|list|validate|discover|remove`."""

from __future__ import annotations

import sys
from typing import Any

from esg_workbench.cli.output import Output, UsageError, table


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"'{pair}' is not key=value.", hint="Write options as --option host=db.example.com")
        if key.strip() == "password":
            raise UsageError("Passwords are not accepted as options (they would show in shell history).",
                              hint="Use --password-stdin, e.g.: printf %s \"$PW\" | esg-workbench connector add ... --password-stdin")
        options[key.strip()] = value
    return options


def cmd_connector_add(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    from esg_workbench.connectors.options import check_options
    from esg_workbench.core.errors import ConfigError

    options = _parse_options(args.option)
    try:
        check_options(args.type, options)
    except ConfigError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    password = sys.stdin.read().rstrip("\r\n") if args.password_stdin else None
    record = operations.add_connector(ws, args.name, args.type, options, password)
    out.emit({"id": record.id, "name": record.name, "type": record.type, "config": record.config},
             f"Added connector '{record.name}' ({record.type})." + (" Password stored in the keyring." if password else ""))
    return 0


def cmd_connector_list(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    records = operations.list_connectors(ws)
    out.emit([{"id": r.id, "name": r.name, "type": r.type, "status": r.status, "config": r.config} for r in records],
             table([[r.name, r.type, r.status, r.load_type] for r in records], ["name", "type", "status", "load"])
             if records else "No connectors yet. Add one with: esg-workbench connector add NAME --type postgres ...")
    return 0


def cmd_connector_validate(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    message = operations.validate_connector(ws, args.name)
    out.emit({"ok": True, "message": message}, message)
    return 0


def cmd_connector_remove(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    operations.remove_connector(ws, args.name)
    out.emit({"removed": args.name}, f"Removed connector '{args.name}' and its keyring entry.")
    return 0


def cmd_connector_discover(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    result = operations.discover_connector(ws, args.name, tables=args.table, sample_rows=args.sample_rows,
                                           sample_mode=args.sample_mode, progress=out.info)
    data = {
        "tables": [{
            "schema": t.stream.schema, "table": t.stream.table, "row_estimate": t.row_estimate,
            "primary_key": t.primary_key,
            "columns": [c.to_json() for c in t.columns],
            "foreign_keys": [f.__dict__ for f in t.foreign_keys],
            "sample_rows": t.sample_rows,
        } for t in result.tables],
        "drift": {k: v.__dict__ for k, v in result.drift.items()},
        "unreadable": result.unreadable,
        "notes": result.notes,
    }
    lines = [table([[t.stream.qualified, len(t.columns), ",".join(t.primary_key), t.row_estimate,
                      "" if t.sample_rows is None else len(t.sample_rows)] for t in result.tables],
                    ["table", "columns", "primary key", "rows (est.)", "samples"])]
    for stream, drift in result.drift.items():
        lines.append(f"Drift in {stream}: {drift.describe()}")
    for stream, notes in result.notes.items():  # what was detected (file sources: encoding, formats...)
        lines += [f"{stream}: {note}" for note in notes]
    for stream, error in result.unreadable.items():
        lines.append(f"Could not read {stream} (it stays in the sync, which tries it again): {error}")
    out.emit(data, "\n".join(lines))
    return 0


def cmd_connector_set_password(ws, args, out: Output) -> int:
    """Rotate a secret: tried on the source first; a refused one keeps the old (sync/rotation.py)."""
    from esg_workbench.core.errors import ConfigError
    from esg_workbench.sync import rotation

    if not args.password_stdin:
        raise ConfigError("Give the new password on standard input with --password-stdin.",
                          hint="printf %s \"$PW\" | esg-workbench connector set-password NAME --password-stdin")
    age = rotation.set_password(ws, args.name, sys.stdin.read().rstrip("\r\n"))
    out.emit({"connector": age.connector, "set_at": age.set_at, "rotation_days": age.rotation_days},
             f"The source accepted the new password of '{age.connector}'; it replaced the old one in the keyring "
             f"({age.set_at:%Y-%m-%d %H:%M} UTC).")
    return 0


def cmd_connector_rotation(ws, args, out: Output) -> int:
    from esg_workbench.sync import rotation

    age = rotation.set_rotation_period(ws, args.name, args.days)
    out.emit({"connector": age.connector, "rotation_days": age.rotation_days},
             f"Health warns when the secret of '{age.connector}' is older than {age.rotation_days} days."
             if age.rotation_days else f"No rotation period for '{age.connector}'.")
    return 0


def _options_by_type() -> str:
    from esg_workbench.connectors.options import describe_keys
    from esg_workbench.connectors.registry import connector_types

    from esg_workbench.connectors.options import LOAD_OPTIONS

    lines = ["options of each type (--option KEY=VALUE; * = required):"]
    lines += [f"  {t:<11} {describe_keys(t, loading=False)}" for t in connector_types()]
    lines += [f"  {'every type':<11} {', '.join(LOAD_OPTIONS)} (how the tables are loaded)"]
    return "\n".join(lines)


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("connector",)


def add_commands(sub, common) -> None:
    import argparse

    from esg_workbench.connectors.registry import connector_types

    con = sub.add_parser("connector", help="add, list, validate, discover or remove connectors")
    csub = con.add_subparsers(dest="connector_command", metavar="ACTION", required=True)
    p = csub.add_parser("add", parents=[common], help="add a connector", epilog=_options_by_type(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="a name of your choice, e.g. erp-production")
    p.add_argument("--type", required=True, metavar="TYPE",
                   help="one of: " + ", ".join(connector_types()))
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a setting of the connector (repeatable); the keys of each type are listed below. "
                        "Loading: load_type (full|delta), cursor_field, chunk_strategy (time|id|auto), "
                        "window (day|week|month), chunk_size, lookback (e.g. 15m)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input into the keyring")
    p.set_defaults(func=cmd_connector_add)
    p = csub.add_parser("list", parents=[common], help="list connectors")
    p.set_defaults(func=cmd_connector_list)
    p = csub.add_parser("validate", parents=[common], help="test the connection")
    p.add_argument("name", help="the connector's name (see: esg-workbench connector list)")
    p.set_defaults(func=cmd_connector_validate)
    p = csub.add_parser("discover", parents=[common], help="discover tables, columns, keys and samples")
    p.add_argument("name", help="the connector's name (see: esg-workbench connector list)")
    p.add_argument("--table", action="append", help="only this table (repeatable); samples load for these")
    p.add_argument("--sample-rows", type=int, default=100, metavar="N",
                   help="sample rows per table (default 100; 0 for none). For more than 50 tables, samples "
                        "load only for the tables named with --table, or later on demand")
    p.add_argument("--sample-mode", choices=("first", "random"), default="first",
                   help="first: the first N rows (default); random: N rows picked at random (PostgreSQL: "
                        "TABLESAMPLE SYSTEM for large tables; MySQL/MariaDB: a RAND() filter; SQLite, DuckDB)")
    p.set_defaults(func=cmd_connector_discover)
    p = csub.add_parser("set-password", parents=[common],
                        help="replace a connector's password: tried on the source first, the old one kept if refused")
    p.add_argument("name", help="the connector's name (see: esg-workbench connector list)")
    p.add_argument("--password-stdin", action="store_true", help="read the new password from standard input")
    p.set_defaults(func=cmd_connector_set_password)
    p = csub.add_parser("rotation", parents=[common],
                        help="a rotation period: Health warns when the secret is older")
    p.add_argument("name", help="the connector's name (see: esg-workbench connector list)")
    p.add_argument("--days", type=int, required=True, help="days (0: no rotation period)")
    p.set_defaults(func=cmd_connector_rotation)
    p = csub.add_parser("remove", parents=[common], help="remove a connector and its keyring entry")
    p.add_argument("name", help="the connector's name (see: esg-workbench connector list)")
    p.set_defaults(func=cmd_connector_remove)
