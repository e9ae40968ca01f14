"""Connector records: what a source is and how to load it. Never a secret."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError, NotFound
from esg_workbench.core.specs import SECRET_OPTIONS
from esg_workbench.workspace import concurrency
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import connectors as table


@dataclass
class ConnectorRecord:
    id: str
    name: str
    type: str
    config: dict[str, Any] = field(default_factory=dict)
    load_type: str = "full"
    status: str = "new"
    status_message: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


def _record(row) -> ConnectorRecord:
    return ConnectorRecord(
        id=row.id, name=row.name, type=row.type, config=json.loads(row.config), load_type=row.load_type,
        status=row.status, status_message=row.status_message, created_at=row.created_at, updated_at=row.updated_at,
    )


def _clean(config: dict[str, Any]) -> dict[str, Any]:
    for key in SECRET_OPTIONS:
        if key in config:
            raise ConfigError(f"'{key}' cannot be stored in the connector settings; it goes to the keyring.")
    return {k: v for k, v in config.items() if v not in (None, "")}


def add(workspace: Workspace, conn: sa.Connection, name: str, type_: str, config: dict[str, Any]) -> ConnectorRecord:
    name = name.strip()
    if not name:
        raise ConfigError("A connector needs a name.")
    exists = conn.execute(sa.select(table.c.id).where(
        table.c.organization_id == workspace.organization_id, table.c.name == name)).first()
    if exists:
        raise _name_taken(name)
    config = _clean(config)
    now = utcnow()
    record = ConnectorRecord(id=uuid.uuid4().hex, name=name, type=type_, config=config,
                             load_type=config.get("load_type", "full"), created_at=now, updated_at=now)
    with _name_guard(workspace, conn, name):
        conn.execute(sa.insert(table).values(
            id=record.id, organization_id=workspace.organization_id, type=type_, name=name,
            config=json.dumps(config, sort_keys=True), load_type=record.load_type, status="new",
            created_at=now, updated_at=now,
        ))
    return record


def _name_taken(name: str) -> ConfigError:
    return ConfigError(f"A connector named '{name}' already exists.", hint="Pick another name, or edit the existing one.")


@contextlib.contextmanager
def _name_guard(workspace: Workspace, conn: sa.Connection, name: str) -> Iterator[None]:
    """Two analysts adding (or renaming to) one name at once: the check above passes for
    both, and PostgreSQL's unique index stops the second at its INSERT once the first has
    committed. Inside a savepoint, so that this becomes the same plain "already exists"
    as the check's, and the caller's transaction stays usable. (DuckDB has one process,
    whose writers take turns: the check suffices.)"""
    if workspace.is_duckdb:
        yield
        return
    try:
        with conn.begin_nested():
            yield
    except sa.exc.IntegrityError as exc:
        if concurrency.sqlstate(exc) == concurrency.UNIQUE_VIOLATION:
            raise _name_taken(name) from None
        raise


def get(workspace: Workspace, conn: sa.Connection, name_or_id: str) -> ConnectorRecord:
    row = conn.execute(sa.select(table).where(
        table.c.organization_id == workspace.organization_id,
        sa.or_(table.c.name == name_or_id, table.c.id == name_or_id),
    )).first()
    if row is None:
        names = [r.name for r in list_all(workspace, conn)]
        raise NotFound(
            f"There is no connector named '{name_or_id}'.",
            hint=("Known connectors: " + ", ".join(names)) if names else "Add one with: esg-workbench connector add",
        )
    return _record(row)


def list_all(workspace: Workspace, conn: sa.Connection) -> list[ConnectorRecord]:
    rows = conn.execute(sa.select(table).where(table.c.organization_id == workspace.organization_id).order_by(table.c.name))
    return [_record(r) for r in rows]


def update(workspace: Workspace, conn: sa.Connection, connector_id: str, *, name: str | None = None,
           config: dict[str, Any] | None = None, status: str | None = None,
           status_message: str | None = None, expected_updated_at: dt.datetime | None = None) -> None:
    """Change a connector. `updated_at` is the time of the last change of its definition
    (name, settings); a status change (sync ended, validated) leaves it alone.

    Two analysts editing one connector: pass the `updated_at` of the record the editor
    was opened with as `expected_updated_at`. If someone else saved the connector since,
    nothing is written and `ChangedElsewhere` says so (reload, then edit again) rather
    than the later save silently undoing the earlier one."""
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = name.strip()
    if config is not None:
        config = _clean(config)
        values["config"] = json.dumps(config, sort_keys=True)
        values["load_type"] = config.get("load_type", "full")
    if values:
        values["updated_at"] = utcnow()
    if status is not None:
        values["status"] = status
        values["status_message"] = status_message
    where = (table.c.id == connector_id, table.c.organization_id == workspace.organization_id)
    if expected_updated_at is not None:
        current = sa.select(table.c.name, table.c.updated_at).where(*where)
        # FOR UPDATE: a concurrent editor waits here until we commit, then sees our time
        row = conn.execute(current if workspace.is_duckdb else current.with_for_update()).first()
        if row is None:
            raise NotFound("This connector was removed by someone else meanwhile.",
                           hint="Close the editor; add the connector again if it is still needed.")
        if row.updated_at != expected_updated_at:
            raise concurrency.ChangedElsewhere(
                f"The connector '{row.name}' was changed by someone else at {row.updated_at:%H:%M:%S} UTC "
                "since you opened it; your changes were not saved.")
    if not values:
        return
    if "name" in values and conn.execute(sa.select(table.c.id).where(
            table.c.organization_id == workspace.organization_id, table.c.name == values["name"],
            table.c.id != connector_id)).first():
        raise _name_taken(values["name"])
    with _name_guard(workspace, conn, values.get("name", "")) if "name" in values else contextlib.nullcontext():
        conn.execute(sa.update(table).where(*where).values(**values))


def delete(workspace: Workspace, conn: sa.Connection, connector_id: str) -> None:
    """Remove the connector, its schema cache and checkpoints. Logs, landed data and the
    audit chain stay: they are the record of what happened."""
    from esg_workbench.workspace import schema

    for t in (schema.source_schema_cache, schema.connector_sync_state, schema.connector_sync_chunks):
        conn.execute(sa.delete(t).where(t.c.connector_id == connector_id))
    conn.execute(sa.delete(table).where(table.c.id == connector_id))
