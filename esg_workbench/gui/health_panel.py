"""The Health tab: every connector's last success, data lag, failure streak and failed
chunks waiting, with Retry failed chunks; and a bar chart of rows per sync for the
selected connector, failed and partial runs coloured.

The figures come from `sync.health.connector_health` (a few grouped queries), loaded in
a worker when the tab is shown and when a sync ends. `install_health_tab(window)` adds
the tab to a MainWindow; its retry goes through the Sync panel's own Retry failed
chunks, so the run is the same as one started there.
"""

from __future__ import annotations

import datetime as dt
import math

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLineEdit,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableView,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import icons
from esg_workbench.gui.kpi_chart import format_number, nice_step
from esg_workbench.sync.health import ConnectorHealth, SyncPoint

COLUMNS = ["Connector", "Type", "Last success", "Data lag", "Last run", "Failure streak", "Failed chunks waiting",
           "Secret"]
SECRET = COLUMNS.index("Secret")
STATUS_COLORS = {"success": "#2e7d32", "partial_success": "#ef6c00", "failed": "#c62828",
                 "cancelled": "#90a4ae", "running": "#64b5f6"}
STATUS_WORDS = {"success": "success", "partial_success": "partial", "failed": "failed", "cancelled": "cancelled",
                "running": "running"}
STATUS_KIND = {"success": "ok", "partial_success": "warn", "cancelled": "warn", "failed": "error", "running": "info"}
ALERT_BG, ALERT_FG, WAIT_BG = QColor("#ffebee"), QColor("#b71c1c"), QColor("#fff3e0")


def _when(value: dt.datetime | None) -> str:
    return "never" if value is None else f"{value:%Y-%m-%d %H:%M}"


class HealthModel(QAbstractTableModel):
    """One row per connector."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[ConnectorHealth] = []

    def set_rows(self, rows: list[ConnectorHealth]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        h, column = self.rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return [
                h.name, h.type, _when(h.last_success_at), h.lag_text,
                STATUS_WORDS.get(h.last_run_status or "", "no run yet"),
                f"{h.failure_streak} failed in a row" if h.failure_streak else "0",
                f"{h.failed_chunks_waiting:,}" + (f" ({h.failed_chunks_ignored:,} ignored)"
                                                  if h.failed_chunks_ignored else ""),
                h.secret_text,
            ][column]
        if role == Qt.ItemDataRole.DecorationRole:
            if column == 0:
                return icons.dot_icon("error" if h.failure_streak else "warn" if h.failed_chunks_waiting
                                      or h.secret_overdue else "ok" if h.last_success_at else "idle")
            if column == 4 and h.last_run_status:
                return icons.dot_icon(STATUS_KIND.get(h.last_run_status, "idle"))
        if role == Qt.ItemDataRole.BackgroundRole:
            if column == 5 and h.failure_streak:
                return QBrush(ALERT_BG)
            if column == 6 and h.failed_chunks_waiting:
                return QBrush(WAIT_BG)
            if column == SECRET and h.secret_overdue:
                return QBrush(WAIT_BG)
        if role == Qt.ItemDataRole.ForegroundRole and column == 5 and h.failure_streak:
            return QBrush(ALERT_FG)
        if role == Qt.ItemDataRole.FontRole and column == 5 and h.failure_streak:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ToolTipRole:
            if column in (4, 5) and h.last_error:
                return h.last_error
            if column == 3 and h.last_success_at:
                return f"The newest data landed by a successful sync is {h.lag_text} old."
            if column == SECRET and h.has_secret:
                return ("Due for rotation: replace it with Edit connector (the new password is tried on the source "
                        "first) or esg-workbench connector set-password." if h.secret_overdue else
                        "When the password in the keyring was last set. A rotation period makes Health warn when "
                        "it is older: esg-workbench connector rotation NAME --days N.")
            if column == 6 and h.failed_chunks_ignored:
                return "Ignored chunks stay missing until they land: see the Failed chunks tab."
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (5, 6):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class RowsPerSyncChart(QWidget):
    """Bars of rows written per run over time, coloured by the run's status."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("rowsPerSyncChart")
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(140)
        self.title = ""
        self.points: list[SyncPoint] = []
        self.empty_text = "Select a connector to see its rows per sync."
        self._bars: list[tuple[QRectF, SyncPoint]] = []
        self._plot = QRectF()

    def sizeHint(self) -> QSize:
        return QSize(600, 240)

    def set_points(self, title: str, points: list[SyncPoint], empty_text: str = "No sync runs yet.") -> None:
        self.title, self.points, self.empty_text = title, list(points), empty_text
        self.update()

    def bar_color(self, status: str) -> QColor:
        return QColor(STATUS_COLORS.get(status, "#90a4ae"))

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("white"))
        self._bars = []
        font = QFont(self.font())
        font.setPointSizeF(8.5)
        p.setFont(font)
        fm = QFontMetricsF(font)
        if not self.points:
            p.setPen(QColor("#78909c"))
            p.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignCenter, self.empty_text)
            return
        bold = QFont(font)
        bold.setBold(True)
        bold.setPointSizeF(9.5)
        p.setFont(bold)
        p.setPen(QColor("#263238"))
        p.drawText(QRectF(10, 4, self.width() - 20, 20), Qt.AlignmentFlag.AlignVCenter, self.title)
        p.setFont(font)
        self._legend(p, fm)

        top = max(pt.rows_written for pt in self.points)
        step = nice_step(top or 1)
        high = max(step, math.ceil((top or 1) / step) * step)
        ticks = [i * step for i in range(int(round(high / step)) + 1)]
        left = 12 + max(fm.horizontalAdvance(format_number(t)) for t in ticks)
        plot = QRectF(left, 46, self.width() - left - 14, self.height() - 46 - 34)
        if plot.height() < 30 or plot.width() < 60:
            return
        self._plot = plot

        def y_of(value: float) -> float:
            return plot.bottom() - value / high * plot.height()

        for t in ticks:
            y = y_of(t)
            p.setPen(QPen(QColor("#cfd8dc") if t else QColor("#90a4ae"), 1))
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.setPen(QColor("#607d8b"))
            p.drawText(QRectF(0, y - 8, left - 6, 16), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       format_number(t))
        n = len(self.points)
        slot = plot.width() / n
        width = max(2.0, min(slot * 0.7, 48.0))
        labels = [f"{pt.started_at:%m-%d %H:%M}" for pt in self.points]
        every = max(1, math.ceil((max(fm.horizontalAdvance(s) for s in labels) + 10) / slot))
        for i, pt in enumerate(self.points):
            x = plot.left() + i * slot + (slot - width) / 2
            height = max(pt.rows_written / high * plot.height(), 0.0)
            if pt.status in ("failed", "partial_success") and height < 3:
                height = 3.0  # a failed run with no rows still shows
            rect = QRectF(x, plot.bottom() - height, width, height)
            p.fillRect(rect, self.bar_color(pt.status))
            self._bars.append((QRectF(plot.left() + i * slot, plot.top(), slot, plot.height()), pt))
            if i % every == 0 or i == n - 1 and (n - 1) % every == 0:
                p.setPen(QColor("#607d8b"))
                p.drawText(QRectF(plot.left() + i * slot - 40, plot.bottom() + 4, slot + 80, 16),
                           Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, labels[i])
        p.setPen(QPen(QColor("#90a4ae"), 1))
        p.drawLine(plot.bottomLeft(), plot.bottomRight())
        p.end()

    def _legend(self, p: QPainter, fm: QFontMetricsF) -> None:
        shown = [s for s in STATUS_COLORS if any(pt.status == s for pt in self.points)]
        x = 10.0
        for status in shown:
            word = STATUS_WORDS[status]
            p.fillRect(QRectF(x, 30, 10, 10), QColor(STATUS_COLORS[status]))
            p.setPen(QColor("#37474f"))
            p.drawText(QRectF(x + 14, 26, 200, 18), Qt.AlignmentFlag.AlignVCenter, word)
            x += 14 + fm.horizontalAdvance(word) + 14

    def point_at(self, pos: QPointF) -> SyncPoint | None:
        for rect, point in self._bars:
            if rect.contains(pos):
                return point
        return None

    def mouseMoveEvent(self, event) -> None:
        point = self.point_at(event.position())
        if point is None:
            QToolTip.hideText()
            return
        QToolTip.showText(event.globalPosition().toPoint(),
                          f"<b>Run {point.run_id}</b><br>{point.started_at:%Y-%m-%d %H:%M:%S} UTC<br>"
                          f"{point.rows_written:,} rows written<br>{STATUS_WORDS.get(point.status, point.status)}",
                          self)


class HealthPanel(QWidget):
    loaded = Signal(list)  # [ConnectorHealth]
    retry_requested = Signal(str)  # connector name
    message = Signal(str)

    def __init__(self, pool, parent: QWidget | None = None):
        super().__init__(parent)
        self.pool = pool
        self.workspace = None
        self.health: list[ConnectorHealth] = []
        self.busy_connectors: set[str] = set()  # syncing now: no retry from here
        self._request = 0

        self.summary = QLabel("Open a workspace to see the health of its connectors.")
        self.summary.setObjectName("healthSummary")
        self.summary.setWordWrap(True)
        self.refresh_button = QPushButton(icons.standard("SP_BrowserReload"), "Refresh")
        self.retry_button = QPushButton(icons.standard("SP_BrowserReload"), "Retry failed chunks")
        self.retry_button.setObjectName("healthRetry")
        self.retry_button.setToolTip("Run the selected connector's failed chunks again (as Sync → Retry failed chunks)")
        self.retry_button.setEnabled(False)
        self.webhook_button = QPushButton(icons.standard("SP_MessageBoxInformation"), "Alert webhook…")
        self.webhook_button.setObjectName("webhookButton")
        self.webhook_button.setToolTip("Where failed and partial syncs of this workspace post a JSON alert")
        self.webhook_button.setEnabled(False)
        self.webhook_dialog: WebhookDialog | None = None
        self.model = HealthModel(self)
        self.table = QTableView()
        self.table.setObjectName("healthTable")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.error_label = QLabel()
        self.error_label.setObjectName("healthError")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.setStyleSheet("color: #b71c1c;")
        self.chart = RowsPerSyncChart()

        head = QHBoxLayout()
        head.addWidget(self.summary, 1)
        head.addWidget(self.retry_button)
        head.addWidget(self.webhook_button)
        head.addWidget(self.refresh_button)
        upper = QWidget()
        ul = QVBoxLayout(upper)
        ul.setContentsMargins(0, 0, 0, 0)
        ul.addLayout(head)
        ul.addWidget(self.table, 1)
        ul.addWidget(self.error_label)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(upper)
        self.splitter.addWidget(self.chart)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.splitter)

        self.refresh_button.clicked.connect(self.refresh)
        self.retry_button.clicked.connect(self._retry_clicked)
        self.webhook_button.clicked.connect(self.open_webhook_dialog)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._selection_changed())

    # --- loading --------------------------------------------------------------------------

    def set_workspace(self, workspace) -> None:
        self.workspace = workspace
        self.webhook_button.setEnabled(workspace is not None)
        self.health = []
        self.model.set_rows([])
        self._selection_changed()
        if self.isVisible():
            self.refresh()

    def refresh(self) -> None:
        if self.workspace is None:
            return
        from esg_workbench.sync.health import connector_health

        self._request += 1
        request = self._request

        def done(health: list[ConnectorHealth]) -> None:
            if request == self._request:
                self._show(health)

        def failed(message: str) -> None:
            if request == self._request:
                self.summary.setText(f"Could not load the health of the connectors: {message}")

        self.pool.run(connector_health, self.workspace, on_done=done, on_error=failed, owner=self)

    def _show(self, health: list[ConnectorHealth]) -> None:
        selected = self.selected_name()
        self.health = health
        self.model.set_rows(health)
        attention = [h for h in health if h.needs_attention]
        if not health:
            self.summary.setText("No connectors yet.")
        else:
            waiting = sum(h.failed_chunks_waiting for h in health)
            self.summary.setText(
                f"{len(health)} connector(s); "
                + (f"{len(attention)} {'needs' if len(attention) == 1 else 'need'} attention" if attention
                   else "all healthy")
                + (f"; {waiting:,} failed chunk(s) wait for a retry" if waiting else "") + ".")
        self.table.resizeColumnsToContents()
        names = [h.name for h in health]
        target = selected if selected in names else (attention[0].name if attention else names[0] if names else None)
        if target is not None:
            self.select(target)
        self._selection_changed()
        self.loaded.emit(health)

    # --- selection, chart and retry -----------------------------------------------------------

    def selected_name(self) -> str | None:
        index = self.table.currentIndex()
        if not index.isValid() or index.row() >= len(self.model.rows):
            return None
        return self.model.rows[index.row()].name

    def selected(self) -> ConnectorHealth | None:
        name = self.selected_name()
        return next((h for h in self.health if h.name == name), None)

    def select(self, name: str) -> bool:
        for row, h in enumerate(self.model.rows):
            if h.name == name:
                self.table.setCurrentIndex(self.model.index(row, 0))
                return True
        return False

    def set_busy(self, names: set[str]) -> None:
        """Connectors syncing now (from the window's jobs): their retry waits."""
        self.busy_connectors = set(names)
        self._update_retry()

    def _selection_changed(self) -> None:
        h = self.selected()
        if h is None:
            self.chart.set_points("", [], "Select a connector to see its rows per sync.")
            self.error_label.clear()
        else:
            self.chart.set_points(f"Rows per sync — {h.name} (last {len(h.rows_per_sync)} runs)", h.rows_per_sync,
                                  f"{h.name} has not synced yet.")
            self.error_label.setText(f"Last error of {h.name}: {h.last_error}" if h.last_error else "")
        self._update_retry()

    def _update_retry(self) -> None:
        h = self.selected()
        self.retry_button.setEnabled(bool(h and h.failed_chunks_waiting and h.name not in self.busy_connectors))

    def _retry_clicked(self) -> None:
        h = self.selected()
        if h is not None and self.retry_button.isEnabled():
            self.retry_button.setEnabled(False)  # once per click; the end of the sync refreshes
            self.retry_requested.emit(h.name)


    def open_webhook_dialog(self) -> "WebhookDialog | None":
        if self.workspace is None:
            return None
        dialog = WebhookDialog(self.pool, self.workspace, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.saved.connect(self.message)
        self.webhook_dialog = dialog
        dialog.open()
        return dialog


class WebhookDialog(QDialog):
    """Set, test or remove the workspace's alert webhook. The URL goes to the keyring;
    every keyring and network call runs in a worker."""

    saved = Signal(str)  # what was done, for the status bar
    finished_work = Signal(str)  # "loaded", "saved", "removed", "tested" (for tests)

    def __init__(self, pool, workspace, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Alert webhook")
        self.pool, self.workspace = pool, workspace
        intro = QLabel(
            "When a sync fails or partly fails, ESG Workbench posts a JSON alert (connector, run, failed "
            "chunks, error; never a secret) to this address, e.g. a Slack or Teams incoming webhook. "
            "The URL is kept in the system keyring, for this workspace and organization.")
        intro.setWordWrap(True)
        self.url = QLineEdit()
        self.url.setObjectName("webhookUrl")
        self.url.setPlaceholderText("https://hooks.example.com/services/…")
        self.url.setEchoMode(QLineEdit.EchoMode.PasswordEchoOnEdit)  # the token is not shown at rest
        self.state = QLabel()
        self.state.setObjectName("webhookState")
        self.state.setWordWrap(True)
        self.state.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox()
        self.save_button = self.buttons.addButton("Save", QDialogButtonBox.ButtonRole.AcceptRole)
        self.test_button = self.buttons.addButton("Send test alert", QDialogButtonBox.ButtonRole.ActionRole)
        self.remove_button = self.buttons.addButton("Remove", QDialogButtonBox.ButtonRole.DestructiveRole)
        self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        form = QFormLayout()
        form.addRow("Webhook URL", self.url)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.state)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(560)
        # a word-wrapped label gets its height for the dialog's width only when asked
        intro.setMinimumHeight(intro.heightForWidth(560 - 24))
        self.save_button.clicked.connect(self.save)
        self.test_button.clicked.connect(self.send_test)
        self.remove_button.clicked.connect(self.remove)
        self.buttons.rejected.connect(self.reject)
        self._busy(True)
        self.state.setText("Reading the keyring…")
        from esg_workbench import alerts

        self._run("loaded", alerts.webhook_url, self.workspace, done=self._loaded)

    def _busy(self, busy: bool) -> None:
        for b in (self.save_button, self.test_button, self.remove_button):
            b.setEnabled(not busy)

    def _run(self, what: str, fn, *args, done) -> None:
        def ok(result) -> None:
            self._busy(False)
            done(result)
            self.finished_work.emit(what)

        def failed(message: str) -> None:
            self._busy(False)
            self._say(message, error=True)
            self.finished_work.emit(what)

        self.pool.run(fn, *args, on_done=ok, on_error=failed, owner=self)

    def _say(self, text: str, error: bool = False) -> None:
        self.state.setStyleSheet("color: #b71c1c;" if error else "color: #2e7d32;")
        self.state.setText(text)

    def _loaded(self, url: str | None) -> None:
        from esg_workbench import alerts

        self.url.setText(url or "")
        self._say(f"Alerts go to {alerts.describe_url(url)}." if url else "No webhook set: alerts show only "
                  "as desktop notifications.")

    def save(self) -> None:
        from esg_workbench import alerts

        text = self.url.text().strip()
        try:
            alerts.validate_webhook_url(text)
        except Exception as exc:  # a ConfigError: say it here, keep the dialog open
            from esg_workbench.gui.workers import describe_error

            self._say(describe_error(exc), error=True)
            return
        self._busy(True)

        def done(_):
            where = alerts.describe_url(text)
            self._say(f"Saved: alerts go to {where}.")
            self.saved.emit(f"Alert webhook set to {where}.")

        self._run("saved", alerts.set_webhook_url, self.workspace, text, done=done)

    def remove(self) -> None:
        from esg_workbench import alerts

        self._busy(True)

        def done(_):
            self.url.clear()
            self._say("Removed: alerts show only as desktop notifications.")
            self.saved.emit("Alert webhook removed.")

        self._run("removed", alerts.set_webhook_url, self.workspace, None, done=done)

    def send_test(self) -> None:
        from esg_workbench import alerts

        self._busy(True)
        self._say("Sending a test alert…")

        def done(error: str | None) -> None:
            if error:
                self._say(f"Not delivered: {error}", error=True)
            else:
                self._say("Test alert delivered.")

        def test(workspace):
            if not alerts.webhook_url(workspace):
                return "No webhook is saved yet: save the URL first."
            return alerts.dispatch(workspace, alerts.sample_alert(workspace))

        self._run("tested", test, self.workspace, done=done)


def health_icon():
    """A pulse line (the Health tab)."""
    from PySide6.QtGui import QIcon, QPainterPath, QPixmap

    pixmap = QPixmap(32, 32)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    path = QPainterPath(QPointF(2, 18))
    for x, y in ((10, 18), (13, 8), (18, 27), (22, 14), (24, 18), (30, 18)):
        path.lineTo(QPointF(x, y))
    p.setPen(QPen(QColor("#c62828"), 2.4))
    p.drawPath(path)
    p.end()
    return QIcon(pixmap)


def retry_through_sync_panel(window, name: str) -> None:
    """Retry a connector's failed chunks the way the Sync panel does: select it, let the
    panel load its status, then press its Retry failed chunks."""
    sync = window.sync
    window.connectors.select(name)
    window.tabs.setCurrentWidget(sync)

    def loaded(loaded_name: str, _status) -> None:
        if loaded_name != name:
            return
        sync.status_loaded.disconnect(loaded)
        if sync.retry_button.isEnabled():
            sync.retry_failed()
        else:
            window.show_message(f"{name} has no failed chunks to retry now (or is syncing).")

    sync.status_loaded.connect(loaded)
    sync.refresh_status()


def install_health_tab(window) -> HealthPanel:
    """Add the Health tab to a MainWindow: loaded when shown and after every sync."""
    panel = HealthPanel(window.pool)
    window.health = panel
    window.tabs.addTab(panel, health_icon(), "Health")

    def busy() -> set[str]:
        return {job.connector for job in window.jobs.running()}

    def refresh_if_shown() -> None:
        if window.tabs.currentWidget() is panel:
            panel.refresh()

    window.workspace_ready.connect(panel.set_workspace)
    window.tabs.currentChanged.connect(lambda _i: refresh_if_shown())
    window.jobs.running_changed.connect(lambda _n: panel.set_busy(busy()))
    window.jobs.ended.connect(lambda _job: panel.refresh())
    panel.retry_requested.connect(lambda name: retry_through_sync_panel(window, name))
    panel.message.connect(window.show_message)
    if getattr(window, "workspace", None) is not None:
        panel.set_workspace(window.workspace)
    return panel
