"""Per-table load settings (cursor field, primary key, load type, chunking, deletes),
kept in the connector option `tables`, and the cursor columns discovery proposes.

Shared by the CLI (`esg-workbench table ...`) and the app's table settings dialog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError
from esg_workbench.core.specs import LOAD_OPTIONS, TABLE_SETTINGS, LoadSettings, StreamRef, TableInfo
from esg_workbench.workspace import connectors_store, schema_cache
from esg_workbench.workspace.database import Workspace

#: column names that usually hold "when the row last changed", best first
_CURSOR_NAMES = re.compile(
    r"^(updated_at|updated_on|last_updated|last_update|updated|update_time|update_date|modified_at|modified_on|"
    r"modified|last_modified|lastmodified|modify_time|modification_time|changed_at|changed_on|last_changed|"
    r"change_date|changed|mtime|ts|timestamp|row_version|rowversion|version|_etl_loaded_at|record_updated)$",
    re.IGNORECASE)
_CURSOR_HINTS = re.compile(r"(updat|modif|chang|rowversion)", re.IGNORECASE)
_TEMPORAL = {"timestamp", "timestamptz", "date"}


def cursor_candidates(info: TableInfo) -> list[str]:
    """Columns fit to be a delta cursor, most likely first: a well-known name on a
    timestamp (or an integer version), then other timestamps named like a change time,
    then rowversion columns (SQL Server) whatever their name. Created-at columns are left
    out (they never move on an update)."""
    def fits(c) -> bool:
        kind = c.type.lower()
        if c.family in _TEMPORAL:
            return True
        if "rowversion" in kind or kind == "timestamp":  # SQL Server's rowversion
            return True
        return c.family == "integer" and re.search(r"version", c.name, re.IGNORECASE) is not None

    named = [c.name for c in info.columns if _CURSOR_NAMES.match(c.name) and fits(c)]
    hinted = [c.name for c in info.columns if c.name not in named and _CURSOR_HINTS.search(c.name) and fits(c)]
    versions = [c.name for c in info.columns if c.name not in named + hinted
                and ("rowversion" in c.type.lower() or c.type.lower() == "timestamp" and c.family != "timestamp")]
    return sorted(named, key=lambda n: _CURSOR_NAMES.pattern.lower().find(n.lower())) + hinted + versions


@dataclass
class TableSettings:
    stream: str
    own: dict[str, Any]  # the table's own settings
    declared_key: list[str] = field(default_factory=list)
    cursor_candidates: list[str] = field(default_factory=list)
    discovered: bool = True

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _normalize(settings: dict[str, Any]) -> dict[str, Any]:
    """Typed values, None dropped (unset)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in LOAD_OPTIONS:
            raise ConfigError(f"Unknown table setting '{key}'.", hint=f"Table settings are: {', '.join(LOAD_OPTIONS)}.")
        if value in (None, ""):
            continue
        if key == "primary_key" and isinstance(value, str):
            value = [k.strip() for k in value.split(",") if k.strip()]
        if key in ("chunk_size", "deletes_every"):
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key} must be a positive whole number, not '{value}'.") from None
        if key == "detect_deletes" and isinstance(value, str):
            value = value.strip().lower() in ("true", "yes", "1", "on")
        out[key] = value
    LoadSettings.from_options(out, per_table=True)  # the same checks as a connector's settings
    return out


def _resolve(workspace: Workspace, conn, record, table: str) -> tuple[str, TableInfo | None]:
    """The table's qualified name as discovered (a bare name finds its schema)."""
    cached = schema_cache.load(workspace, conn, record.id)
    for info in cached:
        if table in (info.stream.qualified, info.stream.table):
            return info.stream.qualified, info
    return table, None


def _check_columns(info: TableInfo, own: dict[str, Any]) -> None:
    name = info.stream.qualified
    cursor = own.get("cursor_field")
    if cursor and info.column(cursor) is None:
        raise ConfigError(f"{name} has no column '{cursor}' to use as cursor_field.",
                          hint=f"Columns that fit: {', '.join(cursor_candidates(info)) or 'none found'}.")
    key = own.get("primary_key")
    if key:
        missing = [k for k in key if info.column(k) is None]
        if missing:
            raise ConfigError(f"{name} has no column {', '.join(missing)} for its primary_key.")
        if info.primary_key and list(key) != info.primary_key:
            raise ConfigError(f"{name} declares the primary key ({', '.join(info.primary_key)}); a primary_key "
                              "can only be set for tables that declare none.")


def set_table_settings(workspace: Workspace, connector: str, table: str, settings: dict[str, Any], *,
                       replace: bool = False) -> TableSettings:
    """Merge (or with `replace`, set) a table's own settings. A value of None clears that
    setting; an empty result removes the table's entry."""
    with workspace.transaction() as conn:
        record = connectors_store.get(workspace, conn, connector)
        name, info = _resolve(workspace, conn, record, table)
        tables = dict(record.config.get(TABLE_SETTINGS) or {})
        own = {} if replace else dict(tables.get(name) or {})
        cleared = [k for k, v in settings.items() if v in (None, "")]
        own.update(settings)
        for key in cleared:
            own.pop(key, None)
        own = _normalize(own)
        if info is not None:
            _check_columns(info, own)
        if own:
            tables[name] = own
        else:
            tables.pop(name, None)
        config = {**record.config, TABLE_SETTINGS: tables}  # (kept when empty: the connector may rely on it)
        connectors_store.update(workspace, conn, record.id, config=config)
        chain.append(workspace, conn, "connector.table_settings", metadata={
            "connector_id": record.id, "stream": name, "settings": own})
    return TableSettings(name, own, info.primary_key if info else [], cursor_candidates(info) if info else [],
                         info is not None)


def list_table_settings(workspace: Workspace, connector: str) -> list[TableSettings]:
    """Every discovered table with its own settings and cursor candidates, then any
    table with settings that discovery has not seen (yet)."""
    with workspace.read() as conn:
        record = connectors_store.get(workspace, conn, connector)
        cached = schema_cache.load(workspace, conn, record.id)
    tables = record.config.get(TABLE_SETTINGS) or {}
    out = []
    for info in cached:
        own = tables.get(info.stream.qualified) or tables.get(info.stream.table) or {}
        out.append(TableSettings(info.stream.qualified, own, info.primary_key, cursor_candidates(info)))
    known = {t.stream for t in out} | {StreamRef.parse(t.stream).table for t in out}
    out += [TableSettings(name, own, discovered=False) for name, own in tables.items() if name not in known]
    return out
