"""The main window: connectors on the left; Schema, Sync, History and Audit tabs; menus
with keyboard shortcuts; workspace switching and recent workspaces; remembered state."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import catalog, dialogs, icons
from esg_workbench.gui.audit_panel import AuditPanel
from esg_workbench.gui.connector_dialog import ConnectorDialog
from esg_workbench.gui.connectors_panel import ConnectorsPanel
from esg_workbench.gui.history_panel import HistoryPanel
from esg_workbench.gui.schema_browser import SchemaBrowser
from esg_workbench.gui.sync_jobs import SyncJobs
from esg_workbench.gui.sync_panel import SyncPanel
from esg_workbench.gui.workers import WorkerPool

MAX_RECENT = 8
WATCH_MS = 10_000  # how often the window looks for changes made elsewhere
TABS = ("schema", "sync", "history", "audit", "mapping", "kpis", "health", "schedules", "failed_chunks")


#: what every sync imports on its worker thread at its start. An import holds the GIL for
#: its whole length (pyarrow alone ~100 ms, more on a loaded machine), which froze the
#: window at the start of the first sync; imported while the window is built, before it
#: shows, it costs start-up time instead.
SYNC_MODULES = ("pyarrow", "tenacity", "esg_workbench.sync.engine", "esg_workbench.mapping.apply",
                "esg_workbench.mapping.aggregate", "esg_workbench.mapping.store")


def preload_sync_modules() -> None:
    import importlib

    for name in SYNC_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # (a trimmed installation: the sync will say what is missing)
            pass


def settle_heap(collect: bool = False) -> None:
    """Move what lives for the whole session (modules, classes, Qt wrappers, SQLAlchemy
    metadata: hundreds of thousands of objects) out of the cyclic garbage collector's
    way. A full collection walks every tracked object while holding the GIL, so without
    this one triggered by any thread (a discovery reflecting thousands of tables, a list
    being filled) froze the window for 100-400 ms on a loaded machine."""
    import gc

    if collect:
        gc.collect()
    gc.freeze()


class MessageRelay(QWidget):
    """Carries text from a worker's plain callback to the GUI thread (a queued signal)."""

    message = Signal(str)


class MainWindow(QMainWindow):
    workspace_ready = Signal(object)  # Workspace
    workspace_failed = Signal(str)
    connectors_loaded = Signal(list)  # [ConnectorOverview]
    sample_loaded = Signal(object)  # the demo summary
    notice = Signal(str)  # every message shown in the status bar

    def __init__(self, workspace_url: str | None = None, settings: QSettings | None = None):
        super().__init__()
        self.setWindowTitle("ESG Workbench")
        self.settings = settings or QSettings()
        self.pool = WorkerPool(self)
        self.jobs = SyncJobs(self.pool, self)
        self.workspace = None
        self.workspace_url: str | None = None
        self._closing = False
        self._resume_offered: set[str] = set()
        self._overviews_seen = False

        self.connectors = ConnectorsPanel()
        self.schema = SchemaBrowser(self.pool)
        self.sync = SyncPanel(self.pool, self.jobs)
        self.history = HistoryPanel(self.pool)
        self.audit = AuditPanel(self.pool)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("mainTabs")
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.schema, icons.table_icon(), "Schema")
        self.tabs.addTab(self.sync, icons.standard("SP_MediaPlay"), "Sync")
        self.tabs.addTab(self.history, icons.standard("SP_FileDialogDetailedView"), "History")
        self.tabs.addTab(self.audit, icons.standard("SP_DialogApplyButton"), "Audit")
        from esg_workbench.gui.mapping import install_mapping_tabs

        install_mapping_tabs(self)  # the Mapping and KPIs tabs: self.mapping, self.kpis
        from esg_workbench.gui.health_panel import install_health_tab
        from esg_workbench.gui.notifications import install_notifications
        from esg_workbench.gui.scheduler import install_scheduling

        install_health_tab(self)  # the Health tab: self.health
        install_scheduling(self)  # the Schedules tab and the in-app scheduler: self.schedules, self.scheduler
        from esg_workbench.gui.failed_chunks_panel import install_failed_chunks_tab

        install_failed_chunks_tab(self)  # the Failed chunks tab: self.failed_chunks
        install_notifications(self)  # failed/partial syncs: a desktop notification and the webhook
        self.info = dialogs.InfoBar()
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 4, 4, 0)
        rl.addWidget(self.info)
        rl.addWidget(self.tabs, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(self.connectors)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 4)
        self.splitter.setSizes([240, 1040])  # (at 1280 px the Mapping toolbar needs 1,000)
        self.setCentralWidget(self.splitter)

        self.workspace_label = QLabel("No workspace")
        self.workspace_label.setObjectName("workspaceLabel")
        self.syncs_label = QLabel()
        self.statusBar().addWidget(self.workspace_label, 1)
        self.statusBar().addPermanentWidget(self.syncs_label)

        # another window or process may change connectors on the same workspace: look
        # every few seconds (a few small reads in a worker) and refresh when it did
        self.watch = QTimer(self)
        self.watch.setInterval(WATCH_MS)
        self.watch.timeout.connect(self._watch_workspace)
        self._fingerprint = None
        self._watching = False

        self._build_actions()
        self._connect()
        self._restore_state()
        preload_sync_modules()
        settle_heap(collect=True)  # (before the window shows: the one full collection is not seen)
        self.open_workspace(workspace_url)

    # --- actions and menus ---------------------------------------------------------------

    def _action(self, text: str, slot, shortcut: str | QKeySequence.StandardKey | None = None,
                icon: str | object | None = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if isinstance(icon, str):
            action.setIcon(icons.standard(icon))
        elif icon is not None:
            action.setIcon(icon)
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(f"{tip} ({action.shortcut().toString()})" if shortcut else tip)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        a = self._action
        self.act_switch = a("&Switch workspace…", self.choose_workspace, "Ctrl+O", "SP_DirOpenIcon",
                            "Open a DuckDB file or a PostgreSQL workspace")
        self.act_samples = a("Load &sample data", self.load_samples, None, "SP_FileDialogNewFolder",
                             "Add the bundled sample ERP database as a connector and sync it")
        self.act_quit = a("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_add = a("&Add connector…", self.add_connector, "Ctrl+N", "SP_FileIcon", "Add a connector")
        self.act_edit = a("&Edit connector…", self.edit_connector, "Ctrl+E", "SP_FileDialogDetailedView",
                          "Edit the selected connector")
        self.act_duplicate = a("D&uplicate connector…", self.duplicate_connector, "Ctrl+D", "SP_FileLinkIcon",
                               "Copy the selected connector's settings into a new one")
        self.act_delete = a("&Delete connector…", self.delete_connector, "Ctrl+Del", "SP_TrashIcon",
                            "Delete the selected connector and its keyring entry")
        self.act_test = a("&Test connection", self.test_connector, "Ctrl+T", icons.plug_icon(),
                          "Validate the selected connector against its source")
        self.act_refresh_schema = a("&Refresh schema", self.schema.refresh_current, "F5", "SP_BrowserReload",
                                    "Re-discover the selected connector and highlight drift")
        self.act_sync = a("&Sync", self.sync.start_sync, "F9", "SP_MediaPlay", "Sync the checked tables")
        self.act_resume = a("&Resume", self.sync.resume, "Shift+F9", "SP_MediaSeekForward",
                            "Resume the unfinished sync")
        self.act_cancel = a("&Cancel sync", self.sync.cancel, "Ctrl+.", "SP_MediaStop", "Cancel the running sync")
        self.act_retry = a("Retry &failed chunks", self.sync.retry_failed, "Ctrl+Shift+R", "SP_BrowserReload",
                           "Run the failed chunks again")
        self.act_verify = a("&Verify audit chain", self._verify, "Ctrl+Shift+V", icons.chain_icon(),
                            "Recompute every hash of the audit chain")
        self.act_reload = a("Reload &all", self.refresh_all, "Ctrl+R", "SP_BrowserReload",
                            "Reload connectors, history and audit from the workspace")
        self.tab_actions = []
        titles = ("Schema", "Sync", "History", "Audit", "Mapping", "KPIs", "Health", "Schedules", "Failed chunks")
        for i, (name, title) in enumerate(zip(TABS, titles)):
            act = a(f"&{title}", lambda _=False, i=i: self.tabs.setCurrentIndex(i), f"Ctrl+{i + 1}")
            self.tab_actions.append(act)

        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.act_switch)
        self.recent_menu = file_menu.addMenu("Open &recent")
        file_menu.addSeparator()
        file_menu.addAction(self.act_samples)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)
        conn_menu = bar.addMenu("&Connector")
        for act in (self.act_add, self.act_edit, self.act_duplicate, self.act_delete, None, self.act_test,
                    self.act_refresh_schema):
            conn_menu.addSeparator() if act is None else conn_menu.addAction(act)
        sync_menu = bar.addMenu("&Sync")
        for act in (self.act_sync, self.act_resume, self.act_cancel, self.act_retry):
            sync_menu.addAction(act)
        view_menu = bar.addMenu("&View")
        for act in self.tab_actions:
            view_menu.addAction(act)
        view_menu.addSeparator()
        view_menu.addAction(self.act_reload)
        view_menu.addAction(self.act_verify)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self._action("&About ESG Workbench", self._about))

        toolbar = QToolBar("Main")
        toolbar.setObjectName("mainToolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        toolbar.setMovable(False)
        for act in (self.act_add, self.act_test, self.act_refresh_schema, None, self.act_sync, self.act_resume,
                    self.act_cancel, None, self.act_verify):
            toolbar.addSeparator() if act is None else toolbar.addAction(act)
        self.addToolBar(toolbar)
        for act in (self.act_add, self.act_edit, self.act_duplicate, self.act_delete, self.act_test):
            self.connectors.toolbar.addAction(act)
            button = self.connectors.toolbar.widgetForAction(act)  # icon only: name it for screen readers
            button.setAccessibleName(act.text().replace("&", "").rstrip("…"))
            button.setToolTip(act.toolTip())
        self._update_recent_menu()
        self._update_actions()

    def _connect(self) -> None:
        self.connectors.current_changed.connect(self._connector_changed)
        self.connectors.list.doubleClicked.connect(lambda _: self.edit_connector())
        self.sync.buttons_changed.connect(self._sync_buttons)
        self.jobs.changed.connect(self._job_changed)
        self.jobs.ended.connect(self._job_ended)
        self.jobs.running_changed.connect(self._running_changed)
        self.schema.message.connect(self.show_message)
        self.schema.refreshed.connect(lambda name, drift: self.sync.refresh_status())
        self.connectors_loaded.connect(self._connectors_known)
        self.tabs.currentChanged.connect(self._tab_changed)

    # --- state ---------------------------------------------------------------------------

    def _restore_state(self) -> None:
        s = self.settings
        geometry = s.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        state = s.value("window/state")
        if state is not None:
            self.restoreState(state)
        for key, splitter in (("split/main", self.splitter), ("split/schema", self.schema.splitter),
                              ("split/sync", self.sync.splitter), ("split/history", self.history.splitter),
                              ("split/audit", self.audit.splitter)):
            value = s.value(key)
            if value is not None:
                splitter.restoreState(value)
        tab = s.value("window/tab")
        if tab in TABS:
            self.tabs.setCurrentIndex(TABS.index(tab))

    def save_state(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("window/tab", TABS[self.tabs.currentIndex()])
        for key, splitter in (("split/main", self.splitter), ("split/schema", self.schema.splitter),
                              ("split/sync", self.sync.splitter), ("split/history", self.history.splitter),
                              ("split/audit", self.audit.splitter)):
            s.setValue(key, splitter.saveState())
        if self.connectors.current_name():
            s.setValue("window/connector", self.connectors.current_name())
        s.sync()

    def recent_workspaces(self) -> list[str]:
        value = self.settings.value("recent_workspaces") or []
        return [value] if isinstance(value, str) else list(value)

    def _remember_workspace(self, url: str) -> None:
        recent = [url] + [u for u in self.recent_workspaces() if u != url]
        self.settings.setValue("recent_workspaces", recent[:MAX_RECENT])
        self.settings.setValue("last_workspace", url)
        self._update_recent_menu()

    def _update_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_workspaces()
        for i, url in enumerate(recent):
            act = self.recent_menu.addAction(f"&{i + 1}  {url}")
            act.triggered.connect(lambda _=False, u=url: self.open_workspace(u))
        self.recent_menu.setEnabled(bool(recent))

    # --- workspace -----------------------------------------------------------------------

    def choose_workspace(self) -> None:
        if self.jobs.running_count():
            self.show_message("Wait for the running syncs to finish (or cancel them) before switching workspace.")
            return
        dialog = dialogs.WorkspaceDialog(self.workspace_url or "", self)
        if dialog.exec() == dialogs.QDialog.DialogCode.Accepted:
            self.open_workspace(dialog.value())

    def open_workspace(self, url: str | None) -> None:
        if self.jobs.running_count():
            self.show_message("Wait for the running syncs to finish (or cancel them) before switching workspace.")
            return
        from esg_workbench.gui import organization_dialog as signin

        target = url or self.settings.value("last_workspace") or None
        self.workspace_label.setText(f"Opening workspace {target or '(default)'}…")

        def done(ws) -> None:
            if isinstance(ws, signin.NeedsOrganization):  # a role in several organizations: ask which
                dialog = signin.OrganizationDialog(ws, self.settings, self)
                dialog.chosen.connect(lambda org: self.pool.run(signin.open_signed_in, target, org,
                                                                on_done=done, on_error=failed, owner=self))
                dialog.rejected.connect(lambda: failed("No organization was chosen."))
                dialog.open()
                return
            self.set_workspace(ws, url=target or ws.display_url)

        def failed(message: str) -> None:
            self.workspace_label.setText("No workspace open")
            self.info.show_notice(f"Could not open the workspace {target or ''}: {message}", "error",
                                  [("Choose another…", self.choose_workspace)], topic="workspace")
            self.workspace_failed.emit(message)

        self.pool.run(signin.open_signed_in, target, on_done=done, on_error=failed, owner=self)

    def set_workspace(self, workspace, url: str | None = None) -> None:
        old = self.workspace
        self.pool.forget_results()
        self.jobs.clear()
        self.workspace = workspace
        self.workspace_url = url or workspace.display_url
        self._resume_offered = set()
        self._overviews_seen = False
        self.info.dismiss()
        if old is not None and old is not workspace:
            old.close()
        self._remember_workspace(self.workspace_url)
        from esg_workbench.gui.organization_dialog import organization_caption

        shown = workspace.display_url.replace("duckdb:///", "") + organization_caption(workspace)
        self.setWindowTitle(f"ESG Workbench — {shown}")
        self.workspace_label.setText(f"Workspace: {shown} ({'DuckDB' if workspace.is_duckdb else 'PostgreSQL'})")
        self.schema.set_workspace(workspace)
        self.sync.set_workspace(workspace)
        self.history.set_workspace(workspace)
        self.audit.set_workspace(workspace)
        self.refresh_connectors(select=self.settings.value("window/connector"))
        self._update_actions()
        self._fingerprint = None
        self.watch.start()
        self.workspace_ready.emit(workspace)
        settle_heap()  # (what opening the workspace imported and built lives as long)

    def refresh_connectors(self, select: str | None = None) -> None:
        if self.workspace is None:
            return

        workspace = self.workspace

        def load():
            # the fingerprint first: a change made while the list loads is seen by the next look
            return catalog.fingerprint(workspace), catalog.connectors_overview(workspace)

        def done(found) -> None:
            fingerprint, overviews = found
            if workspace is self.workspace:
                self._fingerprint = fingerprint
            self.connectors.set_connectors(overviews, select=select)
            self.schema.set_connectors(overviews)
            for name, job in self.jobs.jobs.items():
                if job.running:
                    self.connectors.set_syncing(name, job.percent)
            first = not self._overviews_seen
            self._overviews_seen = True
            if first:
                self._first_look(overviews)
            self._update_actions()
            self.connectors_loaded.emit(overviews)

        self.pool.run(load, on_done=done, on_error=self.show_message, owner=self)

    def _watch_workspace(self) -> None:
        if self.workspace is None or self._watching or self._closing:
            return
        self._watching = True
        workspace = self.workspace

        def done(found: catalog.WatchState) -> None:
            self._watching = False
            if workspace is not self.workspace:
                return
            if self._fingerprint is None:
                return  # the connector list has not loaded yet (it takes the first fingerprint)
            if found.connectors != self._fingerprint:
                self._fingerprint = found.connectors
                self.refresh_connectors(select=self.connectors.current_name())
                if self.tabs.currentWidget() is self.history:
                    self.history.refresh()
            # each view compares with what it last loaded itself (its own saves and
            # discoveries are not news to it)
            self.schema.catalogs_seen(found.catalogs)
            self.mapping.versions_seen(found.mappings)

        def failed(_message: str) -> None:
            self._watching = False  # (a lost server shows at the next real action)

        self.pool.run(catalog.watch_state, workspace, on_done=done, on_error=failed, owner=self)

    def refresh_all(self) -> None:
        self.refresh_connectors()
        self.history.refresh()
        self.audit.refresh()
        self.sync.refresh_status()

    def _connectors_known(self, overviews) -> None:
        """Views that show a connector follow a change (an edit, a discovery, a sync):
        the Sync tab re-reads its status; the empty-workspace notice goes once there is
        a connector."""
        if overviews and self.info.topic == "samples" and self.info.label.text().startswith("This workspace is empty"):
            self.info.dismiss()
        self.sync.refresh_status()

    def _first_look(self, overviews) -> None:
        """An empty workspace offers the sample data; an unfinished sync offers Resume."""
        if not overviews:
            self.info.show_notice(
                "This workspace is empty. Load the bundled sample data (an ERP database with energy, "
                "travel and waste tables) to see connectors, tables and a finished sync within a minute, "
                "or add a connector to your own database.", "info",
                [("Load sample data", self.load_samples), ("Add connector…", self.add_connector)], topic="samples")
            return
        unfinished = [o.name for o in overviews if o.resumable and not self.jobs.job(o.name)]
        if unfinished:
            names = ", ".join(unfinished)
            self._resume_offered.update(unfinished)
            self.info.show_notice(
                f"The last sync of {names} did not finish (the app was closed or stopped during it). "
                "Resume continues from the last landed chunk; nothing is read twice.", "warn",
                [(f"Resume {'all' if len(unfinished) > 1 else names}", lambda: self.resume_all(unfinished))],
                topic="resume")

    def resume_all(self, names: list[str]) -> None:
        from esg_workbench.sync.engine import SyncRequest

        self.info.dismiss()
        for name in names:
            if not (self.jobs.job(name) and self.jobs.job(name).running):
                self.jobs.start(self.workspace, SyncRequest(connector=name, resume=True))
        if names:
            self.connectors.select(names[0])
            self.tabs.setCurrentWidget(self.sync)

    # --- sample data -----------------------------------------------------------------------

    def load_samples(self) -> None:
        if self.workspace is None:
            return
        try:
            from esg_workbench import demo
        except ImportError:
            self.info.show_notice("The sample data is not part of this installation.", "error")
            return
        relay = MessageRelay(self)
        relay.hide()
        relay.message.connect(self.info.set_text)
        self.info.show_notice("Loading the sample data…", "info", topic="samples")
        self.act_samples.setEnabled(False)

        def done(summary: dict[str, Any]) -> None:
            relay.deleteLater()
            self.act_samples.setEnabled(True)
            rows = sum(t.get("rows_in_workspace") or 0 for t in summary.get("tables", []))
            self.info.show_notice(
                f"Sample data loaded: connector '{summary['connector']}', {len(summary.get('tables', []))} tables, "
                f"{rows:,} rows landed (sync {summary['status'].replace('_', ' ')})"
                + (", mapped and turned into KPIs: here they are." if summary.get("kpis") else
                   ". Browse them in the Schema tab."),
                "ok", topic="samples")
            if summary.get("kpis"):  # lead the analyst to what the demo produced
                self.tabs.setCurrentWidget(self.kpis)
                self.kpis.refresh()
            self.refresh_connectors(select=summary["connector"])
            self.history.refresh()
            self.audit.refresh()
            self.sample_loaded.emit(summary)

        def failed(message: str) -> None:
            relay.deleteLater()
            self.act_samples.setEnabled(True)
            self.info.show_notice(f"Could not load the sample data: {message}", "error", topic="samples")
            self.refresh_connectors()

        self.pool.run(demo.run_demo, self.workspace, relay.message.emit, on_done=done, on_error=failed, owner=self)

    # --- connectors --------------------------------------------------------------------------

    def _taken_names(self) -> set[str]:
        return set(self.connectors.names())

    def _record(self, name: str):
        """The stored record (config with the password marker) of a listed connector."""
        from esg_workbench.workspace.connectors_store import ConnectorRecord

        o = self.connectors.overview(name)
        return ConnectorRecord(o.id, o.name, o.type, o.config, status=o.status, status_message=o.status_message)

    def add_connector(self) -> ConnectorDialog | None:
        if self.workspace is None:
            return None
        from esg_workbench.sync import operations

        ws = self.workspace

        def save(name, type_, options, password):
            return operations.add_connector(ws, name, type_, options, password)

        return self._open_dialog(ConnectorDialog(self.pool, save, taken_names=self._taken_names(), parent=self))

    def edit_connector(self) -> ConnectorDialog | None:
        name = self.connectors.current_name()
        if self.workspace is None or name is None:
            return None
        if self._syncing(name):
            self.show_message(f"{name} is syncing; edit it when the sync has ended.")
            return None
        from esg_workbench.sync import operations

        ws = self.workspace
        record = operations.get_connector(ws, name)  # as stored now, not as last listed

        def save(new_name, type_, options, password):
            if password:  # a new password is tried on the source first: a refused one keeps the old
                from esg_workbench.sync import rotation

                rotation.check_password(ws, name, password, options=options)
            # refused with "changed by someone else" if another analyst saved it meanwhile
            return operations.update_connector(ws, name, options, password,
                                               new_name=new_name if new_name != name else None,
                                               expected_updated_at=record.updated_at)

        return self._open_dialog(ConnectorDialog(self.pool, save, record=record,
                                                 taken_names=self._taken_names(), parent=self))

    def duplicate_connector(self) -> ConnectorDialog | None:
        name = self.connectors.current_name()
        if self.workspace is None or name is None:
            return None
        from esg_workbench.sync import operations

        ws = self.workspace

        def save(new_name, type_, options, password):
            return operations.add_connector(ws, new_name, type_, options, password)

        return self._open_dialog(ConnectorDialog(self.pool, save, record=self._record(name), duplicate=True,
                                                 taken_names=self._taken_names(), parent=self))

    def _open_dialog(self, dialog: ConnectorDialog) -> ConnectorDialog:
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def finished(code: int) -> None:
            record = getattr(dialog, "saved_record", None)
            if code and record is not None:
                self.show_message(f"Saved connector '{record.name}'.")
                self.refresh_connectors(select=record.name)
                self.audit.refresh()

        dialog.finished.connect(finished)
        dialog.open()
        return dialog

    def delete_connector(self) -> None:
        name = self.connectors.current_name()
        if self.workspace is None or name is None:
            return
        if self._syncing(name):
            self.show_message(f"{name} is syncing; cancel the sync before deleting it.")
            return
        if not dialogs.ask(self, "Delete connector",
                           f"Delete the connector '{name}'?\n\nIts settings, schema cache, checkpoints and keyring "
                           "entry are removed. Landed data, sync history and the audit trail stay.",
                           yes="Delete", no="Keep"):
            return
        from esg_workbench.sync import operations

        def done(_):
            self.show_message(f"Deleted connector '{name}'.")
            self.refresh_connectors()
            self.audit.refresh()

        self.pool.run(operations.remove_connector, self.workspace, name, on_done=done,
                      on_error=lambda m: dialogs.show_error(self, "Delete connector", m), owner=self)

    def test_connector(self) -> None:
        name = self.connectors.current_name()
        if self.workspace is None or name is None:
            return
        from esg_workbench.sync import operations

        self.show_message(f"Testing {name}…")

        def done(message: str) -> None:
            self.info.show_notice(f"{name}: {message}", "ok", topic="test")
            self.show_message(f"{name}: {message}")
            self.refresh_connectors()

        def failed(message: str) -> None:
            self.info.show_notice(f"{name}: {message}", "error", [("Edit connector…", self.edit_connector)],
                                  topic="test")
            self.show_message(f"{name}: {message.splitlines()[0]}")
            self.refresh_connectors()

        self.pool.run(operations.validate_connector, self.workspace, name, on_done=done, on_error=failed, owner=self)

    # --- reactions ----------------------------------------------------------------------------

    def _syncing(self, name: str | None) -> bool:
        job = self.jobs.job(name)
        return bool(job and job.running)

    def _connector_changed(self, name: str | None) -> None:
        self.sync.set_connector(name)
        self.history.set_connector(name)
        self.schema.show_connector(name)
        self._update_actions()

    def _update_actions(self) -> None:
        has_ws = self.workspace is not None
        name = self.connectors.current_name()
        selected = has_ws and name is not None
        busy = self._syncing(name)
        self.act_add.setEnabled(has_ws)
        self.act_samples.setEnabled(has_ws)
        self.act_edit.setEnabled(selected and not busy)
        self.act_duplicate.setEnabled(selected)
        self.act_delete.setEnabled(selected and not busy)
        self.act_test.setEnabled(selected)
        self.act_refresh_schema.setEnabled(selected)
        self.act_verify.setEnabled(has_ws)
        self.act_reload.setEnabled(has_ws)

    def _sync_buttons(self, b) -> None:
        self.act_sync.setEnabled(b.sync)
        self.act_resume.setEnabled(b.resume)
        self.act_cancel.setEnabled(b.cancel)
        self.act_retry.setEnabled(b.retry)

    def _job_changed(self, job) -> None:
        self.connectors.set_syncing(job.connector, job.percent if job.running else None)
        self._update_actions()

    def _job_ended(self, job) -> None:
        self.connectors.set_syncing(job.connector, None)
        text = job.log[-1].split("  ", 1)[-1] if job.log else f"Sync of {job.connector} ended."
        self.show_message(f"{job.connector}: {text}")
        if not self._closing:
            self.refresh_connectors()
            self.history.refresh()
            self.audit.refresh()
            if job.result is not None and job.result.mapped:
                # the run mapped its new rows and recomputed the KPIs: the values shown are gone
                self.kpis.refresh()

    def _running_changed(self, count: int) -> None:
        self.syncs_label.setText(f"{count} sync{'s' if count != 1 else ''} running" if count else "")
        self.act_switch.setEnabled(count == 0)
        self._update_actions()
        if count == 0 and self._closing:
            QTimer.singleShot(0, self.close)

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self.history:
            self.history.refresh()
        elif self.tabs.widget(index) is self.audit:
            self.audit.refresh()

    def _verify(self) -> None:
        self.tabs.setCurrentWidget(self.audit)
        self.audit.verify()

    def show_message(self, text: str) -> None:
        self.statusBar().showMessage(text.replace("\n", "  "), 15000)
        self.notice.emit(text)

    def _about(self) -> None:
        from esg_workbench.gui.about_dialog import AboutDialog

        dialog = AboutDialog(self, self.workspace, self.settings)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    # --- closing ------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        running = self.jobs.running()
        if running and not self._closing:
            names = ", ".join(j.connector for j in running)
            if not dialogs.ask(self, "Syncs are running",
                               f"{len(running)} sync(s) are running ({names}).\n\nCancel them and quit? "
                               "Each stops after the chunk being written; the next start offers to resume.",
                               yes="Cancel syncs and quit", no="Keep running"):
                event.ignore()
                return
            self._closing = True
            self.jobs.cancel_all()
            self.show_message(f"Cancelling {len(running)} sync(s)… the window closes when they have stopped.")
            self.setEnabled(False)
            event.ignore()
            return
        if running:  # still cancelling
            event.ignore()
            return
        self.scheduler.stop()
        self.watch.stop()
        self.save_state()
        self.pool.shutdown()
        if self.workspace is not None:
            self.workspace.close()
        event.accept()
