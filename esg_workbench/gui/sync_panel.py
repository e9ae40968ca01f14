"""The sync panel: tables and load settings, Sync / Resume / Cancel / Retry failed chunks,
progress with live figures, the current chunk and a live log, for the connector chosen
in the connector list. Syncs of other connectors go on in the background."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from shiboken6 import isValid
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.core.specs import WINDOWS
from esg_workbench.gui import catalog, icons
from esg_workbench.gui.slices import Slices
from esg_workbench.gui.sync_jobs import SyncJob, SyncJobs


@dataclass(frozen=True)
class Buttons:
    sync: bool
    resume: bool
    cancel: bool
    retry: bool


def button_states(*, connector: bool, running: bool, cancelling: bool, resumable: bool,
                  failed_chunks: int, status_known: bool = True) -> Buttons:
    """Which actions make sense now (derived from connector_status and the job)."""
    idle = connector and not running and status_known
    return Buttons(sync=idle, resume=idle and resumable, cancel=running and not cancelling,
                   retry=idle and failed_chunks > 0)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class SyncPanel(QWidget):
    status_loaded = Signal(str, object)  # connector, status dict
    start_requested = Signal(object)  # SyncRequest
    buttons_changed = Signal(object)  # Buttons, as enabled now (the main window's actions follow)

    def __init__(self, pool, jobs: SyncJobs, parent: QWidget | None = None):
        super().__init__(parent)
        self.pool = pool
        self.jobs = jobs
        self.workspace = None
        self.connector: str | None = None
        self.status: dict[str, Any] | None = None
        self._status_request = 0
        self._filling: Slices | None = None  # the table list being filled

        self.title = QLabel("Choose a connector on the left.")
        self.title.setObjectName("syncTitle")
        self.title.setStyleSheet("font-size: 14px; font-weight: bold;")
        self.state = QLabel()
        self.state.setObjectName("syncState")
        self.state.setWordWrap(True)

        # tables
        self.table_filter = QLineEdit()
        self.table_filter.setPlaceholderText("Filter tables…")
        self.table_filter.setClearButtonEnabled(True)
        self.tables = QListWidget()
        self.tables.setObjectName("syncTables")
        self.all_button = QPushButton("All")
        self.none_button = QPushButton("None")
        self.table_settings_button = QPushButton("Table settings…")
        self.table_settings_button.setObjectName("tableSettingsButton")
        self.table_settings_button.setToolTip("Cursor field, primary key, load type, chunk size and deleted rows "
                                              "of the selected table")
        tables_box = QGroupBox("Tables")
        tl = QVBoxLayout(tables_box)
        row = QHBoxLayout()
        row.addWidget(self.table_filter, 1)
        row.addWidget(self.all_button)
        row.addWidget(self.none_button)
        tl.addLayout(row)
        tl.addWidget(self.tables, 1)
        tl.addWidget(self.table_settings_button)

        # load settings (overrides of the connector's)
        self.load_type = QComboBox()
        self.load_type.setObjectName("syncLoadType")
        self.chunk_strategy = QComboBox()
        self.window = QComboBox()
        self.chunk_size = QSpinBox()
        self.chunk_size.setObjectName("syncChunkSize")
        self.chunk_size.setRange(0, 10_000_000)
        self.chunk_size.setSingleStep(10_000)
        self.chunk_size.setSpecialValueText("Connector setting")
        self.chunk_size.setSuffix(" rows")
        self._fill_settings({})
        settings_box = QGroupBox("Load settings for this run")
        sl = QFormLayout(settings_box)
        sl.addRow("Load type", self.load_type)
        sl.addRow("Chunk strategy", self.chunk_strategy)
        sl.addRow("Window", self.window)
        sl.addRow("Chunk size", self.chunk_size)

        # actions
        self.sync_button = QPushButton(icons.standard("SP_MediaPlay"), "&Sync")
        self.sync_button.setObjectName("syncButton")
        self.sync_button.setToolTip("Sync the checked tables (F9)")
        self.resume_button = QPushButton(icons.standard("SP_MediaSeekForward"), "&Resume")
        self.resume_button.setObjectName("resumeButton")
        self.resume_button.setToolTip("Continue an interrupted or cancelled sync from its last landed chunk")
        self.cancel_button = QPushButton(icons.standard("SP_MediaStop"), "&Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setToolTip("Stop after the chunk being written (Esc)")
        self.retry_button = QPushButton(icons.standard("SP_BrowserReload"), "Retry &failed chunks")
        self.retry_button.setObjectName("retryButton")
        actions = QHBoxLayout()
        for b in (self.sync_button, self.resume_button, self.cancel_button, self.retry_button):
            actions.addWidget(b)
        actions.addStretch(1)

        # progress
        self.progress = QProgressBar()
        self.progress.setObjectName("syncProgress")
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.figures: dict[str, QLabel] = {}
        grid = QGridLayout()
        names = [("chunks", "Chunks"), ("rows_read", "Rows read"), ("rows_written", "Rows written"),
                 ("rate", "Rate"), ("elapsed", "Elapsed"), ("eta", "ETA"), ("stream", "Table"),
                 ("chunk", "Current chunk")]
        for i, (key, label) in enumerate(names):
            value = QLabel("–")
            value.setObjectName(f"fig_{key}")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.figures[key] = value
            caption = QLabel(label + ":")
            caption.setStyleSheet("color: #666;")
            r, c = divmod(i, 2) if key not in ("stream", "chunk") else (3 + (key == "chunk"), 0)
            if key in ("stream", "chunk"):
                grid.addWidget(caption, r, 0)
                grid.addWidget(value, r, 1, 1, 3)
            else:
                grid.addWidget(caption, r, c * 2)
                grid.addWidget(value, r, c * 2 + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        self.log = QPlainTextEdit()
        self.log.setObjectName("syncLog")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("The log of the sync appears here.")

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(tables_box, 1)
        ll.addWidget(settings_box)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addLayout(actions)
        rl.addWidget(self.progress)
        rl.addLayout(grid)
        rl.addWidget(QLabel("Log"))
        rl.addWidget(self.log, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.title)
        layout.addWidget(self.state)
        layout.addWidget(self.splitter, 1)

        # figures are repainted at most every 100 ms, however fast chunks land
        self._repaint = QTimer(self)
        self._repaint.setSingleShot(True)
        self._repaint.setInterval(100)
        self._repaint.timeout.connect(self._show_figures)
        self._cancel_clock = QTimer(self)  # while cancelling: the wait counts up every second
        self._cancel_clock.setInterval(1000)
        self._cancel_clock.timeout.connect(self._show_figures)

        self.table_filter.textChanged.connect(self._filter_tables)
        self.all_button.clicked.connect(lambda: self._check_all(True))
        self.none_button.clicked.connect(lambda: self._check_all(False))
        self.tables.itemChanged.connect(lambda _: self.update_buttons())
        self.tables.currentItemChanged.connect(lambda *_: self.update_buttons())
        self.table_settings_button.clicked.connect(self.edit_table_settings)
        self.sync_button.clicked.connect(self.start_sync)
        self.resume_button.clicked.connect(self.resume)
        self.cancel_button.clicked.connect(self.cancel)
        self.retry_button.clicked.connect(self.retry_failed)
        jobs.changed.connect(self._job_changed)
        jobs.logged.connect(self._job_logged)
        jobs.ended.connect(self._job_ended)
        self.update_buttons()

    # --- settings widgets ------------------------------------------------------------------

    def _fill_settings(self, config: dict[str, Any]) -> None:
        self.load_type.clear()
        self.load_type.addItem(f"Connector setting ({config.get('load_type', 'full')})", None)
        self.load_type.addItem("Full", "full")
        self.load_type.addItem("Delta", "delta")
        self.chunk_strategy.clear()
        self.chunk_strategy.addItem(f"Connector setting ({config.get('chunk_strategy', 'auto')})", None)
        for value in ("auto", "id", "time"):
            self.chunk_strategy.addItem(value.capitalize() if value != "id" else "Id ranges", value)
        self.window.clear()
        self.window.addItem(f"Connector setting ({config.get('window') or 'auto'})", None)
        for w in WINDOWS:
            self.window.addItem(w.capitalize(), w)
        self.chunk_size.setValue(0)
        self.chunk_size.setSpecialValueText(f"Connector setting ({config.get('chunk_size') or 'auto'})")

    # --- connector and its status ----------------------------------------------------------

    def set_workspace(self, workspace) -> None:
        self.workspace = workspace
        self.set_connector(None)

    def set_connector(self, name: str | None) -> None:
        changed = name != self.connector
        self.connector = name
        if changed:
            self.status = None
            self.tables.clear()
            self.log.clear()
            job = self.jobs.job(name)
            if job is not None:
                self.log.setPlainText("\n".join(job.log))
                self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())
        self.title.setText(f"Sync — {name}" if name else "Choose a connector on the left.")
        self._show_figures()
        self.refresh_status()

    def refresh_status(self) -> None:
        name = self.connector
        if name is None or self.workspace is None:
            self.update_buttons()
            return
        self._status_request += 1
        request = self._status_request

        def done(status: dict[str, Any]) -> None:
            if request != self._status_request or name != self.connector:
                return
            previous, self.status = self.status, status
            self._follow_connector(previous, status)
            self._describe_status()
            self.update_buttons()
            self.status_loaded.emit(name, status)

        def failed(message: str) -> None:
            if request == self._status_request:
                self.state.setText(message)
                self.update_buttons()

        self.pool.run(catalog.sync_status, self.workspace, name, on_done=done, on_error=failed, owner=self)
        self.update_buttons()

    def _describe_status(self) -> None:
        s = self.status or {}
        parts = []
        under_way = s.get("resume_streams") if s.get("resumable") else []
        if s.get("resumable"):
            names = ", ".join(under_way[:4]) + ("…" if len(under_way) > 4 else "") if under_way else "every table it was asked for"
            parts.append(f"Unfinished sync of {names}: "
                         "Resume continues from the last landed chunk and syncs the tables it had not started.")
        failed = s.get("failed_chunks", [])
        if failed:
            first = failed[0]
            parts.append(f"{len(failed)} failed chunk(s), e.g. {first['stream']} {first['range']}: "
                         f"{(first.get('error') or '').splitlines()[0] if first.get('error') else ''}")
        runs = s.get("runs") or []
        if runs and not under_way and not failed:
            r = runs[0]
            parts.append(f"Last sync: {r['status'].replace('_', ' ')}, {r['items_written']:,} rows, "
                         f"{r['started_at']:%Y-%m-%d %H:%M}.")
        if not runs:
            parts.append("Never synced.")
        self.state.setText(" ".join(parts))

    def _follow_connector(self, previous: dict[str, Any] | None, status: dict[str, Any]) -> None:
        """Show the connector as stored now: after a discovery the table list, after an
        edit the connector's own settings (choices made here for the next run are kept
        when the connector's setting did not change)."""
        if previous is None or previous["tables"] != status["tables"]:
            unchecked = self._unchecked_tables() if previous is not None else set()
            then = (lambda: self.set_checked([name for name, _ in status["tables"] if name not in unchecked])) \
                if unchecked else None
            self._fill_tables(status["tables"], then)
        config = status.get("config", {})
        if previous is None or previous.get("config", {}) != config:
            self._fill_settings(config)

    def _unchecked_tables(self) -> set[str]:
        return {self.tables.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.tables.count())
                if self.tables.item(i).flags() & Qt.ItemFlag.ItemIsUserCheckable
                and self.tables.item(i).checkState() != Qt.CheckState.Checked}

    def _fill_tables(self, tables: list[tuple[str, int | None]], then=None) -> None:
        """List the tables in time-boxed slices (thousands of tables never freeze the
        window); Sync waits until the list is complete, so that it never syncs a part."""
        if self._filling is not None:
            self._filling.cancel()
        self.tables.clear()
        user_role, checked = Qt.ItemDataRole.UserRole, Qt.CheckState.Checked
        flags = QListWidgetItem().flags() | Qt.ItemFlag.ItemIsUserCheckable
        widget = self.tables

        def add(table: tuple[str, int | None]) -> None:
            name, estimate = table
            item = QListWidgetItem(name + (f"   (~{estimate:,} rows)" if estimate and estimate > 0 else ""))
            item.setData(user_role, name)
            item.setFlags(flags)
            item.setCheckState(checked)
            widget.addItem(item)

        def done() -> None:
            self._filling = None
            if not tables:
                item = QListWidgetItem("Not discovered yet: Sync reads every table of the source.")
                item.setFlags(Qt.ItemFlag.NoItemFlags)
                self.tables.addItem(item)
            if self.table_filter.text().strip():
                self._filter_tables(self.table_filter.text())
            if then is not None:
                then()
            self.update_buttons()

        self._filling = None
        filling = Slices(tables, add, done, alive=lambda: isValid(widget))
        self._filling = filling if filling.running else None

    def _filter_tables(self, text: str) -> None:
        text = text.strip().lower()
        for i in range(self.tables.count()):
            item = self.tables.item(i)
            item.setHidden(bool(text) and text not in item.text().lower())

    def _check_all(self, on: bool) -> None:
        for i in range(self.tables.count()):
            item = self.tables.item(i)
            if item.flags() & Qt.ItemFlag.ItemIsUserCheckable and not item.isHidden():
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def checked_tables(self) -> list[str] | None:
        """The picked tables; None when all are (let the engine take every discovered one)."""
        names, total = [], 0
        for i in range(self.tables.count()):
            item = self.tables.item(i)
            if not item.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                continue
            total += 1
            if item.checkState() == Qt.CheckState.Checked:
                names.append(item.data(Qt.ItemDataRole.UserRole))
        return None if len(names) == total else names

    def _any_picked(self) -> bool:
        """checked_tables() is None or not empty, without walking thousands of items when
        the first one decides."""
        plain = True
        for i in range(self.tables.count()):
            item = self.tables.item(i)
            if not item.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                continue
            plain = False
            if item.checkState() == Qt.CheckState.Checked:
                return True
        return plain

    def set_checked(self, names: list[str]) -> None:
        for i in range(self.tables.count()):
            item = self.tables.item(i)
            if item.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                on = item.data(Qt.ItemDataRole.UserRole) in names
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    # --- buttons ---------------------------------------------------------------------------

    def current_buttons(self) -> Buttons:
        job = self.jobs.job(self.connector)
        running = bool(job and job.running)
        s = self.status or {}
        return button_states(
            connector=self.connector is not None and self.workspace is not None,
            running=running, cancelling=bool(job and job.cancelling),
            resumable=bool(s.get("resumable")),
            failed_chunks=len(s.get("failed_chunks", [])), status_known=self.status is not None)

    def update_buttons(self) -> None:
        b = self.current_buttons()
        self.sync_button.setEnabled(b.sync and self._filling is None and self._any_picked())
        self.resume_button.setEnabled(b.resume)
        self.cancel_button.setEnabled(b.cancel)
        self.retry_button.setEnabled(b.retry)
        self.table_settings_button.setEnabled(self.selected_table() is not None and self.status is not None)
        self.buttons_changed.emit(Buttons(self.sync_button.isEnabled(), b.resume, b.cancel, b.retry))

    # --- a table's own settings ----------------------------------------------------------------

    def selected_table(self) -> str | None:
        item = self.tables.currentItem()
        if item is None or not item.flags() & Qt.ItemFlag.ItemIsUserCheckable:
            return None
        return item.data(Qt.ItemDataRole.UserRole)

    def edit_table_settings(self) -> None:
        """The selected table's settings in a dialog; saved in the background, a refused
        setting shown in the dialog (which stays open to correct it)."""
        from esg_workbench.gui.table_settings_dialog import TableSettingsDialog
        from esg_workbench.sync import table_settings

        stream = self.selected_table()
        if stream is None or self.status is None:
            return
        current = (self.status.get("table_settings") or {}).get(stream, {})
        self.table_dialog = dialog = TableSettingsDialog(stream, current, self)
        connector = self.connector

        def save() -> None:
            def saved(_result) -> None:
                dialog.done(QDialog.DialogCode.Accepted)
                self.refresh_status()

            self.pool.run(table_settings.set_table_settings, self.workspace, connector, stream, dialog.settings(),
                          replace=True, on_done=saved, on_error=dialog.show_problem, owner=dialog)

        dialog.buttons.accepted.disconnect()
        dialog.buttons.accepted.connect(save)
        dialog.open()

    # --- actions -----------------------------------------------------------------------------

    def _request(self, **kw):
        from esg_workbench.sync.engine import SyncRequest

        return SyncRequest(connector=self.connector, **kw)

    def start_sync(self) -> None:
        if not self.sync_button.isEnabled():
            return
        self._start(self._request(
            tables=self.checked_tables(), load_type=self.load_type.currentData(),
            chunk_size=self.chunk_size.value() or None, chunk_strategy=self.chunk_strategy.currentData(),
            window=self.window.currentData()))

    def resume(self) -> None:
        if self.resume_button.isEnabled():
            self._start(self._request(resume=True))

    def retry_failed(self) -> None:
        if self.retry_button.isEnabled():
            self._start(self._request(retry_failed=True))

    def cancel(self) -> None:
        job = self.jobs.job(self.connector)
        if job is not None:
            job.cancel()

    def _start(self, request) -> None:
        self.log.clear()
        self.progress.setValue(0)
        self.jobs.start(self.workspace, request, planned=(self.status or {}).get("tables"))
        self.start_requested.emit(request)
        self.update_buttons()

    # --- live figures --------------------------------------------------------------------------

    def _job_changed(self, job: SyncJob) -> None:
        if job.connector == self.connector:
            if not self._repaint.isActive():
                self._repaint.start()
            self.update_buttons()

    def _job_logged(self, job: SyncJob, line: str) -> None:
        if job.connector == self.connector:
            self.log.appendPlainText(line)

    def _job_ended(self, job: SyncJob) -> None:
        if job.connector == self.connector:
            self._show_figures()
            self.refresh_status()

    def _show_cancelling(self, job: SyncJob) -> None:
        """A cancel waits for the chunk being written: show how long, and what for, so a
        second look (or a second Cancel) is answered."""
        if job.cancelling:
            waited = time.monotonic() - (job.cancel_requested_at or time.monotonic())
            self.progress.setFormat(f"%p% — cancelling ({waited:.0f} s): finishing the chunk being written")
            self.cancel_button.setText(f"Cancelling… {waited:.0f} s")
            self.cancel_button.setToolTip(job.cancel_wait_text())
            if not self._cancel_clock.isActive():
                self._cancel_clock.start()
        else:
            self._cancel_clock.stop()
            self.cancel_button.setText("&Cancel")
            self.cancel_button.setToolTip("Stop after the chunk being written (Esc)")

    def _show_figures(self) -> None:
        job = self.jobs.job(self.connector)
        if job is None:
            self._cancel_clock.stop()
            self.progress.setValue(0)
            self.progress.setFormat("%p%")
            for label in self.figures.values():
                label.setText("–")
            return
        f = job.figures
        finished = not job.running
        percent = 100 if finished and job.result is not None and job.result.status.value == "success" else job.percent
        self.progress.setValue(percent)
        self.progress.setFormat(f"%p% — {job.status_text.replace('_', ' ')}")
        self._show_cancelling(job)
        failed = f" ({f.chunks_failed} failed)" if f.chunks_failed else ""
        self.figures["chunks"].setText(f"{f.chunks_done:,} / {f.chunks_planned:,}{failed}")
        self.figures["rows_read"].setText(f"{f.rows_read:,}")
        self.figures["rows_written"].setText(f"{f.rows_written:,}")
        self.figures["rate"].setText(f"{f.rate:,.0f} rows/s")
        self.figures["elapsed"].setText(_duration(f.elapsed))
        self.figures["eta"].setText("done" if finished else _duration(f.eta))
        self.figures["stream"].setText(f.stream or "–")
        self.figures["chunk"].setText(f.current_chunk or "–")
