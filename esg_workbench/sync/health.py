"""The health of every connector at a glance: when it last synced, how stale its data
is, how many runs in a row failed, which chunks wait for a retry, and rows per sync.

A handful of grouped queries over all connectors (not one per connector, nor a read of
every log row): the health screen stays quick with many connectors and long histories.
No Qt: the Health tab, `esg-workbench health` and alerts share it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from esg_workbench.alerts import scrub
from esg_workbench.core.specs import ChunkStatus, SyncStatus
from esg_workbench.sync.engine import PASSWORD_MARKER
from esg_workbench.sync.rotation import SecretAge
from esg_workbench.workspace import connectors_store, secret_records
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import connector_sync_chunks as chunks
from esg_workbench.workspace.schema import connector_sync_logs as logs

#: how many recent runs the rows-per-sync history holds per connector
HISTORY_RUNS = 30
PROBLEM_STATUSES = (SyncStatus.FAILED.value, SyncStatus.PARTIAL_SUCCESS.value)


@dataclass
class SyncPoint:
    """One run in the rows-per-sync history."""

    run_id: int
    started_at: dt.datetime
    rows_written: int
    status: str

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "started_at": self.started_at.isoformat(),
                "rows_written": self.rows_written, "status": self.status}


@dataclass
class ConnectorHealth:
    connector_id: str
    name: str
    type: str
    status: str  # the connector's own status (validated, sync_failed, ...)
    last_success_at: dt.datetime | None
    last_run_status: str | None
    last_run_at: dt.datetime | None
    last_error: str | None  # of the last run, when it was not a success
    lag_seconds: float | None  # now − the last successful sync's finish; None: never synced
    failure_streak: int  # failed/partial runs since the last success
    failed_chunks_waiting: int  # failed chunks not yet retried, superseded or ignored
    rows_per_sync: list[SyncPoint] = field(default_factory=list)  # oldest first
    failed_chunks_ignored: int = 0  # failed chunks an analyst ignored (their rows still missing)
    has_secret: bool = False  # a password or key in the keyring
    secret_set_at: dt.datetime | None = None  # None: unknown (set before version 3) or no secret
    rotation_days: int | None = None
    secret_overdue: bool = False  # older than the rotation period (or of unknown age with one)

    @property
    def lag_text(self) -> str:
        return "never synced" if self.lag_seconds is None else plain_duration(self.lag_seconds)

    @property
    def needs_attention(self) -> bool:
        return self.failure_streak > 0 or self.failed_chunks_waiting > 0 or self.secret_overdue

    @property
    def secret_text(self) -> str:
        """'set 12 d ago', 'set 40 d ago, rotate every 30 d: overdue', 'no secret', ..."""
        if not self.has_secret:
            return "no secret"
        age = "set at an unknown time" if self.secret_set_at is None else \
            f"set {plain_duration((self._now - self.secret_set_at).total_seconds())} ago"
        if self.rotation_days:
            age += f", rotate every {self.rotation_days} d" + (": overdue" if self.secret_overdue else "")
        return age

    _now: dt.datetime = field(default_factory=utcnow, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "connector": self.name, "type": self.type, "status": self.status,
            "last_success_at": _iso(self.last_success_at), "last_run_status": self.last_run_status,
            "last_run_at": _iso(self.last_run_at), "last_error": self.last_error,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "lag": self.lag_text, "failure_streak": self.failure_streak,
            "failed_chunks_waiting": self.failed_chunks_waiting,
            "failed_chunks_ignored": self.failed_chunks_ignored,
            "rows_per_sync": [p.to_json() for p in self.rows_per_sync],
            "secret": {"has_secret": self.has_secret, "set_at": _iso(self.secret_set_at),
                       "rotation_days": self.rotation_days, "overdue": self.secret_overdue,
                       "text": self.secret_text},
        }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def plain_duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 12 min', '2 d 5 h': two units at most, as a person says it."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def connector_health(ws: Workspace, now: dt.datetime | None = None,
                     history: int = HISTORY_RUNS) -> list[ConnectorHealth]:
    """Health of every connector of the workspace's organization, by name."""
    now = now or utcnow()
    if now.tzinfo is not None:  # the workspace keeps naive UTC
        now = now.astimezone(dt.timezone.utc).replace(tzinfo=None)
    org = ws.organization_id
    mine = logs.c.organization_id == org
    with ws.read() as conn:
        records = connectors_store.list_all(ws, conn)
        if not records:
            return []

        # the last success of each connector (its run id bounds the failure streak)
        success = (sa.select(logs.c.connector_id, sa.func.max(logs.c.id).label("success_id"))
                   .where(mine, logs.c.status == SyncStatus.SUCCESS.value)
                   .group_by(logs.c.connector_id).subquery("last_success"))
        last_success = {r.connector_id: (r.id, r.finished_at) for r in conn.execute(
            sa.select(logs.c.connector_id, logs.c.id, logs.c.finished_at)
            .join(success, logs.c.id == success.c.success_id))}

        # the latest run of each connector, whatever its status
        latest = (sa.select(sa.func.max(logs.c.id).label("run_id")).where(mine)
                  .group_by(logs.c.connector_id).subquery("latest"))
        last_run = {r.connector_id: r for r in conn.execute(
            sa.select(logs.c.connector_id, logs.c.status, logs.c.started_at, logs.c.error)
            .join(latest, logs.c.id == latest.c.run_id))}

        # failed or partial runs after the last success: one scan with the last success
        # as a window aggregate (a join to the grouped subquery made PostgreSQL loop,
        # 150 s for 100,000 runs)
        marked = sa.select(
            logs.c.connector_id, logs.c.id, logs.c.status,
            sa.func.max(sa.case((logs.c.status == SyncStatus.SUCCESS.value, logs.c.id)))
            .over(partition_by=logs.c.connector_id).label("success_id"),
        ).where(mine).subquery("marked")
        streak = dict(conn.execute(
            sa.select(marked.c.connector_id, sa.func.count())
            .where(marked.c.status.in_(PROBLEM_STATUSES), marked.c.id > sa.func.coalesce(marked.c.success_id, 0))
            .group_by(marked.c.connector_id)).all())

        # failed chunks still waiting (a retry marks them done, a new plan superseded),
        # apart from those an analyst ignored
        waiting: dict[str, int] = {}
        ignored: dict[str, int] = {}
        for connector_id, review_status, n in conn.execute(
                sa.select(chunks.c.connector_id, chunks.c.review_status, sa.func.count())
                .where(chunks.c.organization_id == org, chunks.c.status == ChunkStatus.FAILED.value)
                .group_by(chunks.c.connector_id, chunks.c.review_status)):
            into = waiting if review_status is None else ignored
            into[connector_id] = into.get(connector_id, 0) + int(n)
        secrets = secret_records.all_records(ws, conn)

        # the last `history` runs of every connector, in one windowed query
        numbered = sa.select(
            logs.c.connector_id, logs.c.id, logs.c.started_at, logs.c.items_written, logs.c.status,
            sa.func.row_number().over(partition_by=logs.c.connector_id, order_by=logs.c.id.desc()).label("n"),
        ).where(mine).subquery("numbered")
        points: dict[str, list[SyncPoint]] = {}
        for r in conn.execute(sa.select(numbered).where(numbered.c.n <= history)
                              .order_by(numbered.c.connector_id, numbered.c.id)):
            points.setdefault(r.connector_id, []).append(
                SyncPoint(r.id, r.started_at, int(r.items_written or 0), r.status))

    result = []
    for record in records:
        success_id, success_at = last_success.get(record.id, (None, None))
        run = last_run.get(record.id)
        secret = secrets.get(record.id)
        has_secret = bool(record.config.get(PASSWORD_MARKER))
        set_at = secret.set_at if secret else None
        rotation_days = secret.rotation_days if secret else None
        result.append(ConnectorHealth(
            connector_id=record.id, name=record.name, type=record.type, status=record.status,
            last_success_at=success_at,
            last_run_status=run.status if run is not None else None,
            last_run_at=run.started_at if run is not None else None,
            last_error=(scrub(run.error) if run is not None and run.status != SyncStatus.SUCCESS.value
                        else None),
            lag_seconds=(now - success_at).total_seconds() if success_at is not None else None,
            failure_streak=int(streak.get(record.id, 0)),
            failed_chunks_waiting=int(waiting.get(record.id, 0)),
            rows_per_sync=points.get(record.id, []),
            failed_chunks_ignored=int(ignored.get(record.id, 0)),
            has_secret=has_secret, secret_set_at=set_at, rotation_days=rotation_days,
            secret_overdue=SecretAge(record.id, record.name, has_secret, set_at, rotation_days).overdue(now),
            _now=now,
        ))
    return result
