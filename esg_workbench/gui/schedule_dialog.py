"""The schedule dialog: name, connector, action, what a sync or retry loads (the
connector's load type, a full reload or a delta; every table or a chosen few), how often
(presets that write the cron expression, or a custom one), time zone, enabled; a live
preview of what the expression means and its next five run times. An invalid expression
is explained inline and Save stays disabled; saving runs in a worker and its errors stay
in the dialog.

The connector's load type and discovered tables are read from the workspace in a worker
(:func:`connector_tables`), never on the GUI thread."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from PySide6.QtCore import QTime, QTimer, Qt, Signal
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
    QListWidget,
    QListWidgetItem,
    QPushButton,
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
LOAD_CHOICES = (
    ("", "As the connector is set up"),  # no option stored: the connector's own load type
    ("full", "Full reload"),
    ("delta", "New and changed rows only (delta)"),
)
#: job options the dialog shows; the others a job may carry (chunk_size...) are kept as they are
DIALOG_OPTIONS = ("tables", "load_type")
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


def _table_part(name: str) -> str:
    """'public.energy' -> 'energy' (as StreamRef.parse splits it)."""
    _schema, dot, table = name.partition(".")
    return table if dot else name


def tables_text(chosen: list[str] | None, discovered: int | None = None, shown: int = 5) -> str:
    """'All tables', or '3 of 9 tables: energy, waste, water' ('2 tables: ...' when the
    number discovered is unknown)."""
    if not chosen:
        return "All tables"
    names = [_table_part(t) for t in chosen]
    listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
    total = discovered or len(chosen)
    count = f"{len(chosen)} of {discovered}" if discovered else f"{len(chosen)}"
    return f"{count} table{'s' if total != 1 else ''}: {listed}"


def options_words(action: str, options: dict[str, Any]) -> str:
    """A sync's or retry's options in a few words: 'full, 3 tables'; '' when it has none."""
    if action == "discover":
        return ""
    parts = []
    if options.get("load_type"):
        parts.append(str(options["load_type"]))
    tables = options.get("tables") or []
    if tables:
        parts.append(f"{len(tables)} table{'s' if len(tables) != 1 else ''}")
    return ", ".join(parts)


def action_text(action: str, options: dict[str, Any]) -> str:
    """'Sync new and changed data (full, 3 tables)'."""
    words = options_words(action, options)
    label = ACTION_LABELS.get(action, action)
    return f"{label} ({words})" if words else label


def matched_tables(stored: list[str], discovered: list[str]) -> set[str]:
    """The discovered names a job's stored names stand for: the same name, or the one
    table of that name when the job gives no schema (as the CLI's --table energy does)."""
    found = set()
    for name in stored:
        if name in discovered:
            found.add(name)
            continue
        same = [d for d in discovered if _table_part(d) == name]
        if len(same) == 1:
            found.add(same[0])
    return found


@dataclass(frozen=True)
class ConnectorTables:
    """What the dialog needs to know of a connector to offer load and table choices."""

    connector: str
    load_type: str  # the connector's own: full or delta
    delta_ready: bool  # a delta load can run (a cursor field, or a source with its own)
    tables: list[str]  # qualified names in the schema cache; empty: not discovered yet


def connector_tables(workspace, name: str) -> ConnectorTables:
    """Runs in a worker: the connector's load type and its discovered tables."""
    from esg_workbench.connectors.registry import OWN_CURSOR
    from esg_workbench.gui import catalog
    from esg_workbench.sync import operations

    record = operations.get_connector(workspace, name)
    config = record.config
    return ConnectorTables(record.name, config.get("load_type") or "full",
                           bool(config.get("cursor_field")) or record.type in OWN_CURSOR,
                           [table for table, _ in catalog.table_names(workspace, record.id)])


class TablePicker(QDialog):
    """A checklist of a connector's discovered tables. `chosen()` is None when every table
    is checked: the job then syncs all tables, including ones discovered later."""

    def __init__(self, connector: str, tables: list[str], checked: set[str] | None,
                 unknown: list[str] = (), parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Tables of '{connector}' to load")
        self.filter = QLineEdit()
        self.filter.setObjectName("tableFilter")
        self.filter.setPlaceholderText("Filter tables…")
        self.filter.setClearButtonEnabled(True)
        self.filter.setVisible(len(tables) > 12)
        self.list = QListWidget()
        self.list.setObjectName("scheduleTableList")
        for name in tables:
            self._add(name, name, checked is None or name in checked)
        for name in unknown:  # stored by the job, but not in the last discovery
            self._add(f"{name}   (not in the last discovery)", name, True)
        self.all_button = QPushButton("&All")
        self.none_button = QPushButton("&None")
        self.count = QLabel()
        self.count.setObjectName("tablePickerCount")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.all_button)
        row.addWidget(self.none_button)
        row.addWidget(self.count, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.filter)
        layout.addWidget(self.list, 1)
        layout.addLayout(row)
        layout.addWidget(self.buttons)
        self.resize(360, min(480, 160 + 22 * self.list.count()))
        self.all_button.clicked.connect(lambda: self._check_shown(True))
        self.none_button.clicked.connect(lambda: self._check_shown(False))
        self.filter.textChanged.connect(self._filter)
        self.list.itemChanged.connect(self._update)
        self._update()

    def _add(self, label: str, name: str, on: bool) -> None:
        item = QListWidgetItem(label)
        item.setData(Qt.ItemDataRole.UserRole, name)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
        self.list.addItem(item)

    def items(self) -> list[QListWidgetItem]:
        return [self.list.item(i) for i in range(self.list.count())]

    def item(self, name: str) -> QListWidgetItem:
        return next(i for i in self.items() if i.data(Qt.ItemDataRole.UserRole) == name)

    def _check_shown(self, on: bool) -> None:
        for item in self.items():
            if not item.isHidden():
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def _filter(self, text: str) -> None:
        text = text.strip().lower()
        for item in self.items():
            item.setHidden(bool(text) and text not in item.text().lower())

    def checked(self) -> list[str]:
        return [i.data(Qt.ItemDataRole.UserRole) for i in self.items() if i.checkState() == Qt.CheckState.Checked]

    def chosen(self) -> list[str] | None:
        names = self.checked()
        return None if len(names) == self.list.count() else names

    def _update(self, *_: Any) -> None:
        n, total = len(self.checked()), self.list.count()
        self.count.setText("Check at least one table." if not n else
                           "All tables (also ones discovered later)" if n == total else f"{n} of {total} tables")
        self.count.setStyleSheet(ERROR_STYLE if not n else "color: #555;")
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(n > 0)


@dataclass(frozen=True)
class ScheduleValues:
    name: str
    cron: str
    timezone: str
    connector: str
    action: str
    enabled: bool
    options: dict[str, Any] = field(default_factory=dict)  # as scheduler.add_job/update_job take them
    policy: dict[str, Any] = field(default_factory=dict)  # runs after, priority, retries (schedule_policy.py)


class ScheduleDialog(QDialog):
    """New (job None) or edit (job given) a schedule.

    `save(values) -> ScheduledJob` runs in a worker when Save is pressed; the dialog
    closes when it succeeded (the job is in `saved_job`) and shows the error otherwise,
    with everything typed still there. With a `workspace`, the connector's load type and
    discovered tables are read (in a worker) to offer the load and table choices."""

    connector_loaded = Signal(object)  # ConnectorTables, or None when it could not be read

    def __init__(self, pool, save: Callable[[ScheduleValues], Any], *, connectors: list[str], job=None,
                 taken_names: set[str] = frozenset(), now: Callable[[], dt.datetime] | None = None,
                 workspace=None, other_jobs: list[str] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        from esg_workbench.sync import cron

        self.pool = pool
        self.save_fn = save
        self.job = job
        self.taken_names = set(taken_names) - ({job.name} if job is not None else set())
        self.now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self.saved_job = None
        self.workspace = workspace
        self._tables: list[str] | None = None  # the chosen tables; None: all
        self._info: ConnectorTables | None = None  # of the connector shown, once read
        self._info_request = 0
        self._reset_note = ""
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

        # what a sync or retry loads: the connector's load type or another; all tables or some
        self.load_type = QComboBox()
        self.load_type.setObjectName("scheduleLoadType")
        for key, label in LOAD_CHOICES:
            self.load_type.addItem(label, key)
        self.tables_label = QLabel(tables_text(None))
        self.tables_label.setObjectName("scheduleTables")
        self.choose_tables = QPushButton("Ch&oose…")
        self.choose_tables.setObjectName("scheduleChooseTables")
        self.choose_tables.setEnabled(False)
        self.tables_note = QLabel()
        self.tables_note.setObjectName("scheduleTablesNote")
        self.tables_note.setWordWrap(True)
        self.tables_note.setStyleSheet("color: #666;")
        self.tables_note.hide()
        tables_row = QHBoxLayout()
        tables_row.setContentsMargins(0, 0, 0, 0)
        tables_row.addWidget(self.tables_label, 1)
        tables_row.addWidget(self.choose_tables)
        self.tables_widget = QWidget()
        tl = QVBoxLayout(self.tables_widget)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(2)
        tl.addLayout(tables_row)
        tl.addWidget(self.tables_note)

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
        self.form = form = QFormLayout()
        form.addRow("&Name", self.name)
        form.addRow("&Connector", self.connector)
        form.addRow("&Action", self.action)
        form.addRow("&Load", self.load_type)
        form.addRow("Ta&bles", self.tables_widget)
        form.addRow("&When", when_widget)
        form.addRow("Cron e&xpression", self.cron)
        form.addRow("&Time zone", self.timezone)
        form.addRow("", self.enabled)
        from esg_workbench.gui.schedule_policy import SchedulePolicy

        others = sorted(set(other_jobs if other_jobs is not None else taken_names) - {job.name if job else None})
        self.policy = SchedulePolicy(others)

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
        layout.addWidget(self.policy)
        layout.addWidget(preview)
        layout.addWidget(self.problems)
        layout.addStretch(1)  # space left by hidden rows goes here, not between the form's rows
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
        self.connector.currentIndexChanged.connect(self._connector_changed)
        self.action.currentIndexChanged.connect(self._action_changed)
        self.load_type.currentIndexChanged.connect(self._revalidate)
        self.choose_tables.clicked.connect(self.pick_tables)
        self._action_changed()
        self._load_connector()

    # --- filling and reading -------------------------------------------------------------

    def _fill(self, job) -> None:
        self.name.setText(job.name)
        if self.connector.findData(job.connector) < 0:  # deleted since: shown, and refused at Save
            self.connector.addItem(f"{job.connector} (no longer exists)", job.connector)
        self.connector.setCurrentIndex(self.connector.findData(job.connector))
        self.action.setCurrentIndex(max(0, self.action.findData(job.action)))
        if job.action != "discover":  # a discovery's `tables` are the ones it rediscovers
            self.load_type.setCurrentIndex(max(0, self.load_type.findData(job.options.get("load_type") or "")))
            self._tables = list(job.options.get("tables") or []) or None
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
        self.policy.fill(job)

    def timing(self) -> Timing:
        preset = self.frequency.currentData()
        t = self.at_time.time()
        minute = self.minute.value() if preset == "hourly" else t.minute()
        return Timing(preset, t.hour(), minute, self.weekday.currentData(), self.month_day.value())

    def options(self) -> dict[str, Any]:
        """The job options to store. A rediscovery takes none of a sync's options (the
        scheduler refuses them); options the dialog does not show are kept as they were."""
        action, job = self.action.currentData(), self.job
        if action == "discover":
            return dict(job.options) if job is not None and job.action == "discover" else {}
        kept = job.options if job is not None and job.action != "discover" else {}
        options = {k: v for k, v in kept.items() if k not in DIALOG_OPTIONS}
        if self.load_type.currentData():
            options["load_type"] = self.load_type.currentData()
        if self._tables:
            options["tables"] = list(self._tables)
        return options

    def chosen_tables(self) -> list[str] | None:
        return list(self._tables) if self._tables else None

    def values(self) -> ScheduleValues:
        return ScheduleValues(
            name=self.name.text().strip(), cron=" ".join(self.cron.text().split()),
            timezone=self.timezone.currentText().strip(), connector=self.connector.currentData() or "",
            action=self.action.currentData(), enabled=self.enabled.isChecked(), options=self.options(),
            policy=self.policy.values())

    # --- reactions -------------------------------------------------------------------------

    def _action_changed(self, *_: Any) -> None:
        loads = self.action.currentData() != "discover"
        for widget in (self.load_type, self.tables_widget):
            self.form.setRowVisible(widget, loads)
            widget.setEnabled(loads)
        self._revalidate()

    def _connector_changed(self, *_: Any) -> None:
        if self._tables:  # tables of another connector make no sense
            previous = f"'{self._info.connector}'" if self._info is not None else "another connector"
            self._tables = None
            self._reset_note = f"The table choice was reset to all tables: it was made for {previous}."
        self._load_connector()

    def _load_connector(self) -> None:
        """Read the connector's load type and discovered tables in a worker."""
        self._info = None
        self._info_request += 1
        request = self._info_request
        name = self.connector.currentData()
        self.choose_tables.setEnabled(False)
        self.load_type.setItemText(0, LOAD_CHOICES[0][1])
        self._show_tables()
        if self.workspace is None or not name:
            self._revalidate()
            return
        self._set_note(f"Reading the tables of '{name}'…")

        def done(info: ConnectorTables) -> None:
            if request != self._info_request:
                return
            self._info = info
            self.load_type.setItemText(0, f"{LOAD_CHOICES[0][1]} ({info.load_type})")
            self.choose_tables.setEnabled(bool(info.tables))
            self._set_note("" if info.tables else
                           f"'{name}' has not been discovered yet, so it syncs all its tables. "
                           "Discover it (Connectors tab) to choose some.")
            self._show_tables()
            self._revalidate()
            self.connector_loaded.emit(info)

        def failed(message: str) -> None:
            if request != self._info_request:
                return
            self._set_note(f"Its tables could not be read: {message}")
            self._revalidate()
            self.connector_loaded.emit(None)

        self.pool.run(connector_tables, self.workspace, name, on_done=done, on_error=failed, owner=self)
        self._revalidate()

    def _set_note(self, text: str) -> None:
        text = " ".join(t for t in (self._reset_note, text) if t)
        self.tables_note.setText(text)
        self.tables_note.setVisible(bool(text))
        QTimer.singleShot(0, self._fit_height)

    def _fit_height(self) -> None:
        """Grow to show a wrapped note in full: a dialog shown already keeps its height."""
        layout = self.layout()
        needed = layout.totalHeightForWidth(self.width()) if layout.hasHeightForWidth() else self.sizeHint().height()
        if self.isVisible() and needed > self.height():
            self.resize(self.width(), needed)

    def _show_tables(self) -> None:
        discovered = len(self._info.tables) if self._info is not None and self._info.tables else None
        self.tables_label.setText(tables_text(self._tables, discovered))
        self.tables_label.setToolTip("\n".join(self._tables or []))

    def pick_tables(self) -> TablePicker | None:
        """The checklist of the connector's discovered tables (opened, not run modally)."""
        info = self._info
        if info is None or not info.tables:
            return None
        stored = self._tables or []
        checked = matched_tables(stored, info.tables) if stored else None
        unknown = [t for t in stored if t not in info.tables and not matched_tables([t], info.tables)]
        picker = TablePicker(info.connector, info.tables, checked, unknown, parent=self)
        picker.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def accepted() -> None:
            self._tables = picker.chosen()
            self._reset_note = ""
            self._set_note("")
            self._show_tables()
            self._revalidate()

        picker.accepted.connect(accepted)
        picker.open()
        return picker

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
        info = self._info
        if (v.action != "discover" and v.options.get("load_type") == "delta" and info is not None
                and not info.delta_ready):
            problems[self.load_type] = (f"A delta load needs '{info.connector}' to have a cursor field "
                                        "(e.g. updated_at): set one in the connector, or pick Full reload.")
        return problems

    def _revalidate(self, *_: Any) -> None:
        self._update_preview()
        problems = self.validation_problems()
        for widget in (self.name, self.connector, self.load_type, self.timezone, self.cron):
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
