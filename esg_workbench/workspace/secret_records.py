"""When each connector's keyring secret was last set, and its rotation period
(connector_secrets). Never the secret: that lives in the keyring only (credentials.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from esg_workbench.workspace.database import Workspace
from esg_workbench.workspace.schema import connector_secrets as table


@dataclass(frozen=True)
class SecretRecord:
    connector_id: str
    set_at: dt.datetime | None  # naive UTC; None: set before this was recorded
    rotation_days: int | None  # None: no rotation period


def _where(ws: Workspace, connector_id: str):
    return (table.c.organization_id == ws.organization_id, table.c.connector_id == connector_id)


def _upsert(ws: Workspace, conn: sa.Connection, connector_id: str, **values) -> None:
    # select first: DuckDB's driver does not report an UPDATE's row count reliably
    if conn.execute(sa.select(table.c.connector_id).where(*_where(ws, connector_id))).first() is None:
        conn.execute(sa.insert(table).values(organization_id=ws.organization_id, connector_id=connector_id,
                                             **values))
    else:
        conn.execute(sa.update(table).where(*_where(ws, connector_id)).values(**values))


def record_set(ws: Workspace, conn: sa.Connection, connector_id: str, at: dt.datetime) -> None:
    """The connector's secret was (re)placed in the keyring at `at`."""
    _upsert(ws, conn, connector_id, set_at=at)


def set_rotation_days(ws: Workspace, conn: sa.Connection, connector_id: str, days: int | None) -> None:
    _upsert(ws, conn, connector_id, rotation_days=days)


def forget(ws: Workspace, conn: sa.Connection, connector_id: str) -> None:
    conn.execute(sa.delete(table).where(*_where(ws, connector_id)))


def all_records(ws: Workspace, conn: sa.Connection) -> dict[str, SecretRecord]:
    rows = conn.execute(sa.select(table).where(table.c.organization_id == ws.organization_id))
    return {r.connector_id: SecretRecord(r.connector_id, r.set_at, r.rotation_days) for r in rows}
