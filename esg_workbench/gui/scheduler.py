"""The in-app scheduler: while the window is open, due schedules start by themselves.

A QTimer (every 30 s) asks a worker for the due jobs and claims each one there (a
compare-and-set on next_run_at, so two windows or a CLI run on one workspace never both
take it). The first check runs as soon as a workspace is open: runs missed while the
machine was off run once, because claiming moves next_run_at past now in one step.

A claimed sync starts through the same `SyncJobs` a Sync click uses, so it shows in the
Sync tab with progress and Cancel; a rediscovery runs `discover_connector` in a worker,
as the schema browser's Refresh does. One connector never runs two jobs at once: a job
whose connector is syncing in this window is recorded `skipped` and says so, and the
engine's own lock (SyncBusy) covers other processes. Every ending is recorded with
`record_outcome` and told in the status bar.

Dependencies, priorities and the limit of syncs at once are the engine-side scheduler's
(sync/scheduler.py): a check takes the due jobs in their order, records the ones to skip
(a predecessor failed, with the reason), leaves the waiting ones for a later check and
holds a concurrency slot for each run it starts until that run ends. A pending retry of a
failed or partial run starts like a slot, as the retry it is.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from esg_workbench.core.errors import EsgError
from esg_workbench.gui.sync_jobs import SyncJob, SyncJobs
from esg_workbench.gui.workers import WorkerPool

log = logging.getLogger(__name__)

CHECK_INTERVAL_MS = 30_000
WHAT = {"sync": "Scheduled sync", "retry_failed": "Scheduled retry of failed chunks",
        "discover": "Scheduled rediscovery"}


@dataclass
class Claimed:
    """A job this process took, with the sync to start (None for a rediscovery or when
    the request could not be made: then its failed outcome is recorded already)."""

    job: Any  # ScheduledJob
    request: Any = None  # SyncRequest
    failed: Any = None  # the JobOutcome recorded when the request could not be made (or a skip)
    retry: bool = False  # a retry of the job's failed or partial run
    slots: Any = None  # schedule_slots.Held while the run goes on
    waiting: str | None = None  # not started: no concurrency slot was free (why)

    def release(self) -> None:
        if self.slots is not None:
            self.slots.release()


def _first_line(text: str | None) -> str:
    return (text or "").split("\nWhat to do:")[0].strip()


def _request(workspace, job, retry: bool = False) -> Claimed:
    from esg_workbench.sync import scheduler

    try:
        request = scheduler.request_for(workspace, job, retry=retry)
    except EsgError as exc:
        return Claimed(job, failed=finish(workspace, _outcome(job, "failed", exc.describe(), retry=retry)),
                       retry=retry)
    if request is not None:
        # SyncJobs (and the Sync tab) know a connector by its name
        request = dataclasses.replace(request, connector=job.connector)
    return Claimed(job, request, retry=retry)


def claim_due(workspace) -> list[Claimed]:
    """In a worker: the due jobs this process claimed, in their order (priority, then the
    longest overdue), each with its sync request and its concurrency slots; jobs skipped
    for their dependencies come back with their recorded outcome as `failed`."""
    from esg_workbench.sync import schedule_plan, scheduler
    from esg_workbench.workspace import schedule_slots

    claimed = []
    for decision in scheduler.pending(workspace):
        job = decision.job
        if decision.verdict == schedule_plan.WAIT:
            continue
        if decision.verdict == schedule_plan.SKIP:
            skipped = scheduler.skip(workspace, decision)
            if skipped is not None:
                claimed.append(Claimed(job, failed=skipped))
            continue
        slots = scheduler.take_slots(workspace, job)
        if isinstance(slots, schedule_slots.Busy):  # a later check starts it when a slot is free
            claimed.append(Claimed(job, waiting=slots.describe()))
            continue
        if not scheduler.claim(workspace, job, retry=decision.retry):
            slots.release()
            continue
        c = _request(workspace, job, decision.retry)
        c.slots = slots
        if c.failed is not None:
            c.release()
        claimed.append(c)
    return claimed


def prepare(workspace, name: str) -> Claimed:
    """In a worker, for Run now: the job as stored now, with its sync request."""
    from esg_workbench.sync import scheduler

    return _request(workspace, scheduler.get_job(workspace, name))


def _outcome(job, status: str, message: str, run_id: int | None = None, result: Any = None, retry: bool = False):
    from esg_workbench.sync import scheduler

    outcome = scheduler.JobOutcome(job.name, job.connector, job.action, status, message, run_id, result)
    if retry:
        outcome.attempt, outcome.first_run_id = job.retry_attempt or 2, job.retry_first_run_id
    return outcome


def finish(workspace, outcome):
    """In a worker: store the outcome on the job; returns it. (A failed or partial sync's
    alert is sent by gui/notifications.py, as for every sync of the window.)"""
    from esg_workbench.sync import scheduler

    scheduler.record_outcome(workspace, outcome)
    return outcome


def discover_and_record(workspace, job, retry: bool = False, slots=None):
    """In a worker: rediscover the connector as `run_job` does (under the connector's
    sync lock, so never beside a sync of it), then record the outcome."""
    from esg_workbench.sync import scheduler
    from esg_workbench.sync.engine import SyncEngine

    try:
        outcome = scheduler.execute(workspace, job, SyncEngine(workspace), retry=retry)
    finally:
        if slots is not None:
            slots.release()
    return finish(workspace, outcome)


def sync_outcome(sync_job: SyncJob) -> tuple[str, str, int | None, Any]:
    """(status, message, run_id, result) of a finished SyncJob, worded as the CLI's."""
    from esg_workbench.sync import scheduler

    result = sync_job.result
    if result is not None:
        return result.status.value, scheduler.sync_message(result), result.run_id, result
    error = sync_job.error or "The sync failed."
    if sync_job.busy:
        return "skipped", f"{_first_line(error)} This run was skipped.", None, None
    return "failed", error, None, None


class InAppScheduler(QObject):
    """Owned by the main window; starts due schedules while it is open."""

    started = Signal(object)  # ScheduledJob whose run started
    outcome_recorded = Signal(object)  # JobOutcome
    checked = Signal(list)  # [ScheduledJob] claimed by one check
    waiting_changed = Signal(dict)  # job name -> why it waits for a concurrency slot (after each check)
    message = Signal(str)  # for the status bar

    def __init__(self, pool: WorkerPool, jobs: SyncJobs, parent: QObject | None = None, *,
                 interval_ms: int = CHECK_INTERVAL_MS, can_start: Callable[[], bool] = lambda: True):
        super().__init__(parent)
        self.pool = pool
        self.jobs = jobs
        self.can_start = can_start
        self.workspace = None
        self._checking = False
        self._syncs: dict[SyncJob, Claimed] = {}  # running syncs this scheduler started -> their claim
        self._discovering: set[str] = set()  # connectors being rediscovered by a schedule
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.check_now)
        jobs.ended.connect(self._sync_ended)

    def set_interval(self, ms: int) -> None:
        self.timer.setInterval(ms)

    def set_workspace(self, workspace) -> None:
        """A workspace was opened: check at once (missed runs), then every interval."""
        self.workspace = workspace
        self._checking = False  # a check in flight belonged to the old workspace (its result is dropped)
        self._discovering.clear()
        if workspace is None:
            self.timer.stop()
            return
        self.timer.start()
        self.check_now()

    def stop(self) -> None:
        self.timer.stop()
        self.workspace = None

    def busy(self, connector: str) -> bool:
        job = self.jobs.job(connector)
        return bool(job and job.running) or connector in self._discovering

    # --- checking --------------------------------------------------------------------------

    @Slot()
    def check_now(self) -> None:
        if self.workspace is None or self._checking or not self.can_start():
            return
        self._checking = True
        workspace = self.workspace

        def failed(message: str) -> None:
            self._checking = False
            log.warning("checking the schedules failed: %s", message)
            self.message.emit(f"Could not check the schedules: {_first_line(message)}")

        self.pool.run(claim_due, workspace, on_done=lambda claimed: self._claimed(workspace, claimed),
                      on_error=failed, owner=self)

    def _claimed(self, workspace, claimed: list[Claimed]) -> None:
        self._checking = False
        if workspace is not self.workspace:
            return
        self.waiting_changed.emit({c.job.name: c.waiting for c in claimed if c.waiting})
        started = [c for c in claimed if not c.waiting]
        for c in started:
            self._start(c)
        self.checked.emit([c.job for c in started])

    def run_now(self, job) -> None:
        """Run a schedule's job now (Run now), whatever its times; they stay as they are."""
        if self.workspace is None:
            return
        workspace = self.workspace

        def ready(c: Claimed) -> None:
            if workspace is self.workspace:
                self._start(c, now=True)

        self.pool.run(prepare, workspace, job.name, on_done=ready,
                      on_error=lambda m: self.message.emit(f"Could not run schedule '{job.name}': {_first_line(m)}"),
                      owner=self)

    # --- starting ----------------------------------------------------------------------------

    def _start(self, c: Claimed, now: bool = False) -> None:
        job = c.job
        what = WHAT.get(job.action, "Scheduled job")
        label = f"{what} of '{job.connector}'"
        via = f"schedule '{job.name}'" + (", run now" if now else "")
        if c.failed is not None:
            verb = "skipped" if c.failed.status == "skipped" else "could not start"
            self._announce(f"{label} {verb} ({via}): {_first_line(c.failed.message)}")
            self.outcome_recorded.emit(c.failed)
            return
        if not self.can_start():  # the window is closing: say so rather than lose the claimed run silently
            c.release()
            self._record(job, "skipped", f"{label} skipped ({via}): ESG Workbench was closing.", retry=c.retry)
            return
        if self.busy(job.connector):
            c.release()
            text = f"{label} skipped ({via}): '{job.connector}' is already " + (
                "being rediscovered." if job.connector in self._discovering else "syncing in this window.")
            self._announce(text)
            self._record(job, "skipped", text, retry=c.retry)
            return
        if job.action == "discover" or c.request is None:
            self._discovering.add(job.connector)
            workspace = self.workspace

            def done(outcome) -> None:
                self._discovering.discard(job.connector)
                self._announce(f"{label} ({via}) {'done' if outcome.status == 'success' else outcome.status}: "
                               f"{_first_line(outcome.message)}")
                self.outcome_recorded.emit(outcome)

            def failed(message: str) -> None:
                self._discovering.discard(job.connector)
                self._announce(f"{label} ({via}) failed: {_first_line(message)}")

            self.pool.run(discover_and_record, workspace, job, c.retry, c.slots, on_done=done, on_error=failed,
                          owner=self)
        else:
            try:
                sync_job = self.jobs.start(self.workspace, c.request)
            except RuntimeError:  # a sync of the connector began since the check above
                c.release()
                text = f"{label} skipped ({via}): '{job.connector}' is already syncing in this window."
                self._announce(text)
                self._record(job, "skipped", text, retry=c.retry)
                return
            self._syncs[sync_job] = c
            sync_job._log(f"Started by {via}.")
        self._announce(f"{label} started ({via}).")
        self.started.emit(job)

    def _announce(self, text: str) -> None:
        self.message.emit(text)

    def _record(self, job, status: str, message: str, run_id: int | None = None, result: Any = None,
                retry: bool = False) -> None:
        if self.workspace is None:
            return
        self.pool.run(finish, self.workspace, _outcome(job, status, message, run_id, result, retry),
                      on_done=self.outcome_recorded.emit,
                      on_error=lambda m: self.message.emit(
                          f"Could not record the run of schedule '{job.name}': {_first_line(m)}"),
                      owner=self)

    # --- endings -----------------------------------------------------------------------------

    @Slot(object)
    def _sync_ended(self, sync_job: SyncJob) -> None:
        c = self._syncs.pop(sync_job, None)
        if c is None:
            return  # a sync the user started
        c.release()
        job = c.job
        status, message, run_id, result = sync_outcome(sync_job)
        if status == "skipped":
            self._announce(f"{WHAT.get(job.action, 'Scheduled job')} of '{job.connector}' skipped "
                           f"(schedule '{job.name}'): {_first_line(sync_job.error)}")
        self._record(job, status, message, run_id, result, retry=c.retry)


def install_scheduling(window, interval_ms: int = CHECK_INTERVAL_MS) -> None:
    """Add the Schedules tab and the in-app scheduler to a MainWindow and wire them to
    its workspace, its connectors, its syncs and its status bar."""
    from esg_workbench.gui import icons
    from esg_workbench.gui.schedules_panel import SchedulesPanel

    window.schedules = SchedulesPanel(window.pool)
    window.tabs.addTab(window.schedules, icons.standard("SP_FileDialogContentsView"), "Schedules")
    window.scheduler = InAppScheduler(window.pool, window.jobs, window, interval_ms=interval_ms,
                                      can_start=lambda: not window._closing)

    def workspace_ready(workspace) -> None:
        window.schedules.set_workspace(workspace)
        window.scheduler.set_workspace(workspace)

    def recorded(_outcome) -> None:
        window.schedules.refresh()
        window.history.refresh()

    window.workspace_ready.connect(workspace_ready)
    window.connectors_loaded.connect(lambda overviews: window.schedules.set_connectors([o.name for o in overviews]))
    window.schedules.run_requested.connect(window.scheduler.run_now)
    window.schedules.message.connect(window.show_message)
    window.scheduler.message.connect(window.show_message)
    window.scheduler.started.connect(lambda _job: window.schedules.refresh())
    window.scheduler.outcome_recorded.connect(recorded)
    window.scheduler.waiting_changed.connect(window.schedules.set_waiting)
    window.tabs.currentChanged.connect(
        lambda i: window.schedules.refresh() if window.tabs.widget(i) is window.schedules else None)
    if getattr(window, "workspace", None) is not None:
        workspace_ready(window.workspace)
