"""Desktop notifications for failed and partially failed syncs, and the webhook alert.

When a sync job ends failed or partial_success, the alert is built in a worker (it reads
the run's chunk ledger), shown as a system tray message when the desktop has a tray,
else as a notice in the window (the info bar, the status bar and the window's `notice`
signal), and sent to the workspace's webhook from another worker: a slow or dead
receiver never holds up the GUI thread.

`install_notifications(window)` wires it to a MainWindow.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QSystemTrayIcon

from esg_workbench.core.specs import SyncStatus

ALERT_STATUSES = (SyncStatus.FAILED, SyncStatus.PARTIAL_SUCCESS)
TRAY_MESSAGE_MS = 15000


class SyncNotifier(QObject):
    """Turns ended sync jobs into notifications and webhook alerts."""

    notified = Signal(str, str, str)  # title, text, where ("tray" or "window")
    alert_dispatched = Signal(object, object)  # Alert, error text or None (None also when no webhook)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self._tray: QSystemTrayIcon | None = None

    # --- a job ended ----------------------------------------------------------------------

    def job_ended(self, job) -> None:
        window = self.window
        if window.workspace is None:
            return
        result = job.result
        if result is None:
            # the sync could not start (connector gone, ...): no run to alert on; a connector
            # busy elsewhere is no failure (the Sync tab and the scheduler say so)
            if job.error and not job.busy:
                self.notify(f"Sync of '{job.connector}' failed", job.error.splitlines()[0], "error")
            return
        if result.status not in ALERT_STATUSES:
            return
        from esg_workbench import alerts

        workspace = window.workspace
        window.pool.run(alerts.alert_for_run, workspace, job.connector, result,
                        on_done=lambda alert: self._alert_ready(workspace, alert),
                        on_error=lambda message: self.notify(
                            f"Sync of '{job.connector}' {result.status.value.replace('_', ' ')}",
                            result.error or message, "error"),
                        owner=self)

    def _alert_ready(self, workspace, alert) -> None:
        if alert is None:
            return
        self.notify(alert.title(), self._short_text(alert), "error" if alert.kind == "failed" else "warn")
        from esg_workbench import alerts

        self.window.pool.run(alerts.dispatch, workspace, alert,
                             on_done=lambda error: self._dispatched(alert, error),
                             on_error=lambda message: self._dispatched(alert, message), owner=self)

    def _dispatched(self, alert, error: str | None) -> None:
        if error:
            self.window.show_message(f"The alert for {alert.connector} (run {alert.run_id}) was not delivered "
                                     f"to the webhook: {error.splitlines()[0]}")
        self.alert_dispatched.emit(alert, error)

    @staticmethod
    def _short_text(alert) -> str:
        """The notification body: the error and how many chunks wait, in a few lines."""
        lines = [f"Run {alert.run_id}: {(alert.error or 'no error text').splitlines()[0]}"]
        total = alert.failed_chunks_total or len(alert.failed_chunks)
        if total:
            lines.append(f"{total} failed chunk(s) wait for a retry (Health tab or Sync → Retry failed chunks).")
        return "\n".join(lines)

    # --- showing it -------------------------------------------------------------------------

    def notify(self, title: str, text: str, kind: str = "error") -> None:
        window = self.window
        if self._tray_available():
            tray = self._tray_icon()
            icon = (QSystemTrayIcon.MessageIcon.Critical if kind == "error"
                    else QSystemTrayIcon.MessageIcon.Warning)
            tray.showMessage(title, text, icon, TRAY_MESSAGE_MS)
            where = "tray"
        else:
            actions = []
            if hasattr(window, "health"):
                actions.append(("Show health", lambda: window.tabs.setCurrentWidget(window.health)))
            window.info.show_notice(f"{title}. {text}", kind, actions, topic="alert")
            where = "window"
        window.show_message(f"{title}: {text.splitlines()[0]}")
        self.notified.emit(title, text, where)

    @staticmethod
    def _tray_available() -> bool:
        return QSystemTrayIcon.isSystemTrayAvailable() and QSystemTrayIcon.supportsMessages()

    def _tray_icon(self) -> QSystemTrayIcon:
        if self._tray is None:
            icon = self.window.windowIcon()
            if icon.isNull():
                from esg_workbench.gui import icons

                icon = icons.standard("SP_MessageBoxWarning")
            self._tray = QSystemTrayIcon(icon, self)
            self._tray.setToolTip("ESG Workbench")
            self._tray.messageClicked.connect(self._show_window)
        self._tray.show()
        return self._tray

    def _show_window(self) -> None:
        window = self.window
        window.showNormal()
        window.raise_()
        window.activateWindow()
        if hasattr(window, "health"):
            window.tabs.setCurrentWidget(window.health)


def install_notifications(window) -> SyncNotifier:
    """Notify on every failed or partial sync of the window's jobs."""
    notifier = SyncNotifier(window)
    window.jobs.ended.connect(notifier.job_ended)
    window.notifier = notifier
    return notifier
