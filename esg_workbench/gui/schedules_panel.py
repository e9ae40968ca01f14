"""The Schedules tab: the workspace's scheduled jobs (what, when in plain words, the next
run in the schedule's zone, the last run and how it ended, what each runs after and what
it does now: waiting and why, skipped and why, a retry pending), with New, Edit, Enable or
Disable, Remove and Run now; below, the chains (what waits for what), the next runs of all
schedules and the limits of syncs at once. An empty workspace gets a short explanation
instead."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStackedWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.core.errors import EsgError
from esg_workbench.gui import dialogs, icons
from esg_workbench.gui.data_grid import record_table
from esg_workbench.gui.schedule_dialog import ACTION_LABELS, ScheduleDialog, ScheduleValues, action_text

COLUMNS = ("Enabled", "Name", "Connector", "Action", "When", "Next run", "Runs after", "Now", "Last run", "Result")
ENABLED, NAME, CONNECTOR, ACTION, WHEN, NEXT, AFTER, NOW, LAST, RESULT = range(len(COLUMNS))
STATUS_KIND = {"success": "ok", "partial_success": "warn", "cancelled": "warn", "skipped": "warn",
               "failed": "error", "running": "info"}
JOB = Qt.ItemDataRole.UserRole + 1

EMPTY_TEXT = (
    "<h3>No schedules yet</h3>"
    "<p>A schedule runs a connector's sync by itself: every night, every weekday morning, every hour…"
    " While ESG Workbench is open, due schedules start in the background and show up in the Sync tab"
    " like a sync you started. Runs missed while the computer was off run once at the next start.</p>"
    "<p>Schedules can also run without the app, from the command line (see the README).</p>"
)


def _utc(moment: dt.datetime) -> dt.datetime:
    """The workspace stores naive UTC."""
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment


def when_words(moment: dt.datetime | None, zone: str | None, now: dt.datetime | None = None) -> str:
    """'today 02:00 CET', 'tomorrow 02:00 CET', 'Mon 30 Nov 2026, 02:00 CET' in the schedule's zone."""
    if moment is None:
        return ""
    from esg_workbench.sync import cron

    try:
        tz = cron.zone(zone)
    except EsgError:
        tz = dt.timezone.utc
    local = _utc(moment).astimezone(tz)
    today = (now or dt.datetime.now(dt.timezone.utc)).astimezone(tz).date()
    days = (local.date() - today).days
    clock = f"{local:%H:%M} {local.tzname() or ''}".rstrip()
    if days == 0:
        return f"today {clock}"
    if days == 1:
        return f"tomorrow {clock}"
    if days == -1:
        return f"yesterday {clock}"
    return f"{local:%a %d %b %Y}, {clock}"


def after_words(job) -> str:
    """'Runs after sites and meters succeeded (or partially), within 120 minutes of its time.'"""
    from esg_workbench.sync.schedule_plan import DEFAULT_WINDOW_MINUTES

    ending = " succeeded (or partially)" if job.dependency_accepts_partial else " succeeded"
    window = job.dependency_window_minutes or DEFAULT_WINDOW_MINUTES
    return (f"Runs after {' and '.join(job.depends_on)}{ending}, within {window} minutes of its time; "
            f"otherwise it is skipped and says why.")


def plan_text(overview) -> str:
    """Chains, the next runs and the limits, as a few plain lines."""
    lines = []
    if overview.chains:
        lines.append("Chains: " + "; ".join(" → ".join(chain) for chain in overview.chains))
    if overview.upcoming:
        runs = [f"{when:%a %H:%M} UTC {name}" + (f" ({note})" if note else "")
                for when, name, note in overview.upcoming[:6]]
        lines.append("Next runs: " + ", ".join(runs))
    lines.append("Limits: " + overview.limits.describe() + ".")
    return "\n".join(lines)


def describe_cron(expr: str) -> str:
    from esg_workbench.sync import cron

    try:
        return cron.describe(expr)
    except EsgError as exc:
        return f"invalid: {exc.message}"


class SchedulesPanel(QWidget):
    loaded = Signal()
    message = Signal(str)
    run_requested = Signal(object)  # ScheduledJob: the in-app scheduler runs it now
    changed = Signal()  # a schedule was added, edited, enabled, disabled or removed

    def __init__(self, pool, parent: QWidget | None = None):
        super().__init__(parent)
        self.pool = pool
        self.workspace = None
        self.connector_names: list[str] = []
        self.jobs: list[Any] = []
        self._request = 0

        self.new_button = QPushButton(icons.standard("SP_FileIcon"), "&New schedule…")
        self.new_button.setObjectName("newSchedule")
        self.edit_button = QPushButton(icons.standard("SP_FileDialogDetailedView"), "&Edit…")
        self.edit_button.setObjectName("editSchedule")
        self.toggle_button = QPushButton(icons.standard("SP_MediaPause"), "&Disable")
        self.toggle_button.setObjectName("toggleSchedule")
        self.remove_button = QPushButton(icons.standard("SP_TrashIcon"), "&Remove…")
        self.remove_button.setObjectName("removeSchedule")
        self.run_button = QPushButton(icons.standard("SP_MediaPlay"), "R&un now")
        self.run_button.setObjectName("runSchedule")
        self.run_button.setToolTip("Run the selected schedule's job now; its regular times stay as they are")
        bar = QHBoxLayout()
        for b in (self.new_button, self.edit_button, self.toggle_button, self.remove_button, self.run_button):
            bar.addWidget(b)
        bar.addStretch(1)

        self.table = record_table("schedulesTable", COLUMNS, QAbstractItemView.SelectionMode.SingleSelection)

        self.empty = QWidget()
        self.empty.setObjectName("schedulesEmpty")
        self.empty_text = QLabel(EMPTY_TEXT)
        self.empty_text.setWordWrap(True)
        self.empty_text.setFixedWidth(600)  # a fixed width lets the wrapped text take its full height
        self.empty_new = QPushButton(icons.standard("SP_FileIcon"), "New schedule…")
        self.empty_new.setObjectName("emptyNewSchedule")
        el = QVBoxLayout(self.empty)
        el.addStretch(1)
        row = QHBoxLayout()  # centred by stretches, not alignment: the label keeps its height for width
        row.addStretch(1)
        row.addWidget(self.empty_text)
        row.addStretch(1)
        el.addLayout(row)
        el.addWidget(self.empty_new, 0, Qt.AlignmentFlag.AlignHCenter)
        el.addStretch(2)

        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        self.details = QLabel()
        self.details.setObjectName("scheduleDetails")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plan = QLabel()
        self.plan.setObjectName("schedulePlan")
        self.plan.setWordWrap(True)
        self.plan.setTextFormat(Qt.TextFormat.PlainText)
        self.plan.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.overview = None  # scheduler.Overview of the last refresh
        self.waiting: dict[str, str] = {}  # job name -> why the in-app scheduler could not start it
        self.status = QLabel()
        self.status.setObjectName("schedulesStatus")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #666;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.details)
        layout.addWidget(self.plan)
        layout.addWidget(self.status)

        self.new_button.clicked.connect(self.new_schedule)
        self.empty_new.clicked.connect(self.new_schedule)
        self.edit_button.clicked.connect(self.edit_schedule)
        self.toggle_button.clicked.connect(self.toggle_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.run_button.clicked.connect(self.run_selected)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemChanged.connect(self._item_changed)
        self.table.doubleClicked.connect(lambda _: self.edit_schedule())
        self._update_buttons()

    # --- data ------------------------------------------------------------------------------

    def set_workspace(self, workspace) -> None:
        self.workspace = workspace
        self.jobs = []
        self.overview = None
        self._fill([])
        self.refresh()

    def set_connectors(self, names: list[str]) -> None:
        self.connector_names = list(names)
        self._update_buttons()

    def refresh(self) -> None:
        if self.workspace is None:
            return
        from esg_workbench.sync import scheduler

        self._request += 1
        request = self._request

        def done(overview) -> None:
            if request == self._request:
                self.overview = overview
                self._fill(overview.jobs)
                self.loaded.emit()

        def failed(message: str) -> None:
            self.status.setText(message)
            self.loaded.emit()

        self.pool.run(scheduler.overview, self.workspace, on_done=done, on_error=failed, owner=self)

    def _fill(self, jobs: list[Any]) -> None:
        selected = self.current_name()
        self.jobs = list(jobs)
        now = dt.datetime.now(dt.timezone.utc)
        self.table.blockSignals(True)
        self.table.setRowCount(len(jobs))
        for row, job in enumerate(jobs):
            enabled = QTableWidgetItem()
            enabled.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            enabled.setCheckState(Qt.CheckState.Checked if job.enabled else Qt.CheckState.Unchecked)
            enabled.setToolTip("Runs by itself" if job.enabled else "Disabled: runs only when you click Run now")
            enabled.setData(JOB, job)
            zone = job.timezone or "UTC"
            next_text = when_words(job.next_run_at, zone, now) if job.enabled else "— (disabled)"
            last = when_words(job.last_run_at, zone, now) if job.last_run_at else "never"
            status = (job.last_status or "").replace("_", " ")
            result = QTableWidgetItem(status)
            result.setToolTip(job.last_message or "")
            if job.last_status:
                result.setIcon(icons.dot_icon(STATUS_KIND.get(job.last_status, "idle")))
            cells = {
                NAME: QTableWidgetItem(job.name),
                CONNECTOR: QTableWidgetItem(job.connector),
                ACTION: QTableWidgetItem(action_text(job.action, job.options)),
                WHEN: QTableWidgetItem(describe_cron(job.cron)),
                NEXT: QTableWidgetItem(next_text),
                LAST: QTableWidgetItem(last + (f" (run {job.last_run_id})" if job.last_run_id else "")),
                RESULT: result,
                AFTER: QTableWidgetItem(", ".join(job.depends_on)),
                NOW: QTableWidgetItem(self._state(job)),
            }
            if job.depends_on:
                cells[AFTER].setToolTip(after_words(job))
            cells[NOW].setToolTip(self._state(job))
            if job.priority:
                cells[NAME].setToolTip(f"Priority {job.priority}: among schedules due at once, higher runs first")
            cells[WHEN].setToolTip(f"cron: {job.cron}   time zone: {zone}")
            if job.action != "discover" and job.options.get("tables"):
                cells[ACTION].setToolTip("Tables: " + ", ".join(job.options["tables"]))
            if job.enabled and job.next_run_at is not None:
                cells[NEXT].setToolTip(f"{_utc(job.next_run_at):%Y-%m-%d %H:%M} UTC")
            self.table.setItem(row, ENABLED, enabled)
            for column, item in cells.items():
                if not job.enabled:
                    item.setForeground(Qt.GlobalColor.gray)
                self.table.setItem(row, column, item)
        self.table.blockSignals(False)
        self.stack.setCurrentWidget(self.table if jobs else self.empty)
        self.status.setText(f"{len(jobs)} schedule{'s' if len(jobs) != 1 else ''}, "
                            f"{sum(1 for j in jobs if j.enabled)} enabled. Times are in each schedule's zone."
                            if jobs else "")
        self.plan.setText(plan_text(self.overview) if jobs and self.overview is not None else "")
        if selected is not None:
            self.select(selected)
        elif jobs and not self.table.selectedItems():
            self.table.selectRow(0)
        self._update_buttons()

    def _state(self, job) -> str:
        if job.name in self.waiting and job.enabled:
            return self.waiting[job.name]
        if self.overview is None:
            return ""
        return self.overview.state.get(job.name, "")

    def set_waiting(self, waiting: dict[str, str]) -> None:
        """Schedules the in-app scheduler found due but could not start (no free slot)."""
        if waiting != self.waiting:
            self.waiting = dict(waiting)
            self._fill(self.jobs)

    # --- selection ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [j.name for j in self.jobs]

    def current_job(self):
        rows = {i.row() for i in self.table.selectedItems()}
        if len(rows) != 1:
            return None
        item = self.table.item(rows.pop(), ENABLED)
        return item.data(JOB) if item is not None else None

    def current_name(self) -> str | None:
        job = self.current_job()
        return job.name if job is not None else None

    def select(self, name: str) -> None:
        for row, job in enumerate(self.jobs):
            if job.name == name:
                self.table.selectRow(row)
                return

    def row_texts(self, name: str) -> dict[str, str]:
        """What a row shows, by column title (tests and screenshots read it)."""
        for row, job in enumerate(self.jobs):
            if job.name == name:
                texts = {COLUMNS[c]: self.table.item(row, c).text() for c in range(len(COLUMNS))}
                checked = self.table.item(row, ENABLED).checkState() == Qt.CheckState.Checked
                texts["Enabled"] = "yes" if checked else "no"
                return texts
        raise KeyError(name)

    def _show_details(self, job) -> None:
        """The selected schedule's last outcome in full (the table shows its status only)."""
        if job is None:
            self.details.setText("")
            return
        if job.last_status is None:
            self.details.setText(f"'{job.name}' has not run yet.")
            return
        when = when_words(job.last_run_at, job.timezone or "UTC")
        self.details.setText(f"'{job.name}' last ran {when}: {job.last_status.replace('_', ' ')}. "
                             f"{job.last_message or ''}".strip())

    def _update_buttons(self) -> None:
        job = self.current_job()
        self._show_details(job)
        has_ws = self.workspace is not None
        self.new_button.setEnabled(has_ws)
        self.empty_new.setEnabled(has_ws)
        for b in (self.edit_button, self.toggle_button, self.remove_button, self.run_button):
            b.setEnabled(has_ws and job is not None)
        if job is not None and not job.enabled:
            self.toggle_button.setText("&Enable")
            self.toggle_button.setIcon(icons.standard("SP_MediaPlay"))
        else:
            self.toggle_button.setText("&Disable")
            self.toggle_button.setIcon(icons.standard("SP_MediaPause"))

    # --- actions -----------------------------------------------------------------------------

    def _run(self, fn: Callable[..., Any], *args: Any, done_text: str, **kwargs: Any) -> None:
        def done(_result: Any) -> None:
            self.message.emit(done_text)
            self.refresh()
            self.changed.emit()

        def failed(message: str) -> None:
            dialogs.show_error(self, "Schedules", message)
            self.refresh()

        self.pool.run(fn, self.workspace, *args, on_done=done, on_error=failed, owner=self, **kwargs)

    def _open(self, dialog: ScheduleDialog) -> ScheduleDialog:
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def finished(code: int) -> None:
            job = dialog.saved_job
            if code and job is not None:
                self.message.emit(f"Saved schedule '{job.name}': {describe_cron(job.cron)}"
                                  + ("" if job.enabled else " (disabled)") + ".")
                self._request += 1  # an older listing must not overwrite the new one
                self.refresh()
                self.select(job.name)
                self.changed.emit()

        dialog.finished.connect(finished)
        dialog.open()
        return dialog

    def new_schedule(self) -> ScheduleDialog | None:
        if self.workspace is None:
            return None
        from esg_workbench.sync import scheduler

        ws = self.workspace

        def save(v: ScheduleValues):
            return scheduler.add_job(ws, v.name, v.cron, v.connector, v.action, timezone=v.timezone,
                                     enabled=v.enabled, options=v.options, **v.policy)

        return self._open(ScheduleDialog(self.pool, save, connectors=self.connector_names,
                                         taken_names=set(self.names()), workspace=ws, parent=self))

    def edit_schedule(self) -> ScheduleDialog | None:
        job = self.current_job()
        if self.workspace is None or job is None:
            return None
        from esg_workbench.sync import scheduler

        ws, name = self.workspace, job.name

        def save(v: ScheduleValues):
            return scheduler.update_job(ws, name, new_name=v.name if v.name != name else None, cron=v.cron,
                                        timezone=v.timezone, connector=v.connector, action=v.action,
                                        enabled=v.enabled, options=v.options, **v.policy)

        return self._open(ScheduleDialog(self.pool, save, connectors=self.connector_names, job=job,
                                         taken_names=set(self.names()), workspace=ws, parent=self))

    def toggle_selected(self) -> None:
        job = self.current_job()
        if job is not None:
            self.set_enabled(job.name, not job.enabled)

    def set_enabled(self, name: str, enabled: bool) -> None:
        from esg_workbench.sync import scheduler

        self._run(scheduler.set_enabled, name, enabled,
                  done_text=f"Schedule '{name}' {'enabled' if enabled else 'disabled'}.")

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() != ENABLED:
            return
        job = item.data(JOB)
        checked = item.checkState() == Qt.CheckState.Checked
        if job is not None and checked != bool(job.enabled):
            self.set_enabled(job.name, checked)

    def remove_selected(self) -> None:
        job = self.current_job()
        if job is None or self.workspace is None:
            return
        if not dialogs.ask(self, "Remove schedule",
                           f"Remove the schedule '{job.name}'?\n\nIt no longer runs {job.connector}'s "
                           f"'{ACTION_LABELS.get(job.action, job.action).lower()}'. Landed data and the sync "
                           "history stay.", yes="Remove", no="Keep"):
            return
        from esg_workbench.sync import scheduler

        self._run(scheduler.remove_job, job.name, done_text=f"Removed schedule '{job.name}'.")

    def run_selected(self) -> None:
        job = self.current_job()
        if job is not None:
            self.run_requested.emit(job)
