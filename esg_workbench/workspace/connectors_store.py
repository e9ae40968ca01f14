"""Connector records: what a source is and how to load it. Never a secret."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError, NotFound
from esg_workbench.core.specs import SECRET_OPTIONS
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
        raise ConfigError(f"A connector named '{name}' already exists.", hint="Pick another name, or edit the existing one.")
    config = _clean(config)
    now = utcnow()
    record = ConnectorRecord(id=uuid.uuid4().hex, name=name, type=type_, config=config,
                             load_type=config.get("load_type", "full"), created_at=now, updated_at=now)
    conn.execute(sa.insert(table).values(
        id=record.id, organization_id=workspace.organization_id, type=type_, name=name,
        config=json.dumps(config, sort_keys=True), load_type=record.load_type, status="new",
        created_at=now, updated_at=now,
    ))
    return record


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
           status_message: str | None = None) -> None:
    values: dict[str, Any] = {"updated_at": utcnow()}
    if name is not None:
        values["name"] = name.strip()
    if config is not None:
        config = _clean(config)
        values["config"] = json.dumps(config, sort_keys=True)
        values["load_type"] = config.get("load_type", "full")
    if status is not None:
        values["status"] = status
        values["status_message"] = status_message
    conn.execute(sa.update(table).where(table.c.id == connector_id,
                                        table.c.organization_id == workspace.organization_id).values(**values))


def delete(workspace: Workspace, conn: sa.Connection, connector_id: str) -> None:
    """Remove the connector, its schema cache and checkpoints. Logs, landed data and the
    audit chain stay: they are the record of what happened."""
    from esg_workbench.workspace import schema

    for t in (schema.source_schema_cache, schema.connector_sync_state, schema.connector_sync_chunks):
        conn.execute(sa.delete(t).where(t.c.connector_id == connector_id))
    conn.execute(sa.delete(table).where(table.c.id == connector_id))
