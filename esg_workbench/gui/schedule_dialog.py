"""The schedule dialog: name, connector, action, how often (presets that write the cron
expression, or a custom one), time zone, enabled; a live preview of what the expression
means and its next five run times. An invalid expression is explained inline and Save
stays disabled; saving runs in a worker and its errors stay in the dialog."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from PySide6.QtCore import QTime, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QTimeEdit,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.core.errors import EsgError

ACTION_LABELS = {
    "sync": "Sync new and changed data",
    "retry_failed": "Retry failed chunks",
    "discover": "Rediscover tables",
}
PRESETS = (
    ("hourly", "Every hour"),
    ("daily", "Every day"),
    ("weekdays", "Every weekday (Monday to Friday)"),
    ("weekly", "Every week"),
    ("monthly", "Every month"),
    ("custom", "Custom cron expression"),
)
# cron numbers the days of the week from Sunday = 0; the list starts on Monday
WEEKDAYS = (("Monday", 1), ("Tuesday", 2), ("Wednesday", 3), ("Thursday", 4), ("Friday", 5),
            ("Saturday", 6), ("Sunday", 0))
PREVIEW_RUNS = 5
ERROR_STYLE = "color: #c62828;"
INVALID_STYLE = "border: 1px solid #c62828; border-radius: 2px;"


@dataclass(frozen=True)
class Timing:
    """What the preset widgets say: turned into a cron expression and read back from one."""

    preset: str
    hour: int = 2
    minute: int = 0
    weekday: int = 1  # cron numbering: 0 (or 7) is Sunday
    month_day: int = 1

    def cron(self) -> str | None:
        """The expression for a preset; None for custom (the user types it)."""
        m, h = self.minute, self.hour
        return {
            "hourly": f"{m} * * * *",
            "daily": f"{m} {h} * * *",
            "weekdays": f"{m} {h} * * 1-5",
            "weekly": f"{m} {h} * * {self.weekday}",
            "monthly": f"{m} {h} {self.month_day} * *",
        }.get(self.preset)


def _number(text: str, low: int, high: int) -> int | None:
    return int(text) if text.isdigit() and low <= int(text) <= high else None


def timing_of(expr: str) -> Timing:
    """The preset an expression was written by (so editing shows it the same way), or custom."""
    fields = expr.split()
    if len(fields) != 5:
        return Timing("custom")
    minute, hour, dom, month, dow = fields
    m = _number(minute, 0, 59)
    if m is None or month != "*":
        return Timing("custom")
    if (hour, dom, dow) == ("*", "*", "*"):
        return Timing("hourly", minute=m)
    h = _number(hour, 0, 23)
    if h is None:
        return Timing("custom")
    if (dom, dow) == ("*", "*"):
        return Timing("daily", h, m)
    if dom == "*" and dow == "1-5":
        return Timing("weekdays", h, m)
    day = _number(dow, 0, 7)
    if dom == "*" and day is not None:
        return Timing("weekly", h, m, weekday=day % 7)
    n = _number(dom, 1, 31)
    if n is not None and dow == "*":
        return Timing("monthly", h, m, month_day=n)
    return Timing("custom")


def run_time_text(at: dt.datetime) -> str:
    """'Mon 30 Nov 2026, 02:00 CET' (in the zone `at` carries)."""
    return f"{at:%a %d %b %Y, %H:%M} {at.tzname() or ''}".rstrip()


@lru_cache(maxsize=1)
def time_zones() -> tuple[str, ...]:
    """Every IANA zone name: UTC first, then Area/City names, then the old short ones (CET...)."""
    zones = zoneinfo.available_timezones() - {"UTC"}
    return ("UTC", *sorted(z for z in zones if "/" in z), *sorted(z for z in zones if "/" not in z))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class ScheduleValues:
    name: str
    cron: str
    timezone: str
    connector: str
    action: str
    enabled: bool


class ScheduleDialog(QDialog):
    """New (job None) or edit (job given) a schedule.

    `save(values) -> ScheduledJob` runs in a worker when Save is pressed; the dialog
    closes when it succeeded (the job is in `saved_job`) and shows the error otherwise,
    with everything typed still there."""

    def __init__(self, pool, save: Callable[[ScheduleValues], Any], *, connectors: list[str], job=None,
                 taken_names: set[str] = frozenset(), now: Callable[[], dt.datetime] | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        from esg_workbench.sync import cron

        self.pool = pool
        self.save_fn = save
        self.job = job
        self.taken_names = set(taken_names) - ({job.name} if job is not None else set())
        self.now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self.saved_job = None
        self._saving = False
        self._cron_problem: str | None = None
        self.setWindowTitle(f"Edit schedule — {job.name}" if job is not None else "New schedule")
        self.setMinimumWidth(620)

        self.name = QLineEdit()
        self.name.setObjectName("scheduleName")
        self.name.setPlaceholderText("nightly-erp")
        self.connector = QComboBox()
        self.connector.setObjectName("scheduleConnector")
        for name in connectors:
            self.connector.addItem(name, name)
        self.action = QComboBox()
        self.action.setObjectName("scheduleAction")
        for key, label in ACTION_LABELS.items():
            self.action.addItem(label, key)

        # when: a preset and its parameters, or a custom expression
        self.frequency = QComboBox()
        self.frequency.setObjectName("scheduleFrequency")
        for key, label in PRESETS:
            self.frequency.addItem(label, key)
        self.weekday = QComboBox()
        self.weekday.setObjectName("scheduleWeekday")
        for label, number in WEEKDAYS:
            self.weekday.addItem(f"on {label}", number)
        self.month_day = QSpinBox()
        self.month_day.setObjectName("scheduleMonthDay")
        self.month_day.setRange(1, 31)
        self.month_day.setPrefix("on day ")
        self.month_day.setToolTip("Months without this day (e.g. the 31st in April) are skipped.")
        self.at_label = QLabel("at")
        self.at_time = QTimeEdit(QTime(2, 0))
        self.at_time.setObjectName("scheduleTime")
        self.at_time.setDisplayFormat("HH:mm")
        self.minute = QSpinBox()
        self.minute.setObjectName("scheduleMinute")
        self.minute.setRange(0, 59)
        self.minute.setPrefix("at minute ")
        when = QHBoxLayout()
        when.setContentsMargins(0, 0, 0, 0)
        for w in (self.frequency, self.weekday, self.month_day, self.at_label, self.at_time, self.minute):
            when.addWidget(w)
        when.addStretch(1)
        self.cron = QLineEdit()
        self.cron.setObjectName("scheduleCron")
        self.cron.setPlaceholderText("minute hour day-of-month month day-of-week, e.g. 30 6 * * 1-5")
        self.cron.setToolTip("Five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12), "
                             "day of week (0-6, Sunday = 0). * means every; 1-5 a range; */15 every 15th; "
                             "1,15 a list.")
        self.timezone = QComboBox()
        self.timezone.setObjectName("scheduleTimezone")
        self.timezone.setEditable(True)
        self.timezone.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self._zones = time_zones()
        self._zone_set = set(self._zones)
        self.timezone.addItems(list(self._zones))
        completer = QCompleter(list(self._zones), self.timezone)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.timezone.setCompleter(completer)
        self.enabled = QCheckBox("Enabled (runs by itself while ESG Workbench is open)")
        self.enabled.setObjectName("scheduleEnabled")
        self.enabled.setChecked(True)

        when_widget = QWidget()
        when_widget.setLayout(when)
        form = QFormLayout()
        form.addRow("&Name", self.name)
        form.addRow("&Connector", self.connector)
        form.addRow("&Action", self.action)
        form.addRow("&When", when_widget)
        form.addRow("Cron e&xpression", self.cron)
        form.addRow("&Time zone", self.timezone)
        form.addRow("", self.enabled)

        # the preview
        self.description = QLabel()
        self.description.setObjectName("scheduleDescription")
        self.description.setStyleSheet("font-weight: bold;")
        self.description.setWordWrap(True)
        self.next_runs = QLabel()
        self.next_runs.setObjectName("scheduleNextRuns")
        self.next_runs.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.cron_error = QLabel()
        self.cron_error.setObjectName("scheduleCronError")
        self.cron_error.setStyleSheet(ERROR_STYLE)
        self.cron_error.setWordWrap(True)
        preview = QGroupBox("Preview")
        pl = QVBoxLayout(preview)
        pl.addWidget(self.description)
        self.next_caption = QLabel("Next five runs:")
        pl.addWidget(self.next_caption)
        pl.addWidget(self.next_runs)
        pl.addWidget(self.cron_error)

        self.problems = QLabel()
        self.problems.setObjectName("problems")
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet(ERROR_STYLE)
        self.problems.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self._save)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(preview)
        layout.addWidget(self.problems)
        layout.addWidget(self.buttons)

        self.timezone.setCurrentText(cron.local_timezone())
        if job is not None:
            self._fill(job)
        self._preset_changed()
        self.frequency.currentIndexChanged.connect(self._preset_changed)
        for signal in (self.weekday.currentIndexChanged, self.month_day.valueChanged,
                       self.at_time.timeChanged, self.minute.valueChanged):
            signal.connect(self._timing_changed)
        self.cron.textChanged.connect(self._revalidate)
        self.timezone.currentTextChanged.connect(self._revalidate)
        self.name.textChanged.connect(self._revalidate)
        self.connector.currentIndexChanged.connect(self._revalidate)
        self._revalidate()

    # --- filling and reading -------------------------------------------------------------

    def _fill(self, job) -> None:
        self.name.setText(job.name)
        if self.connector.findData(job.connector) < 0:  # deleted since: shown, and refused at Save
            self.connector.addItem(f"{job.connector} (no longer exists)", job.connector)
        self.connector.setCurrentIndex(self.connector.findData(job.connector))
        self.action.setCurrentIndex(max(0, self.action.findData(job.action)))
        if job.timezone:
            self.timezone.setCurrentText(job.timezone)
        self.enabled.setChecked(bool(job.enabled))
        timing = timing_of(job.cron)
        self.frequency.setCurrentIndex(self.frequency.findData(timing.preset))
        self.at_time.setTime(QTime(timing.hour, timing.minute))
        self.minute.setValue(timing.minute)
        self.weekday.setCurrentIndex(self.weekday.findData(timing.weekday))
        self.month_day.setValue(timing.month_day)
        self.cron.setText(job.cron)

    def timing(self) -> Timing:
        preset = self.frequency.currentData()
        t = self.at_time.time()
        minute = self.minute.value() if preset == "hourly" else t.minute()
        return Timing(preset, t.hour(), minute, self.weekday.currentData(), self.month_day.value())

    def values(self) -> ScheduleValues:
        return ScheduleValues(
            name=self.name.text().strip(), cron=" ".join(self.cron.text().split()),
            timezone=self.timezone.currentText().strip(), connector=self.connector.currentData() or "",
            action=self.action.currentData(), enabled=self.enabled.isChecked())

    # --- reactions -------------------------------------------------------------------------

    def _preset_changed(self, *_: Any) -> None:
        preset = self.frequency.currentData()
        self.weekday.setVisible(preset == "weekly")
        self.month_day.setVisible(preset == "monthly")
        timed = preset in ("daily", "weekdays", "weekly", "monthly")
        self.at_label.setVisible(timed)
        self.at_time.setVisible(timed)
        self.minute.setVisible(preset == "hourly")
        custom = preset == "custom"
        self.cron.setReadOnly(not custom)
        self.cron.setStyleSheet("" if custom else "color: #666;")
        if custom:
            self.cron.setFocus()
        self._timing_changed()

    def _timing_changed(self, *_: Any) -> None:
        expr = self.timing().cron()
        if expr is not None:
            self.cron.setText(expr)  # -> _revalidate

    def validation_problems(self) -> dict[QWidget, str]:
        problems: dict[QWidget, str] = {}
        v = self.values()
        if not v.name:
            problems[self.name] = "Give the schedule a name."
        elif v.name in self.taken_names:
            problems[self.name] = f"A schedule named '{v.name}' already exists."
        if not v.connector:
            problems[self.connector] = "Add a connector first: a schedule syncs one connector."
        if v.timezone not in self._zone_set:
            problems[self.timezone] = f"Unknown time zone '{v.timezone}': pick one from the list (e.g. Europe/Paris)."
        if self._cron_problem:
            problems[self.cron] = self._cron_problem
        return problems

    def _revalidate(self, *_: Any) -> None:
        self._update_preview()
        problems = self.validation_problems()
        for widget in (self.name, self.connector, self.timezone, self.cron):
            widget.setToolTip(problems.get(widget, widget.toolTip() if widget is self.cron else ""))
            if widget is not self.cron:
                widget.setStyleSheet(INVALID_STYLE if widget in problems else "")
        # the cron problem is shown in the preview; the others under the form
        others = [text for w, text in problems.items() if w is not self.cron]
        self.problems.setText("\n".join(others))
        self.problems.setVisible(bool(others))
        self.save_button.setEnabled(not problems and not self._saving)

    def _update_preview(self) -> None:
        from esg_workbench.sync import cron

        expr = " ".join(self.cron.text().split())
        zone = self.timezone.currentText().strip()
        try:
            if not expr:
                raise cron.CronError("Type a cron expression, or pick how often above.")
            description = cron.describe(expr)
            runs = cron.next_runs(expr, zone if zone in self._zone_set else None, self.now(), PREVIEW_RUNS)
        except EsgError as exc:
            self._cron_problem = exc.message
            self.description.setText("")
            self.next_runs.setText("")
            self.next_caption.hide()
            self.cron_error.setText(_sentence(exc.describe()))
            self.cron_error.show()
            if self.frequency.currentData() == "custom":
                self.cron.setStyleSheet(INVALID_STYLE)
            return
        self._cron_problem = None
        self.next_caption.show()
        self.cron_error.hide()
        self.cron_error.setText("")
        if self.frequency.currentData() == "custom":
            self.cron.setStyleSheet("")
        self.description.setText(description)
        self.next_runs.setText("\n".join(run_time_text(r) for r in runs) or "never")

    @property
    def save_button(self):
        return self.buttons.button(QDialogButtonBox.StandardButton.Save)

    def preview_lines(self) -> list[str]:
        text = self.next_runs.text()
        return text.splitlines() if text else []

    # --- saving ------------------------------------------------------------------------------

    def _save(self) -> None:
        if self.validation_problems() or self._saving:
            return
        self._saving = True
        self.save_button.setEnabled(False)
        self.problems.setText("Saving…")
        self.problems.setStyleSheet("color: #555;")
        self.problems.show()

        def done(job: Any) -> None:
            self._saving = False
            self.saved_job = job
            self.accept()

        def failed(message: str) -> None:
            self._saving = False
            self.problems.setStyleSheet(ERROR_STYLE)
            self._revalidate()
            self.problems.setText(message)
            self.problems.show()

        self.pool.run(self.save_fn, self.values(), on_done=done, on_error=failed, owner=self)
