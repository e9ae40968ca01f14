"""Background work: every workspace or source call runs off the GUI thread.

Two kinds of worker, both QObjects moved to a QThread (the Spyder/napari pattern):

* `Task` runs one plain function (list connectors, discover, load samples, verify the
  chain...) and reports `done(result)` or `failed(message)`.
* `SyncWorker` runs `SyncEngine.run` and turns its progress callback into a signal;
  `cancel()` sets the engine's CancelToken from the GUI thread.

`WorkerPool` owns the threads: it keeps each worker and thread alive until the thread
has finished, delivers results on the GUI thread (its own slots, so the connection is
queued), drops results that arrive after a workspace switch or after their owner
widget died, and `shutdown()` waits for everything at exit.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot
from shiboken6 import isValid

from esg_workbench.core.errors import EsgError

log = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    """What the user sees: the message and what to do; never a traceback."""
    if isinstance(exc, EsgError):
        return exc.describe()
    first = str(exc).splitlines()[0] if str(exc) else ""
    return (f"Unexpected error ({type(exc).__name__}{': ' + first if first else ''}).\n"
            "What to do: try again; if it persists, report it with the log file.")


class Task(QObject):
    """Runs `fn(*args, **kwargs)` once in its thread."""

    done = Signal(object, object)  # (task, result)
    failed = Signal(object, str)  # (task, message)

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.on_done: Callable[[Any], None] | None = None
        self.on_error: Callable[[str], None] | None = None
        self.owner: QObject | None = None
        self.generation = 0
        self.thread_: QThread | None = None

    @Slot()
    def run(self) -> None:
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - everything becomes a message
            if not isinstance(exc, EsgError):
                log.error("background task %s failed:\n%s", getattr(self.fn, "__name__", self.fn), traceback.format_exc())
            self.failed.emit(self, describe_error(exc))
        else:
            self.done.emit(self, result)


class SyncWorker(QObject):
    """Runs one sync; progress, finished and failed arrive on the GUI thread."""

    progress = Signal(object)  # ProgressEvent
    finished = Signal(object)  # SyncResult
    failed_kind = Signal(str)  # the error's class name (e.g. "SyncBusy"), just before `failed`
    failed = Signal(str)

    def __init__(self, workspace, request, retry_delays: tuple[float, ...] | None = None):
        super().__init__()
        from esg_workbench.core.specs import CancelToken

        self.workspace = workspace
        self.request = request
        self.retry_delays = retry_delays
        self.cancel_token = CancelToken()

    def cancel(self) -> None:
        self.cancel_token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    @Slot()
    def run(self) -> None:
        from esg_workbench.sync.engine import DEFAULT_RETRY_DELAYS, SyncEngine

        try:
            engine = SyncEngine(self.workspace, on_progress=self.progress.emit, cancel=self.cancel_token,
                                retry_delays=self.retry_delays or DEFAULT_RETRY_DELAYS)
            result = engine.run(self.request)
        except BaseException as exc:  # noqa: BLE001
            if not isinstance(exc, EsgError):
                log.error("sync failed:\n%s", traceback.format_exc())
            self.failed_kind.emit(type(exc).__name__)
            self.failed.emit(describe_error(exc))
        else:
            self.finished.emit(result)


class WorkerPool(QObject):
    """Starts workers in threads and keeps them alive until their threads end."""

    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._threads: set[QThread] = set()
        self._objects: dict[QThread, QObject] = {}
        self.generation = 0

    # --- plain tasks ------------------------------------------------------------------

    def run(self, fn: Callable[..., Any], *args: Any, on_done: Callable[[Any], None] | None = None,
            on_error: Callable[[str], None] | None = None, owner: QObject | None = None, **kwargs: Any) -> Task:
        task = Task(fn, *args, **kwargs)
        task.on_done, task.on_error, task.owner, task.generation = on_done, on_error, owner, self.generation
        task.done.connect(self._task_done)
        task.failed.connect(self._task_failed)
        self._start(task, task.run, (task.done, task.failed))
        return task

    def _alive(self, task: Task) -> bool:
        if task.generation != self.generation:
            return False
        return task.owner is None or isValid(task.owner)

    @Slot(object, object)
    def _task_done(self, task: Task, result: Any) -> None:
        if self._alive(task) and task.on_done is not None:
            task.on_done(result)

    @Slot(object, str)
    def _task_failed(self, task: Task, message: str) -> None:
        if not self._alive(task):
            return
        if task.on_error is not None:
            task.on_error(message)
        else:
            log.warning("background task failed: %s", message)

    # --- syncs --------------------------------------------------------------------------

    def start_sync(self, worker: SyncWorker) -> QThread:
        return self._start(worker, worker.run, (worker.finished, worker.failed))

    # --- threads ------------------------------------------------------------------------

    def _start(self, worker: QObject, entry, ends) -> QThread:
        thread = QThread()
        thread.setObjectName(f"esg-{type(worker).__name__}")
        worker.moveToThread(thread)
        thread.started.connect(entry)
        for signal in ends:
            signal.connect(thread.quit)
        thread.finished.connect(self._thread_finished)
        was_idle = not self._threads
        self._threads.add(thread)
        self._objects[thread] = worker
        thread.start()
        if was_idle:
            self.busy_changed.emit(True)
        return thread

    @Slot()
    def _thread_finished(self) -> None:
        thread = self.sender()
        if thread not in self._threads:
            return
        self._threads.discard(thread)
        worker = self._objects.pop(thread, None)
        if worker is not None:
            worker.deleteLater()
        thread.deleteLater()
        if not self._threads:
            self.busy_changed.emit(False)

    @property
    def busy(self) -> bool:
        return bool(self._threads)

    def active(self) -> int:
        return len(self._threads)

    def forget_results(self) -> None:
        """Results of tasks started before now are dropped (workspace switched)."""
        self.generation += 1

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Wait for every thread (syncs must be cancelled first); True if all ended."""
        self.forget_results()
        ok = True
        for thread in list(self._threads):
            thread.quit()
            ok = thread.wait(timeout_ms) and ok
        for thread in list(self._threads):
            if thread.isFinished():
                self._threads.discard(thread)
                worker = self._objects.pop(thread, None)
                if worker is not None:
                    worker.deleteLater()
                thread.deleteLater()
        return ok
