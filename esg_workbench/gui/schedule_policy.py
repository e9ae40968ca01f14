"""The "Order and retries" part of the schedule dialog: which schedules this one runs
after (and how strictly), its priority, and its retry policy. A widget of its own so the
dialog stays about timing and tables; the checks (cycles, ranges) are the scheduler's,
made when Save is pressed."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSpinBox,
    QWidget,
)


class SchedulePolicy(QGroupBox):
    def __init__(self, other_jobs: list[str], parent: QWidget | None = None):
        from esg_workbench.sync.schedule_plan import DEFAULT_WINDOW_MINUTES
        from esg_workbench.sync.scheduler import (DEFAULT_BACKOFF_SECONDS, MAX_RETRY_ATTEMPTS, MAX_WINDOW_MINUTES,
                                                  PRIORITY_RANGE)

        super().__init__("Order and retries", parent)
        self.setObjectName("schedulePolicy")
        self.after = QListWidget()
        self.after.setObjectName("scheduleAfter")
        self.after.setMaximumHeight(72)
        self.after.setToolTip("This schedule waits for the checked ones to succeed; if one fails, it is skipped "
                              "and says why.")
        for name in sorted(other_jobs):
            item = QListWidgetItem(name)
            item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.after.addItem(item)
        self.no_others = QLabel("No other schedules to run after.")
        self.no_others.setStyleSheet("color: #666;")
        self.window = QSpinBox()
        self.window.setObjectName("scheduleAfterWindow")
        self.window.setRange(1, MAX_WINDOW_MINUTES)
        self.window.setValue(DEFAULT_WINDOW_MINUTES)
        self.window.setSuffix(" min")
        self.window.setToolTip("A predecessor's run counts when it finished at most this long before this "
                               "schedule's time; this schedule waits as long for one after its time.")
        self.partial = QCheckBox("also after a partial success")
        self.partial.setObjectName("scheduleAcceptPartial")
        self.priority = QSpinBox()
        self.priority.setObjectName("schedulePriority")
        self.priority.setRange(*PRIORITY_RANGE)
        self.priority.setToolTip("When more schedules are due than may run at once, higher priority runs first, "
                                 "then the one waiting longest.")
        self.retries = QSpinBox()
        self.retries.setObjectName("scheduleRetries")
        self.retries.setRange(0, MAX_RETRY_ATTEMPTS)
        self.retries.setSpecialValueText("no retries")
        self.retries.setToolTip("Runs that fail or end partial_success run again (only the failed chunks of a "
                                "partial run), separately from the retries of each chunk.")
        self.backoff = QSpinBox()
        self.backoff.setObjectName("scheduleRetryBackoff")
        self.backoff.setRange(1, 86_400)
        self.backoff.setValue(DEFAULT_BACKOFF_SECONDS)
        self.backoff.setSuffix(" s")
        self.backoff.setPrefix("first after ")
        self.backoff.setToolTip("The wait before the first retry; it doubles for each next one.")

        after_row = QHBoxLayout()
        after_row.setContentsMargins(0, 0, 0, 0)
        after_row.addWidget(QLabel("within"))
        after_row.addWidget(self.window)
        after_row.addWidget(self.partial)
        after_row.addStretch(1)
        retry_row = QHBoxLayout()
        retry_row.setContentsMargins(0, 0, 0, 0)
        retry_row.addWidget(self.retries)
        retry_row.addWidget(self.backoff)
        retry_row.addStretch(1)
        form = QFormLayout(self)
        form.addRow("Runs a&fter", self.after if other_jobs else self.no_others)
        if not other_jobs:
            self.after.hide()
        form.addRow("", _wrap(after_row))
        form.addRow("P&riority", self.priority)
        form.addRow("Retr&ies", _wrap(retry_row))
        self.after.itemChanged.connect(self._update)
        self._update()

    def fill(self, job) -> None:
        for i in range(self.after.count()):
            item = self.after.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.text() in job.depends_on else Qt.CheckState.Unchecked)
        if job.dependency_window_minutes:
            self.window.setValue(job.dependency_window_minutes)
        self.partial.setChecked(bool(job.dependency_accepts_partial))
        self.priority.setValue(job.priority or 0)
        self.retries.setValue(job.retry_attempts or 0)
        self.backoff.setValue(job.retry_backoff_seconds)
        self._update()

    def runs_after(self) -> list[str]:
        return [self.after.item(i).text() for i in range(self.after.count())
                if self.after.item(i).checkState() == Qt.CheckState.Checked]

    def values(self) -> dict[str, Any]:
        """Keyword arguments of scheduler.add_job / update_job."""
        return {"depends_on": self.runs_after(), "dependency_window_minutes": self.window.value(),
                "dependency_accepts_partial": self.partial.isChecked(), "priority": self.priority.value(),
                "retry_attempts": self.retries.value(), "retry_backoff_seconds": self.backoff.value()}

    def _update(self, *_: Any) -> None:
        waits = bool(self.runs_after())
        self.window.setEnabled(waits)
        self.partial.setEnabled(waits)


def _wrap(layout) -> QWidget:
    widget = QWidget()
    widget.setLayout(layout)
    return widget
