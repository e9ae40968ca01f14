"""Running syncs, one per connector, several at once.

A `SyncJob` owns one `SyncWorker` in its thread and keeps what the sync panel shows:
the latest progress of each stream, overall figures and the live log. `SyncJobs`
starts jobs, cancels them (all of them when the window closes) and tells everyone when
one changes or ends.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal, Slot

from esg_workbench.gui.workers import SyncWorker, WorkerPool


def retry_delays() -> tuple[float, ...] | None:
    """ESG_WORKBENCH_RETRY_DELAYS="0.1,0.2" shortens the backoff (as in the CLI)."""
    text = os.environ.get("ESG_WORKBENCH_RETRY_DELAYS")
    return tuple(float(x) for x in text.split(",")) if text else None


@dataclass
class Figures:
    """Overall figures of a job, from the latest event of each stream."""

    streams_total: int | None = None
    chunks_done: int = 0
    chunks_planned: int = 0
    chunks_failed: int = 0
    rows_read: int = 0
    rows_written: int = 0
    elapsed: float = 0.0
    stream: str = ""
    current_chunk: str = ""
    per_stream: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # done, planned, failed
    #: every table the sync will read, with its estimated rows (None: unknown), when the
    #: starter knows them: progress then counts all of them, not only those begun
    planned: dict[str, int | None] = field(default_factory=dict)

    def weights(self) -> dict[str, float]:
        """Each table's share of the work: its estimated rows (the mean of the known
        estimates when it has none; equal shares when none is known)."""
        names = list(self.planned) + [s for s in self.per_stream if s not in self.planned]
        known = [e for e in self.planned.values() if e and e > 0]
        mean = sum(known) / len(known) if known else 1.0
        weights = {}
        for name in names:
            estimate = self.planned.get(name)
            weights[name] = float(estimate) if estimate and estimate > 0 else mean
        return weights

    @property
    def fraction(self) -> float:
        if not self.per_stream:
            return 0.0
        parts = {s: (d + f) / p if p else 1.0 for s, (d, p, f) in self.per_stream.items()}
        if self.planned:  # by rows over every planned table; those not begun count as 0
            weights = self.weights()
            return min(1.0, sum(weights[s] * parts.get(s, 0.0) for s in weights) / sum(weights.values()))
        total = max(self.streams_total or 0, len(parts))
        # the stream being read counts by its chunks; streams not begun count as 0
        return min(1.0, sum(parts.values()) / total)

    @property
    def rate(self) -> float:
        return self.rows_written / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the measured rate: rows still to read over rows per second when
        the tables' sizes are estimated, else the time so far scaled by what is left."""
        f = self.fraction
        if f <= 0 or self.elapsed <= 0:
            return None
        estimated = sum(e for e in self.planned.values() if e and e > 0)
        if estimated and all((e or 0) > 0 for e in self.planned.values()) and self.rate > 0:
            return max(0.0, estimated - self.rows_read) / self.rate
        return self.elapsed / f * (1 - f)


class SyncJob(QObject):
    changed = Signal(object)  # self
    logged = Signal(object, str)  # self, line
    ended = Signal(object)  # self

    def __init__(self, workspace, request, parent: QObject | None = None):
        super().__init__(parent)
        self.connector = request.connector
        self.request = request
        self.worker = SyncWorker(workspace, request, retry_delays())
        self.token = self.worker.cancel_token  # outlives the worker (deleted when its thread ends)
        self.figures = Figures(streams_total=len(request.tables) if request.tables else None)
        self.log: list[str] = []
        self._stream_rows: dict[str, tuple[int, int]] = {}
        self.running = True
        self.cancel_requested_at: float | None = None  # time.monotonic() of the first Cancel
        self.result = None
        self.error: str | None = None
        self.error_kind: str | None = None  # the error's class name when the sync could not run
        self.worker.progress.connect(self._progress)
        self.worker.finished.connect(self._finished)
        self.worker.failed_kind.connect(self._failed_kind)
        self.worker.failed.connect(self._failed)

    @property
    def cancelling(self) -> bool:
        return self.running and self.token.cancelled

    @property
    def percent(self) -> int:
        return int(round(self.figures.fraction * 100))

    def cancel(self) -> None:
        if self.running and not self.token.cancelled:
            self.token.cancel()
            self.cancel_requested_at = time.monotonic()
            self._log("Cancelling: the sync stops after the chunk being written…")
            self.changed.emit(self)
        elif self.cancelling:  # Cancel again: say what it waits for
            self._log(self.cancel_wait_text())
            self.changed.emit(self)

    def cancel_wait_text(self) -> str:
        """What a cancelling sync is waiting for, and since when."""
        waited = time.monotonic() - (self.cancel_requested_at or time.monotonic())
        f = self.figures
        chunk = f" {f.stream} {f.current_chunk}".rstrip() if f.stream else ""
        return (f"Still cancelling after {waited:.0f} s: the chunk being written{' (' + chunk.strip() + ')' if chunk else ''}"
                " is finished first, so that nothing is half-landed; the sync stops right after it.")

    def _log(self, text: str) -> None:
        line = f"{dt.datetime.now():%H:%M:%S}  {text}"
        self.log.append(line)
        if len(self.log) > 5000:
            del self.log[:1000]
        self.logged.emit(self, line)

    @Slot(object)
    def _progress(self, event) -> None:
        f = self.figures
        f.per_stream[event.stream] = (event.chunks_done, event.chunks_planned, event.chunks_failed)
        f.chunks_done = sum(v[0] for v in f.per_stream.values())
        f.chunks_planned = sum(v[1] for v in f.per_stream.values())
        f.chunks_failed = sum(v[2] for v in f.per_stream.values())
        # rows are counted per stream in the events: the job's totals are their sums
        self._stream_rows[event.stream] = (event.rows_read, event.rows_written)
        f.rows_read = sum(r for r, _ in self._stream_rows.values())
        f.rows_written = sum(w for _, w in self._stream_rows.values())
        f.elapsed = event.elapsed_seconds
        f.stream = event.stream
        if event.current_chunk:
            f.current_chunk = event.current_chunk
        if event.message == "planned":
            self._log(f"{event.stream}: {event.chunks_planned} chunk(s) planned, {event.chunks_done} already done")
        elif event.current_chunk:
            failed = f", {event.chunks_failed} failed" if event.chunks_failed else ""
            self._log(f"{event.stream}: chunk {event.chunks_done + event.chunks_failed}/{event.chunks_planned} "
                      f"{event.current_chunk} landed{failed}; {event.rows_written:,} rows")
        elif event.message:
            self._log(f"{event.stream}: {event.message}")
        self.changed.emit(self)

    @Slot(object)
    def _finished(self, result) -> None:
        self.running = False
        self.result = result
        f = self.figures
        f.rows_read, f.rows_written = result.rows_read, result.rows_written
        f.elapsed = result.seconds
        for s in result.streams:
            if s.error:
                self._log(f"{s.stream}: {s.error}")
            if s.drift:
                self._log(f"{s.stream}: schema drift: {s.drift}")
            for w in s.warnings:
                self._log(f"{s.stream}: note: {w}")
        took = (f"in {result.seconds:.1f} s, mapping the new rows and the KPIs included" if result.mapped
                else f"in {result.seconds:.1f} s")
        self._log(f"Sync {result.status.value.replace('_', ' ')} {took} (run {result.run_id}): "
                  f"{result.rows_written:,} rows landed." + (f" {result.error}" if result.error and result.status.value != "success" else ""))
        self.changed.emit(self)
        self.ended.emit(self)

    @property
    def busy(self) -> bool:
        """The connector was already syncing in another window or process: nothing ran."""
        return self.error_kind == "SyncBusy"

    @Slot(str)
    def _failed_kind(self, kind: str) -> None:
        self.error_kind = kind

    @Slot(str)
    def _failed(self, message: str) -> None:
        self.running = False
        self.error = message
        self._log(f"Not started: {message}" if self.busy else f"Sync failed: {message}")
        self.changed.emit(self)
        self.ended.emit(self)

    @property
    def status_text(self) -> str:
        if self.running:
            return "cancelling" if self.token.cancelled else "running"
        if self.result is not None:
            return self.result.status.value
        return "failed"


class SyncJobs(QObject):
    """All running (and the last finished) sync of each connector."""

    changed = Signal(object)  # job
    logged = Signal(object, str)
    ended = Signal(object)
    running_changed = Signal(int)  # number of running jobs

    def __init__(self, pool: WorkerPool, parent: QObject | None = None):
        super().__init__(parent)
        self.pool = pool
        self.jobs: dict[str, SyncJob] = {}

    def start(self, workspace, request, planned: list[tuple[str, int | None]] | None = None) -> SyncJob:
        """`planned`: the tables the sync will read with their estimated rows (progress
        and ETA then count all of them from the start)."""
        current = self.jobs.get(request.connector)
        if current is not None and current.running:
            raise RuntimeError(f"{request.connector} is already syncing")
        job = SyncJob(workspace, request, self)
        if planned:
            job.figures.planned = {name: estimate for name, estimate in planned
                                   if not request.tables or name in request.tables}
        job.changed.connect(self.changed)
        job.logged.connect(self.logged)
        job.ended.connect(self._ended)
        self.jobs[request.connector] = job
        mode = "Retrying the failed chunks" if request.retry_failed else "Resuming" if request.resume else "Starting"
        job._log(f"{mode} the sync of {request.connector}"
                 + (f" ({', '.join(request.tables)})" if request.tables else "") + "…")
        self.pool.start_sync(job.worker)
        self.running_changed.emit(self.running_count())
        self.changed.emit(job)
        return job

    @Slot(object)
    def _ended(self, job: SyncJob) -> None:
        self.ended.emit(job)
        self.running_changed.emit(self.running_count())

    def job(self, connector: str | None) -> SyncJob | None:
        return self.jobs.get(connector) if connector else None

    def running(self) -> list[SyncJob]:
        return [j for j in self.jobs.values() if j.running]

    def running_count(self) -> int:
        return len(self.running())

    def cancel_all(self) -> None:
        for job in self.running():
            job.cancel()

    def rename(self, old: str, new: str) -> None:
        if old in self.jobs and not self.jobs[old].running:
            self.jobs[new] = self.jobs.pop(old)

    def clear(self) -> None:
        """Forget finished jobs (workspace switched)."""
        self.jobs = {k: j for k, j in self.jobs.items() if j.running}
