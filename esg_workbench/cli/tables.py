"""`esg-workbench table show|set|clear`: per-table load settings of a connector."""

from __future__ import annotations

from esg_workbench.cli.output import Output, command_group, table

_FLAGS = (  # (flag, setting, help)
    ("--load-type", "load_type", "full or delta"),
    ("--cursor-field", "cursor_field", "the column a delta load pages by (e.g. modified)"),
    ("--primary-key", "primary_key", "key columns, comma-separated, for a table that declares none"),
    ("--chunk-size", "chunk_size", "rows per chunk"),
    ("--chunk-strategy", "chunk_strategy", "time, id or auto"),
    ("--window", "window", "day, week or month"),
    ("--lookback", "lookback", "re-read this much before the checkpoint (e.g. 15m)"),
    ("--detect-deletes", "detect_deletes", "yes: delta loads mark rows deleted in the source"),
    ("--deletes-every", "deletes_every", "look for deleted rows at most every N delta syncs"),
)


def _describe(settings) -> str:
    own = ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in settings.own.items()) or "connector settings"
    return own


def cmd_table_show(ws, args, out: Output) -> int:
    from esg_workbench.sync import table_settings

    rows = table_settings.list_table_settings(ws, args.connector)
    if args.table:
        rows = [r for r in rows if args.table in (r.stream, r.stream.split(".")[-1])]
    out.emit([r.to_json() for r in rows], table(
        [[r.stream + ("" if r.discovered else " (not discovered)"), _describe(r), ",".join(r.declared_key),
          ", ".join(r.cursor_candidates)] for r in rows],
        ["table", "settings", "declared key", "cursor candidates"]) if rows else
        "No tables discovered yet: run esg-workbench connector discover first.")
    return 0


def cmd_table_set(ws, args, out: Output) -> int:
    from esg_workbench.sync import table_settings

    given = {setting: getattr(args, setting) for _, setting, _ in _FLAGS if getattr(args, setting) is not None}
    if not given:
        from esg_workbench.core.errors import ConfigError

        raise ConfigError("Name at least one setting to change.", hint="e.g. --cursor-field modified --load-type delta")
    saved = table_settings.set_table_settings(ws, args.connector, args.table, given)
    out.emit(saved.to_json(), f"{saved.stream}: {_describe(saved)}")
    return 0


def cmd_table_clear(ws, args, out: Output) -> int:
    from esg_workbench.sync import table_settings

    saved = table_settings.set_table_settings(ws, args.connector, args.table, {}, replace=True)
    out.emit(saved.to_json(), f"{saved.stream}: back to the connector's settings")
    return 0


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("table",)


def add_commands(sub, common) -> None:
    action = command_group(sub, "table", "per-table load settings: cursor field, primary key, load type, chunks, "
                           "deletes", common)
    p = action("show", cmd_table_show, "tables with their settings and proposed cursor columns")
    p.add_argument("connector", help="the connector's name (see: esg-workbench connector list)")
    p.add_argument("table", nargs="?", help="only this table, by its name or schema.name (default: every table)")
    p = action("set", cmd_table_set, "set a table's own settings (others stay)")
    p.add_argument("connector", help="the connector's name (see: esg-workbench connector list)")
    p.add_argument("table", help="the table, by its name or schema.name")
    for flag, setting, text in _FLAGS:
        p.add_argument(flag, dest=setting, help=text)
    p = action("clear", cmd_table_clear, "drop a table's own settings")
    p.add_argument("connector", help="the connector's name (see: esg-workbench connector list)")
    p.add_argument("table", help="the table, by its name or schema.name")
