"""The scheduled jobs themselves: the rows of ``scheduled_jobs`` read as
:class:`ScheduledJob`, checked and written (add, edit, enable, remove, the concurrency
limits), and claimed.

A job is a cron expression read in an IANA time zone, and a config
``{connector, connector_id, action, options}``. ``next_run_at`` (naive UTC) is the next
slot; a job is *due* when it is enabled and that slot has passed. Starting a due job is a
compare-and-set on ``next_run_at`` (:func:`claim`); see ``scheduler.py`` for why that
makes two processes run a slot once. Running jobs is ``schedule_runner.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError, EsgError, NotFound
from esg_workbench.sync import cron as cronlib
from esg_workbench.sync import schedule_plan
from esg_workbench.workspace import connectors_store, schedule_slots
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import scheduled_jobs as table

ACTIONS = schedule_plan.ACTIONS
ACTION_WORDS = {"sync": "sync", "retry_failed": "retry of failed chunks", "discover": "discovery"}
STATUSES = ("success", "partial_success", "failed", "cancelled", "skipped")

#: the wait before a schedule's first retry when it does not say (doubled for each next one)
DEFAULT_BACKOFF_SECONDS = 300
MAX_RETRY_ATTEMPTS = 10
MAX_WINDOW_MINUTES = 7 * 24 * 60
PRIORITY_RANGE = (-100, 100)

#: options a job may carry, per action (passed on to the engine request or to discovery)
SYNC_OPTIONS = ("tables", "load_type", "chunk_size", "chunk_strategy", "window")
DISCOVER_OPTIONS = ("tables", "sample_rows")


@dataclass
class ScheduledJob:
    id: int
    name: str
    cron: str
    timezone: str
    enabled: bool
    connector: str  # the connector's current name
    action: str
    options: dict[str, Any] = field(default_factory=dict)
    last_run_at: dt.datetime | None = None  # naive UTC, when the last run finished
    next_run_at: dt.datetime | None = None  # naive UTC; None while disabled
    last_status: str | None = None
    last_message: str | None = None
    last_run_id: int | None = None
    connector_id: str | None = None
    priority: int = 0  # higher runs first when more are due than may run
    depends_on: list[str] = field(default_factory=list)  # names of the jobs it runs after
    depends_on_ids: list[int] = field(default_factory=list)
    dependency_window_minutes: int | None = None  # None: schedule_plan.DEFAULT_WINDOW_MINUTES
    dependency_accepts_partial: bool = False
    retry_attempts: int = 0  # extra runs after a failed or partial run
    retry_backoff_seconds: int = DEFAULT_BACKOFF_SECONDS
    retry_attempt: int | None = None  # the attempt the pending retry will be (2, 3, ...)
    retry_due_at: dt.datetime | None = None  # naive UTC; None: no retry pending
    retry_first_run_id: int | None = None

    @property
    def description(self) -> str:
        """The schedule in plain English, e.g. "Every day at 02:00"."""
        return cronlib.describe(self.cron)

    @property
    def next_run_local(self) -> dt.datetime | None:
        """next_run_at as an aware datetime in the job's time zone."""
        if self.next_run_at is None:
            return None
        return self.next_run_at.replace(tzinfo=dt.timezone.utc).astimezone(ZoneInfo(self.timezone))

    def upcoming(self, count: int = 5, after: dt.datetime | None = None) -> list[dt.datetime]:
        """The next ``count`` run times (aware, in the job's zone) after ``after`` (default now)."""
        return cronlib.next_runs(self.cron, self.timezone, after or utcnow(), count)


# --- reading and writing jobs ----------------------------------------------------------


def _job(row, connector_names: dict[str, str], job_names: dict[int, str] | None = None) -> ScheduledJob:
    config = json.loads(row.config)
    connector_id = config.get("connector_id")
    depends_on_ids = [int(i) for i in json.loads(row.depends_on or "[]")]
    job_names = job_names or {}
    return ScheduledJob(
        id=row.id, name=row.name, cron=row.cron, timezone=row.timezone or "UTC", enabled=bool(row.enabled),
        connector=connector_names.get(connector_id, config.get("connector", "")),
        action=config.get("action", "sync"), options=config.get("options") or {},
        last_run_at=row.last_run_at, next_run_at=row.next_run_at, last_status=row.last_status,
        last_message=row.last_message, last_run_id=row.last_run_id, connector_id=connector_id,
        priority=row.priority or 0, depends_on_ids=depends_on_ids,
        depends_on=[job_names.get(i, f"#{i}") for i in depends_on_ids],
        dependency_window_minutes=row.dependency_window_minutes,
        dependency_accepts_partial=bool(row.dependency_accepts_partial),
        retry_attempts=row.retry_attempts or 0,
        retry_backoff_seconds=row.retry_backoff_seconds or DEFAULT_BACKOFF_SECONDS,
        retry_attempt=row.retry_attempt, retry_due_at=row.retry_due_at, retry_first_run_id=row.retry_first_run_id,
    )


def _connector_names(ws: Workspace, conn: sa.Connection) -> dict[str, str]:
    return {r.id: r.name for r in connectors_store.list_all(ws, conn)}


def _job_names(ws: Workspace, conn: sa.Connection) -> dict[int, str]:
    return dict(conn.execute(sa.select(table.c.id, table.c.name).where(
        table.c.organization_id == ws.organization_id)).all())


def _select(ws: Workspace):
    return sa.select(table).where(table.c.organization_id == ws.organization_id)


def _list(ws: Workspace, conn: sa.Connection) -> list[ScheduledJob]:
    names, jobs = _connector_names(ws, conn), _job_names(ws, conn)
    return [_job(r, names, jobs) for r in conn.execute(_select(ws).order_by(table.c.name)).all()]


def list_jobs(ws: Workspace) -> list[ScheduledJob]:
    with ws.read() as conn:
        return _list(ws, conn)


def _get(ws: Workspace, conn: sa.Connection, name: str) -> ScheduledJob:
    row = conn.execute(_select(ws).where(table.c.name == name)).first()
    if row is None:
        known = [r.name for r in conn.execute(_select(ws).order_by(table.c.name))]
        raise NotFound(
            f"There is no scheduled job named '{name}'.",
            hint=("Known jobs: " + ", ".join(known)) if known
            else "Add one with: esg-workbench schedule add NAME --connector C --cron \"0 2 * * *\"",
        )
    return _job(row, _connector_names(ws, conn), _job_names(ws, conn))


def get_job(ws: Workspace, name: str) -> ScheduledJob:
    with ws.read() as conn:
        return _get(ws, conn, name)


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ConfigError(f"'{action}' is not a scheduled action. Known actions: {', '.join(ACTIONS)}.",
                          hint="Use sync (land new data), retry_failed (retry failed chunks) or discover.")


def _check_options(action: str, options: dict[str, Any]) -> dict[str, Any]:
    allowed = DISCOVER_OPTIONS if action == "discover" else SYNC_OPTIONS
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"Option {', '.join(unknown)} does not apply to a scheduled {action}.",
                          hint=f"Options of a {action} job: {', '.join(allowed)}.")
    tables = options.get("tables")
    if tables is not None and (not isinstance(tables, list) or not all(isinstance(t, str) for t in tables)):
        raise ConfigError("The option 'tables' must be a list of table names.")
    return {k: v for k, v in options.items() if v not in (None, "", [])}


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ConfigError("A scheduled job needs a name.", hint="Give it a short name, e.g. nightly-erp.")
    if len(name) > 200:
        raise ConfigError("A scheduled job's name can be at most 200 characters long.")
    return name


def _refuse_duplicate(ws: Workspace, conn: sa.Connection, name: str) -> None:
    if conn.execute(sa.select(table.c.id).where(table.c.organization_id == ws.organization_id,
                                                table.c.name == name)).first():
        raise ConfigError(f"A scheduled job named '{name}' already exists.",
                          hint="Pick another name, or edit the existing job.")


def _audit_config(job: ScheduledJob) -> dict[str, Any]:
    return {"job": job.name, "cron": job.cron, "timezone": job.timezone, "enabled": job.enabled,
            "connector": job.connector, "connector_id": job.connector_id, "action": job.action,
            "options": job.options, "priority": job.priority, "depends_on": job.depends_on,
            "dependency_window_minutes": job.dependency_window_minutes,
            "dependency_accepts_partial": job.dependency_accepts_partial,
            "retry_attempts": job.retry_attempts, "retry_backoff_seconds": job.retry_backoff_seconds}


def _whole(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be a whole number from {low} to {high}, not {value!r}.")
    return value


def _policy_values(priority: int | None, window_minutes: int | None, accepts_partial: bool | None,
                   retry_attempts: int | None, retry_backoff_seconds: int | None) -> dict[str, Any]:
    """The columns of the policy settings given (None: leave as is), checked."""
    values: dict[str, Any] = {}
    if priority is not None:
        values["priority"] = _whole(priority, "A priority", *PRIORITY_RANGE)
    if window_minutes is not None:
        values["dependency_window_minutes"] = _whole(window_minutes, "The dependency window (minutes)", 1,
                                                     MAX_WINDOW_MINUTES)
    if accepts_partial is not None:
        values["dependency_accepts_partial"] = bool(accepts_partial)
    if retry_attempts is not None:
        values["retry_attempts"] = _whole(retry_attempts, "The number of retries", 0, MAX_RETRY_ATTEMPTS)
    if retry_backoff_seconds is not None:
        values["retry_backoff_seconds"] = _whole(retry_backoff_seconds, "The wait before a retry (seconds)", 1,
                                                 86_400)
    return values


def _dependency_ids(ws: Workspace, conn: sa.Connection, job_id: int | None, name: str,
                    depends_on: list[str]) -> list[int]:
    """Ids of the named jobs; refused: an unknown name, the job itself, a cycle."""
    if not isinstance(depends_on, (list, tuple)) or not all(isinstance(n, str) for n in depends_on):
        raise ConfigError("'depends on' must be a list of schedule names.")
    ids_by_name = {v: k for k, v in _job_names(ws, conn).items()}
    ids = []
    for pred in dict.fromkeys(n.strip() for n in depends_on if n.strip()):
        if pred == name:
            raise ConfigError(f"The schedule '{name}' cannot run after itself.",
                              hint="Name other schedules it should wait for.")
        if pred not in ids_by_name:
            raise NotFound(f"There is no schedule named '{pred}' for '{name}' to run after.",
                           hint=("Known schedules: " + ", ".join(sorted(ids_by_name))) if ids_by_name
                           else "Add the schedules it depends on first.")
        ids.append(ids_by_name[pred])
    if job_id is not None and ids:
        edges = {j.id: list(j.depends_on_ids) for j in _list(ws, conn)}
        edges[job_id] = ids
        cycle = schedule_plan.find_cycle(edges, job_id)
        if cycle:
            names = _job_names(ws, conn)
            path = " → ".join(names.get(i, str(i)) for i in cycle)
            raise ConfigError(f"These dependencies would make a cycle: {path}. Nothing was saved.",
                              hint="A schedule cannot wait, directly or through others, for itself.")
    return ids


def add_job(ws: Workspace, name: str, cron: str, connector: str, action: str = "sync", *,
            timezone: str | None = None, enabled: bool = True,
            options: dict[str, Any] | None = None, priority: int | None = None,
            depends_on: list[str] | None = None, dependency_window_minutes: int | None = None,
            dependency_accepts_partial: bool | None = None, retry_attempts: int | None = None,
            retry_backoff_seconds: int | None = None) -> ScheduledJob:
    """Add a job; everything is checked before anything is stored. A new job cannot
    close a cycle (nothing depends on it yet)."""
    name = _check_name(name)
    cron_expr = cronlib.parse(cron).expression
    zone_name = timezone or cronlib.local_timezone()
    cronlib.zone(zone_name)
    _check_action(action)
    options = _check_options(action, dict(options or {}))
    policy = _policy_values(priority, dependency_window_minutes, dependency_accepts_partial, retry_attempts,
                            retry_backoff_seconds)
    now = utcnow()
    with ws.transaction() as conn:
        _refuse_duplicate(ws, conn, name)
        record = connectors_store.get(ws, conn, connector)
        config = {"connector": record.name, "connector_id": record.id, "action": action, "options": options}
        pred_ids = _dependency_ids(ws, conn, None, name, list(depends_on or []))
        conn.execute(sa.insert(table).values(
            organization_id=ws.organization_id, name=name, cron=cron_expr, enabled=enabled,
            config=json.dumps(config, sort_keys=True), timezone=zone_name,
            next_run_at=cronlib.next_run_utc(cron_expr, zone_name, now) if enabled else None,
            depends_on=json.dumps(pred_ids), **policy,
        ))
        job = _get(ws, conn, name)
        chain.append(ws, conn, "schedule.add", metadata=_audit_config(job))
    return job


def update_job(ws: Workspace, name: str, *, new_name: str | None = None, cron: str | None = None,
               timezone: str | None = None, connector: str | None = None, action: str | None = None,
               enabled: bool | None = None, options: dict[str, Any] | None = None,
               priority: int | None = None, depends_on: list[str] | None = None,
               dependency_window_minutes: int | None = None, dependency_accepts_partial: bool | None = None,
               retry_attempts: int | None = None, retry_backoff_seconds: int | None = None) -> ScheduledJob:
    """Change what is given; next_run_at is recomputed from now when the schedule or
    the enabled flag changes. New dependencies that would make a cycle are refused."""
    if cron is not None:
        cron = cronlib.parse(cron).expression
    if timezone is not None:
        cronlib.zone(timezone)
    if action is not None:
        _check_action(action)
    if new_name is not None:
        new_name = _check_name(new_name)
    policy = _policy_values(priority, dependency_window_minutes, dependency_accepts_partial, retry_attempts,
                            retry_backoff_seconds)
    now = utcnow()
    with ws.transaction() as conn:
        job = _get(ws, conn, name)
        if new_name is not None and new_name != job.name:
            _refuse_duplicate(ws, conn, new_name)
        if depends_on is not None:
            policy["depends_on"] = json.dumps(_dependency_ids(ws, conn, job.id, new_name or job.name,
                                                              list(depends_on)))
        final_action = action or job.action
        final_options = _check_options(final_action, dict(job.options if options is None else options))
        config = {"connector": job.connector, "connector_id": job.connector_id, "action": final_action,
                  "options": final_options}
        if connector is not None:
            record = connectors_store.get(ws, conn, connector)
            config.update(connector=record.name, connector_id=record.id)
        values: dict[str, Any] = {"config": json.dumps(config, sort_keys=True), **policy}
        if new_name is not None:
            values["name"] = new_name
        if cron is not None:
            values["cron"] = cron
        if timezone is not None:
            values["timezone"] = timezone
        if enabled is not None:
            values["enabled"] = enabled
        final_cron, final_zone = values.get("cron", job.cron), values.get("timezone", job.timezone)
        final_enabled = values.get("enabled", job.enabled)
        schedule_changed = (final_cron, final_zone, final_enabled) != (job.cron, job.timezone, job.enabled)
        if not final_enabled:
            values.update(next_run_at=None, retry_due_at=None, retry_attempt=None, retry_first_run_id=None)
        elif schedule_changed or job.next_run_at is None:
            values["next_run_at"] = cronlib.next_run_utc(final_cron, final_zone, now)
        conn.execute(sa.update(table).where(table.c.id == job.id, table.c.organization_id == ws.organization_id)
                     .values(**values))
        updated = _get(ws, conn, values.get("name", job.name))
        chain.append(ws, conn, "schedule.update", metadata={**_audit_config(updated), "previous_name": job.name})
    return updated


def set_enabled(ws: Workspace, name: str, enabled: bool) -> ScheduledJob:
    """Enabling computes the next slot from now: slots missed while disabled do not run."""
    return update_job(ws, name, enabled=enabled)


def remove_job(ws: Workspace, name: str) -> None:
    """Remove a job; refused while other jobs run after it (edit those first)."""
    with ws.transaction() as conn:
        job = _get(ws, conn, name)
        dependents = schedule_plan.waiting_for(job, _list(ws, conn))
        if dependents:
            raise ConfigError(f"The schedule '{name}' cannot be removed: {', '.join(dependents)} "
                              f"run{'s' if len(dependents) == 1 else ''} after it.",
                              hint="Remove it from their 'runs after' list first (schedule edit ... --after).")
        conn.execute(sa.delete(table).where(table.c.id == job.id, table.c.organization_id == ws.organization_id))
        chain.append(ws, conn, "schedule.remove", metadata={"job": job.name, "connector": job.connector,
                                                            "action": job.action})


def set_limits(ws: Workspace, *, workspace: int | None, per_host: int | None) -> schedule_slots.Limits:
    """How many scheduled syncs may run at once in the workspace (of this organization) and
    per source host (None or 0: no limit); audited."""
    limits = schedule_slots.check_limits(workspace, per_host)
    with ws.transaction() as conn:
        schedule_slots.write_limits(ws, conn, limits)
        chain.append(ws, conn, "schedule.limits", metadata={"workspace": limits.workspace,
                                                            "per_host": limits.per_host})
    return limits


# --- due jobs and claiming ---------------------------------------------------------------


def _naive_utc(moment: dt.datetime | None) -> dt.datetime:
    if moment is None:
        return utcnow()
    if moment.tzinfo is not None:
        return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment


def _schedule_unscheduled(ws: Workspace, now: dt.datetime) -> None:
    """Enabled jobs without a next slot (rows of a version-1 workspace, or written by hand)
    get one after now; a row whose cron or zone no longer parses is left alone and says why."""
    with ws.read() as conn:  # almost always none: no write transaction for nothing
        rows = conn.execute(sa.select(table.c.id, table.c.cron, table.c.timezone).where(
            table.c.organization_id == ws.organization_id, table.c.enabled.is_(True),
            table.c.next_run_at.is_(None), table.c.last_status.is_distinct_from("failed"))).all()
    if not rows:
        return
    with ws.transaction() as conn:
        for row in rows:
            try:
                values = {"next_run_at": cronlib.next_run_utc(row.cron, row.timezone or "UTC", now)}
            except EsgError as exc:
                values = {"last_status": "failed", "last_message": f"This job cannot run: {exc.message}"}
            conn.execute(sa.update(table).where(table.c.id == row.id, table.c.organization_id == ws.organization_id,
                                                table.c.next_run_at.is_(None)).values(**values))


def claim(ws: Workspace, job: ScheduledJob, now: dt.datetime | None = None, *, retry: bool | None = None) -> bool:
    """Take this run of ``job``: move next_run_at from the value it was read with to the
    first slot after ``now`` (for a retry: clear retry_due_at), if no one else moved it
    first. True if we took it. ``retry`` None: a retry when one is due."""
    now = _naive_utc(now)
    if retry is None:
        due = schedule_plan.due_moment(job, now)
        retry = bool(due and due[1])
    if retry:
        if job.retry_due_at is None:
            return False
        with ws.transaction() as conn:
            taken = conn.execute(
                sa.update(table).where(table.c.id == job.id, table.c.organization_id == ws.organization_id,
                                       table.c.enabled.is_(True), table.c.retry_due_at == job.retry_due_at)
                .values(retry_due_at=None).returning(table.c.id)).first()
        return taken is not None
    following = cronlib.next_run_utc(job.cron, job.timezone, now)
    seen = table.c.next_run_at.is_(None) if job.next_run_at is None else table.c.next_run_at == job.next_run_at
    with ws.transaction() as conn:
        # An UPDATE's WHERE is re-checked against the row another transaction just
        # committed (PostgreSQL) or runs under the workspace's write lock (DuckDB):
        # of two claims for the same slot, exactly one matches.
        taken = conn.execute(
            sa.update(table)
            .where(table.c.id == job.id, table.c.organization_id == ws.organization_id,
                   table.c.enabled.is_(True), seen)
            .values(next_run_at=following)
            .returning(table.c.id)
        ).first()
    if taken:
        job.next_run_at = following
    return taken is not None
