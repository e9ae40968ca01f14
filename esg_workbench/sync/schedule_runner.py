"""Running scheduled jobs: what a job asks the engine for, running one (claim, run,
record the outcome, schedule its retry, alert), and running every due one in order,
chains and concurrency limits included. The jobs themselves are ``schedule_store.py``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.core.errors import Cancelled, EsgError, NotFound, SyncBusy
from esg_workbench.core.specs import CancelToken, ProgressEvent
from esg_workbench.sync import schedule_plan
from esg_workbench.sync.engine import DEFAULT_RETRY_DELAYS, SyncEngine, SyncRequest, SyncResult
from esg_workbench.sync.schedule_store import (
    ACTION_WORDS,
    DEFAULT_BACKOFF_SECONDS,
    ScheduledJob,
    _naive_utc,
    _schedule_unscheduled,
    _select,
    claim,
    list_jobs,
)
from esg_workbench.workspace import connectors_store, schedule_slots, sync_records
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import scheduled_jobs as table

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
    if result is None or not result.status.alerted:
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
