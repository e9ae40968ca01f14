"""What a due schedule does now: run, wait, or be skipped, and why. Pure functions over
scheduled jobs and a moment; no I/O, no Qt (the scheduler, the CLI and the Schedules tab
share them).

Dependencies. A job may name predecessors: it runs after them ("map after both ERP
syncs", "sites before meters"). When the job's own slot T comes, each predecessor must
have finished, with ``success`` (or also ``partial_success`` when the job accepts it),
at or after T − window. While a predecessor has not finished in that window, the job
waits, up to T + window; after that it is skipped, and so is it at once when a
predecessor ended otherwise (failed, cancelled, skipped, or partial when that does not
count) and no retry of that predecessor is pending. The reason names the predecessor.

Retries. A pending retry (see scheduler.py) runs at its time whatever the predecessors
do: they were satisfied for the first attempt.

Order. When more jobs are due than may run: higher priority first, then the one whose
slot passed longest ago, then by name.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

#: how long a predecessor's run counts before a job's slot (and how long the job waits
#: for it after the slot), when the job does not say
DEFAULT_WINDOW_MINUTES = 120

RUN, WAIT, SKIP = "run", "wait", "skip"

#: what a scheduled job does (here, not in scheduler.py, so that the CLI's parser can
#: list them without importing the engine and SQLAlchemy)
ACTIONS = ("sync", "retry_failed", "discover")


@dataclass
class Decision:
    job: object  # ScheduledJob
    verdict: str  # RUN | WAIT | SKIP
    reason: str
    due_at: dt.datetime  # the slot or the retry time that made the job due (naive UTC)
    retry: bool = False  # this run is a retry of a failed or partial run

    def sort_key(self) -> tuple:
        return (-(self.job.priority or 0), self.due_at, self.job.name)


def _hm(moment: dt.datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def accepted_statuses(job) -> tuple[str, ...]:
    return ("success", "partial_success") if job.dependency_accepts_partial else ("success",)


def window(job) -> dt.timedelta:
    return dt.timedelta(minutes=job.dependency_window_minutes or DEFAULT_WINDOW_MINUTES)


def due_moment(job, now: dt.datetime) -> tuple[dt.datetime, bool] | None:
    """(when it became due, whether as a retry) or None when the job is not due."""
    if not job.enabled:
        return None
    if job.retry_due_at is not None and job.retry_due_at <= now:
        return job.retry_due_at, True
    if job.next_run_at is not None and job.next_run_at <= now:
        return job.next_run_at, False
    return None


def predecessor_state(job, pred, slot: dt.datetime, now: dt.datetime) -> tuple[str, str]:
    """(RUN | WAIT | SKIP, reason) for one predecessor of a job whose slot is `slot`."""
    start = slot - window(job)
    finished = pred.last_run_at is not None and pred.last_run_at >= start
    if finished and pred.last_status in accepted_statuses(job):
        return RUN, f"'{pred.name}' ended {pred.last_status} at {_hm(pred.last_run_at)}"
    deadline = slot + window(job)
    if finished:
        if pred.retry_due_at is not None and now < deadline:
            return WAIT, (f"waiting for the retry of '{pred.name}' (its run ended {pred.last_status}; "
                          f"retry at {_hm(pred.retry_due_at)})")
        needed = " or partial_success" if job.dependency_accepts_partial else ""
        return SKIP, (f"skipped: '{pred.name}' ended {pred.last_status} at {_hm(pred.last_run_at)}, "
                      f"and this schedule runs only after its success{needed}")
    idle = " (it is disabled)" if not pred.enabled else ""
    if now < deadline:
        return WAIT, (f"waiting for '{pred.name}' to finish (until {_hm(deadline)}; "
                      f"its next run: {_hm(pred.next_run_at)}){idle}")
    return SKIP, f"skipped: '{pred.name}' did not finish between {_hm(start)} and {_hm(deadline)}{idle}"


def decide(job, by_id: dict[int, object], now: dt.datetime) -> Decision | None:
    """What the job does at `now`, or None when it is not due."""
    due = due_moment(job, now)
    if due is None:
        return None
    due_at, retry = due
    if retry or not job.depends_on_ids:
        return Decision(job, RUN, "retry" if retry else "due", due_at, retry)
    states = []
    for pred_id in job.depends_on_ids:
        pred = by_id.get(pred_id)
        if pred is None:  # removed meanwhile (removal is refused, but a row may be edited by hand)
            states.append((SKIP, f"skipped: a schedule it runs after (id {pred_id}) no longer exists"))
        else:
            states.append(predecessor_state(job, pred, due_at, now))
    for verdict in (SKIP, WAIT):
        reasons = [reason for v, reason in states if v == verdict]
        if reasons:
            return Decision(job, verdict, "; ".join(reasons), due_at)
    return Decision(job, RUN, "after " + " and ".join(reason for _, reason in states), due_at)


def decisions(jobs: Iterable, now: dt.datetime) -> list[Decision]:
    """The decisions of every due job, in the order they should start."""
    jobs = list(jobs)
    by_id = {j.id: j for j in jobs}
    found = [d for d in (decide(j, by_id, now) for j in jobs) if d is not None]
    return sorted(found, key=Decision.sort_key)


# --- the graph ---------------------------------------------------------------------------

def find_cycle(edges: dict[int, list[int]], start: int) -> list[int] | None:
    """A path start → ... → start through `edges` (job id -> ids it runs after), if any."""
    path: list[int] = []
    seen: set[int] = set()

    def visit(node: int) -> bool:
        for nxt in edges.get(node, []):
            if nxt == start:
                path.append(nxt)
                return True
            if nxt in seen:
                continue
            seen.add(nxt)
            path.append(nxt)
            if visit(nxt):
                return True
            path.pop()
        return False

    return [start, *path] if visit(start) else None


def chains(jobs: Iterable) -> list[list[str]]:
    """Each chain of dependent jobs as names in the order they run, one list per job that
    nothing waits for (the end of a chain), e.g. [["erp-sites", "erp-meters", "kpis"]].
    A job with several predecessors lists them all before it (depth first)."""
    jobs = list(jobs)
    by_id = {j.id: j for j in jobs}
    waited_for = {p for j in jobs for p in j.depends_on_ids}
    result = []
    for job in sorted(jobs, key=lambda j: j.name):
        if not job.depends_on_ids or job.id in waited_for:
            continue
        order: list[str] = []

        def walk(j, trail: frozenset) -> None:
            for pred_id in j.depends_on_ids:
                pred = by_id.get(pred_id)
                if pred is not None and pred.id not in trail:
                    walk(pred, trail | {pred.id})
            if j.name not in order:
                order.append(j.name)

        walk(job, frozenset({job.id}))
        result.append(order)
    return result


def waiting_for(job, jobs: Iterable) -> list[str]:
    """Names of the jobs that run after `job`."""
    return sorted(j.name for j in jobs if job.id in j.depends_on_ids)
