"""Scheduled jobs: sync, retry the failed chunks of, or discover a connector on a cron schedule.

A job is a row of ``scheduled_jobs``: a cron expression read in an IANA time zone, and a
config ``{connector, connector_id, action, options}``. ``next_run_at`` (naive UTC) is the
next slot; a job is *due* when it is enabled and that slot has passed.

Starting a due job is a compare-and-set on ``next_run_at`` (:func:`claim`): it moves from
the value the job was read with to the first slot after now. Two processes (the app and
an OS scheduler's ``schedule run-due``, or two windows on a PostgreSQL workspace) that
read the same due job both try; exactly one update matches, so exactly one runs it.
Because the new value is the first slot after *now*, a job whose slots were missed while
the machine was off runs once, not once per missed slot. Different jobs of one connector
meet the engine's per-connector lock (in-process, plus the connector's lock row on PostgreSQL across
processes): the later one is recorded ``skipped`` and says why.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.core.errors import Cancelled, ConfigError, EsgError, NotFound, SyncBusy
from esg_workbench.core.specs import CancelToken, ProgressEvent
from esg_workbench.sync import cron as cronlib
from esg_workbench.sync import schedule_plan
from esg_workbench.sync.engine import DEFAULT_RETRY_DELAYS, SyncEngine, SyncRequest, SyncResult
from esg_workbench.workspace import connectors_store, schedule_slots, sync_records
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


@dataclass
class JobOutcome:
    job_name: str
    connector: str
    action: str
    status: str  # one of STATUSES
    message: str
    run_id: int | None = None
    result: SyncResult | None = None
    attempt: int | None = None  # 2, 3, ... for a retry; None: a first attempt
    first_run_id: int | None = None  # for a retry: the run of the first attempt

    def describe(self) -> str:
        return f"{self.job_name} ({ACTION_WORDS.get(self.action, self.action)} of '{self.connector}'): " \
               f"{self.status} — {self.message}"


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


def pending(ws: Workspace, now: dt.datetime | None = None) -> list[schedule_plan.Decision]:
    """What each due job (slot or pending retry come) does now: run, wait or skip, with
    the reason; in the order they should start (priority, then the longest overdue)."""
    now = _naive_utc(now)
    _schedule_unscheduled(ws, now)
    return schedule_plan.decisions(list_jobs(ws), now)


def due_jobs(ws: Workspace, now: dt.datetime | None = None) -> list[ScheduledJob]:
    """Enabled jobs whose next slot or pending retry is at or before ``now`` (naive UTC or
    aware): higher priority first, then the oldest slot."""
    return [d.job for d in pending(ws, now)]


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


# --- running -------------------------------------------------------------------------------


def request_for(ws: Workspace, job: ScheduledJob, *, retry: bool = False) -> SyncRequest | None:
    """The engine request a sync or retry_failed job makes; None for discover. A retry of
    a sync that ended partial_success retries its failed chunks only."""
    if job.action == "discover":
        return None
    opts = job.options
    if retry and job.last_status == "partial_success":
        return SyncRequest(connector=job.connector_id or job.connector, tables=opts.get("tables") or None,
                           retry_failed=True)
    return SyncRequest(
        connector=job.connector_id or job.connector, tables=opts.get("tables") or None,
        load_type=opts.get("load_type"), chunk_size=opts.get("chunk_size"),
        chunk_strategy=opts.get("chunk_strategy"), window=opts.get("window"),
        retry_failed=job.action == "retry_failed",
    )


RETRY_STATUSES = ("failed", "partial_success")


def _retry_values(row, outcome: JobOutcome, finished_at: dt.datetime) -> dict[str, Any]:
    """The job's retry columns after this outcome: a retry scheduled (backoff doubling per
    attempt) while the policy allows one, else none pending."""
    none = {"retry_due_at": None, "retry_attempt": None, "retry_first_run_id": None}
    attempts = row.retry_attempts or 0
    backoff = row.retry_backoff_seconds or DEFAULT_BACKOFF_SECONDS
    this_attempt = outcome.attempt or 1
    if outcome.status == "skipped" and outcome.attempt:  # a retry that could not start: same attempt later
        return {"retry_due_at": finished_at + dt.timedelta(seconds=backoff), "retry_attempt": outcome.attempt,
                "retry_first_run_id": outcome.first_run_id}
    if outcome.status not in RETRY_STATUSES or this_attempt > attempts:
        return none
    following = this_attempt + 1
    return {"retry_due_at": finished_at + dt.timedelta(seconds=backoff * 2 ** (this_attempt - 1)),
            "retry_attempt": following,
            "retry_first_run_id": outcome.first_run_id if outcome.attempt else outcome.run_id}


def record_outcome(ws: Workspace, outcome: JobOutcome, finished_at: dt.datetime | None = None) -> None:
    """Store the outcome on the job (if it still exists) and in the audit chain; schedule
    a retry when the job's policy asks for one; link a retried run to its first attempt."""
    finished_at = _naive_utc(finished_at)
    with ws.transaction() as conn:
        row = conn.execute(_select(ws).where(table.c.name == outcome.job_name)).first()
        retry = _retry_values(row, outcome, finished_at) if row is not None else {}
        if retry.get("retry_due_at") and outcome.status != "skipped":
            outcome.message += (f" Retry {retry['retry_attempt'] - 1} of {row.retry_attempts} at "
                                f"{retry['retry_due_at']:%Y-%m-%d %H:%M} UTC.")
        conn.execute(sa.update(table).where(table.c.organization_id == ws.organization_id,
                                            table.c.name == outcome.job_name)
                     .values(last_run_at=finished_at, last_status=outcome.status,
                             last_message=outcome.message, last_run_id=outcome.run_id, **retry))
        if outcome.attempt and outcome.run_id is not None and outcome.first_run_id is not None:
            sync_records.link_retry(ws, conn, outcome.run_id, outcome.first_run_id, outcome.attempt)
        metadata = {"job": outcome.job_name, "connector": outcome.connector, "action": outcome.action,
                    "status": outcome.status, "run_id": outcome.run_id, "message": outcome.message}
        if outcome.attempt:
            metadata.update(attempt=outcome.attempt, retry_of=outcome.first_run_id)
        chain.append(ws, conn, "schedule.run", metadata=metadata)


def _busy_message(connector: str) -> str:
    return f"'{connector}' is already syncing in another window or process; this run was skipped."


def sync_message(result: SyncResult) -> str:
    tables = len(result.streams)
    text = (f"Landed {result.rows_written:,} rows from {tables} table{'s' if tables != 1 else ''} "
            f"in {result.seconds:.1f} s (run {result.run_id}).")
    if result.status.value != "success" and result.error:
        text += " " + result.error
    return text


def execute(ws: Workspace, job: ScheduledJob, engine: SyncEngine, *, retry: bool = False) -> JobOutcome:
    """Run the job's action; every failure becomes an outcome."""
    def outcome(status: str, message: str, **kw) -> JobOutcome:
        if retry:
            kw.update(attempt=job.retry_attempt or 2, first_run_id=job.retry_first_run_id)
        return JobOutcome(job.name, job.connector, job.action, status, message, **kw)

    try:
        with ws.read() as conn:
            record = connectors_store.get(ws, conn, job.connector_id or job.connector)
        job.connector = record.name
        request = request_for(ws, job, retry=retry)
        if request is not None:
            result = engine.run(request)
            return outcome(result.status.value, sync_message(result), run_id=result.run_id, result=result)
        from esg_workbench.sync import operations

        # discovery takes the connector's sync lock too: one job per connector at a time
        with engine._connector_lock(record.id):
            found = operations.discover_connector(ws, record.id, tables=job.options.get("tables"),
                                                  sample_rows=int(job.options.get("sample_rows") or 0),
                                                  engine=engine)
        text = f"Discovered {len(found.tables)} table{'s' if len(found.tables) != 1 else ''}."
        if found.drift:
            text += " Drift: " + "; ".join(f"{k}: {v.describe()}" for k, v in found.drift.items())
        return outcome("success", text)
    except SyncBusy:
        return outcome("skipped", _busy_message(job.connector))
    except NotFound as exc:
        return outcome("failed", f"{exc.message} The job cannot run until it names an existing connector "
                                 f"(esg-workbench schedule edit {job.name} --connector NAME).")
    except Cancelled as exc:
        return outcome("cancelled", exc.message)
    except EsgError as exc:
        return outcome("failed", exc.describe())
    except Exception as exc:  # a bug in one job must not stop the others, nor the app's timer
        return outcome("failed", f"Unexpected error ({type(exc).__name__}): {exc}")


def alert_for_result(ws: Workspace, connector: str, result: SyncResult | None) -> str | None:
    """Send the configured alert for a failed or partial sync (from any path: a schedule,
    ``sync`` on the command line); the delivery error, if any. Never raises."""
    if result is None or result.status.value not in ("failed", "partial_success"):
        return None
    try:
        from esg_workbench import alerts

        alert = alerts.alert_for_run(ws, connector, result)
        return alerts.dispatch(ws, alert) if alert is not None else None
    except Exception as exc:  # an alert must never turn a recorded run into a crash
        return f"{type(exc).__name__}: {exc}"


def _alert(ws: Workspace, outcome: JobOutcome) -> str | None:
    return alert_for_result(ws, outcome.connector, outcome.result)


def skip(ws: Workspace, decision: schedule_plan.Decision, now: dt.datetime | None = None) -> JobOutcome | None:
    """Record a dependency skip once (the claim decides who records it); None if another
    process or thread recorded it first."""
    now = _naive_utc(now)
    job = decision.job
    if not claim(ws, job, now, retry=False):
        return None
    outcome = JobOutcome(job.name, job.connector, job.action, "skipped", decision.reason[0].upper() +
                         decision.reason[1:] + ".")
    record_outcome(ws, outcome, finished_at=max(utcnow(), now))
    return outcome


def take_slots(ws: Workspace, job: ScheduledJob) -> schedule_slots.Held | schedule_slots.Busy:
    """The concurrency slots a run of this job needs (the workspace's, its source host's)."""
    with ws.read() as conn:
        try:
            config = connectors_store.get(ws, conn, job.connector_id or job.connector).config
        except NotFound:
            config = {}  # the run will fail and say why; it needs no host slot
    return schedule_slots.take_for(ws, config)


def run_job(ws: Workspace, job: ScheduledJob, *, now: dt.datetime | None = None,
            on_progress: Callable[[ProgressEvent], None] | None = None, cancel: CancelToken | None = None,
            retry_delays: tuple[float, ...] | None = None, retry: bool | None = None,
            slots: schedule_slots.Held | None = None) -> JobOutcome:
    """Claim the job's slot (or its pending retry), run it, record the outcome. Never raises
    for a sync failure. ``slots``: concurrency slots the caller took (released here).

    If another process or thread claimed the slot first, nothing runs and nothing is
    recorded (that one records its run); the outcome is ``skipped`` and says so.
    """
    try:
        now = _naive_utc(now)
        if retry is None:
            due = schedule_plan.due_moment(job, now)
            retry = bool(due and due[1])
        if not claim(ws, job, now, retry=retry):
            return JobOutcome(job.name, job.connector, job.action, "skipped",
                              "Another window or process started this run first.")
        engine = SyncEngine(ws, retry_delays=retry_delays or DEFAULT_RETRY_DELAYS, on_progress=on_progress,
                            cancel=cancel)
        outcome = execute(ws, job, engine, retry=retry)
    finally:
        if slots is not None:
            slots.release()
    problem = _alert(ws, outcome)
    if problem:
        outcome.message += f" The alert could not be sent: {problem}"
    # a run cannot end before the moment it ran at (a `now` ahead of the clock: a check made
    # for a later moment, as tests and catch-up runs do; dependencies compare these times)
    record_outcome(ws, outcome, finished_at=max(utcnow(), now))
    return outcome


def run_due(ws: Workspace, now: dt.datetime | None = None, *,
            on_waiting: Callable[[schedule_plan.Decision], None] | None = None, **kw) -> list[JobOutcome]:
    """Run every due job once, one after another, in the order of :func:`pending` (kw: as
    for :func:`run_job`). A job whose predecessors are not done waits (``on_waiting`` is
    told why) or is recorded ``skipped`` with the reason; one whose concurrency slot is
    taken waits for a later check. After each run the due jobs are looked at again, so a
    chain whose predecessor just succeeded runs in the same call."""
    outcomes: list[JobOutcome] = []
    handled: set[tuple[int, bool]] = set()
    cancel = kw.get("cancel")
    while True:
        started = False
        told: set[int] = set()
        for decision in pending(ws, now):
            job = decision.job
            if (job.id, decision.retry) in handled or (cancel is not None and cancel.cancelled):
                continue
            if decision.verdict == schedule_plan.WAIT:
                if on_waiting is not None and job.id not in told:
                    told.add(job.id)
                    on_waiting(decision)
                continue
            handled.add((job.id, decision.retry))
            if decision.verdict == schedule_plan.SKIP:
                skipped = skip(ws, decision, now)
                if skipped is not None:
                    outcomes.append(skipped)
                continue
            slots = take_slots(ws, job)
            if isinstance(slots, schedule_slots.Busy):
                handled.discard((job.id, decision.retry))
                if on_waiting is not None:
                    on_waiting(schedule_plan.Decision(job, schedule_plan.WAIT, slots.describe(), decision.due_at,
                                                      decision.retry))
                continue
            try:
                outcomes.append(run_job(ws, job, now=now, retry=decision.retry, slots=slots, **kw))
            except EsgError as exc:  # e.g. a row edited by hand whose cron no longer parses
                outcome = JobOutcome(job.name, job.connector, job.action, "failed", exc.describe())
                record_outcome(ws, outcome)
                outcomes.append(outcome)
            started = True
            break  # look again: a chain may go on, a retry may be due, priorities still hold
        if not started:
            return outcomes


# --- what the Schedules tab and `schedule list` show -------------------------------------


@dataclass
class Overview:
    jobs: list[ScheduledJob]
    state: dict[str, str]  # job name -> what it does now: waiting and why, a retry pending, ...
    chains: list[list[str]]  # names in the order they run (schedule_plan.chains)
    upcoming: list[tuple[dt.datetime, str, str]]  # (naive UTC, job name, note), soonest first
    limits: schedule_slots.Limits


def job_state(job: ScheduledJob, decision: schedule_plan.Decision | None) -> str:
    """A short sentence on the job's state now ('' when nothing to say)."""
    if not job.enabled:
        return "disabled"
    if decision is not None and decision.verdict != schedule_plan.RUN:
        return decision.reason
    if decision is not None:
        return "due now" + (" (retry)" if decision.retry else "")
    if job.retry_due_at is not None:
        return (f"retry {(job.retry_attempt or 2) - 1} of {job.retry_attempts} at "
                f"{job.retry_due_at:%Y-%m-%d %H:%M} UTC")
    if job.last_status == "skipped" and job.last_message:
        return "last run skipped: " + job.last_message
    return ""


def overview(ws: Workspace, now: dt.datetime | None = None, upcoming: int = 10) -> Overview:
    now = _naive_utc(now)
    jobs = list_jobs(ws)
    by_name = {d.job.name: d for d in schedule_plan.decisions(jobs, now)}
    times: list[tuple[dt.datetime, str, str]] = []
    for job in jobs:
        if not job.enabled:
            continue
        note = ("after " + ", ".join(job.depends_on)) if job.depends_on else ""
        if job.retry_due_at is not None:
            times.append((job.retry_due_at, job.name, "retry"))
        if job.next_run_at is not None:
            slots = [job.next_run_at, *(t.astimezone(dt.timezone.utc).replace(tzinfo=None)
                                        for t in job.upcoming(3, after=max(now, job.next_run_at)))]
            times.extend((t, job.name, note) for t in slots)
    times.sort(key=lambda t: (t[0], -next(j.priority for j in jobs if j.name == t[1]), t[1]))
    return Overview(jobs, {j.name: job_state(j, by_name.get(j.name)) for j in jobs},
                    schedule_plan.chains(jobs), times[:upcoming], schedule_slots.get_limits(ws))
