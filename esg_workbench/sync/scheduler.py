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

The module is the one door callers use. Behind it: ``schedule_store.py`` (the jobs:
reading, checking, writing, claiming), ``schedule_runner.py`` (running them) and, here,
what the Schedules tab and ``schedule list`` show.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from esg_workbench.sync import schedule_plan
from esg_workbench.sync.schedule_runner import (  # noqa: F401  (the scheduler's public names)
    RETRY_STATUSES,
    JobOutcome,
    alert_for_result,
    due_jobs,
    execute,
    pending,
    record_outcome,
    request_for,
    run_due,
    run_job,
    skip,
    sync_message,
    take_slots,
)
from esg_workbench.sync.schedule_store import (  # noqa: F401
    ACTION_WORDS,
    ACTIONS,
    DEFAULT_BACKOFF_SECONDS,
    DISCOVER_OPTIONS,
    MAX_RETRY_ATTEMPTS,
    MAX_WINDOW_MINUTES,
    PRIORITY_RANGE,
    STATUSES,
    SYNC_OPTIONS,
    ScheduledJob,
    _naive_utc,
    add_job,
    claim,
    get_job,
    list_jobs,
    remove_job,
    set_enabled,
    set_limits,
    update_job,
)
from esg_workbench.workspace import schedule_slots


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
