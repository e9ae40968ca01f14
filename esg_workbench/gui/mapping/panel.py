"""The Mapping tab: the canvas, the transform editor, the validation panel and the
preview grid, with the mapping's commands (undo/redo, auto-map, add table, zoom, save a
version, version history, apply).

Loading, saving, previewing and applying run in the WorkerPool, never on the GUI thread;
their errors arrive as readable messages (EsgError.describe()) in the info bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QLabel,
    QMenu,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import dialogs, icons
from esg_workbench.gui.mapping import items as it
from esg_workbench.gui.mapping import swap, tasks
from esg_workbench.gui.mapping.dialogs import AddTableDialog, AutoMapDialog, HistoryDialog, NewMappingDialog, SaveDialog
from esg_workbench.gui.mapping.document import MappingDocument
from esg_workbench.gui.mapping.freshness import Freshness
from esg_workbench.gui.mapping.preview import PreviewPanel
from esg_workbench.gui.mapping.scene import MappingScene
from esg_workbench.gui.mapping.table_editor import TableEditor
from esg_workbench.gui.mapping.transform_editor import TransformEditor
from esg_workbench.gui.mapping.validation_panel import ValidationPanel
from esg_workbench.gui.mapping.view import MappingView
from esg_workbench.mapping.model import Mapping


class Relay(QObject):
    """Carries a worker's plain progress callback to the GUI thread (a queued signal)."""

    message = Signal(str)


class MappingPanel(QWidget):
    mappings_listed = Signal(list)  # [dict] from store.list_mappings
    loaded = Signal(object)  # the Mapping opened on the canvas
    saved = Signal(object)  # the stored Mapping (with its version)
    applied = Signal(dict)  # what apply + aggregate did
    apply_failed = Signal(str)
    message = Signal(str)  # for the main window's status bar
    kpis_requested = Signal()  # "Show KPIs" after an apply
    exported = Signal(str)  # the file written
    imported = Signal(str)  # the mapping saved from a file

    def __init__(self, pool, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("mappingPanel")
        self.pool = pool
        self.workspace = None
        self.listed: list[dict[str, Any]] = []
        self.versions: list[dict[str, Any]] = []
        self.applying = False
        self.settings = None  # the window's QSettings (remembered folders), set by install_mapping_tabs
        self._selecting_problem = False
        self.document = MappingDocument(parent=self)
        self.freshness = Freshness(self)  # newer versions saved in another window or process
        self.scene = MappingScene(self.document, self)
        self.view = MappingView(self.scene)
        self.editor = TransformEditor(self.document)
        self.table_editor = TableEditor(self.document)
        self.inspector = QStackedWidget()  # the selected edge's transforms, or the selected table's settings
        self.inspector.addWidget(self.editor)
        self.inspector.addWidget(self.table_editor)
        self.inspector.setMinimumWidth(300)
        self.validation = ValidationPanel()
        self.preview = PreviewPanel(pool, self.document)
        self.info = dialogs.InfoBar()
        self.hint = QLabel()
        self.hint.setObjectName("canvasHint")
        self.hint.setStyleSheet("color: #455a64; padding: 1px 4px;")
        self.hint.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens the window
        self.hint.setText("Drag a source column onto an ESG field, or select a column (↑/↓) and press Enter to "
                          "pick its field. Click an edge to edit its transforms. Ctrl+wheel zooms, middle button "
                          "(or Space + drag) pans, Delete removes the selection.")
        self.map_menu: QMenu | None = None  # the field menu of Enter on a column

        self.combo = QComboBox()
        self.combo.setObjectName("mappingCombo")
        self.combo.setMinimumWidth(170)
        self.combo.setToolTip("The mapping on the canvas (newest saved version)")
        self._build_actions()

        self.bottom = QTabWidget()
        self.bottom.setDocumentMode(True)
        self.bottom.addTab(self.validation, icons.standard("SP_MessageBoxWarning"), "Problems")
        self.bottom.addTab(self.preview, icons.table_icon(), "Preview")
        self.top_split = QSplitter(Qt.Orientation.Horizontal)
        self.top_split.addWidget(self.view)
        self.top_split.addWidget(self.inspector)
        self.top_split.setStretchFactor(0, 4)
        self.top_split.setStretchFactor(1, 1)
        self.top_split.setSizes([900, 330])
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("mappingSplitter")
        self.splitter.addWidget(self.top_split)
        self.splitter.addWidget(self.bottom)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([520, 200])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(4)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.info)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.hint)

        self.swap_timer = QTimer(self)  # unsaved edits go to a swap file (crash recovery)
        self.swap_timer.setSingleShot(True)
        self.swap_timer.setInterval(800)
        self.swap_timer.timeout.connect(self._keep_swap)
        self.document.undo_stack.indexChanged.connect(self._stack_changed)

        self.combo.activated.connect(self._combo_chosen)
        self.scene.hint.connect(self._show_hint)
        self.scene.selectionChanged.connect(self._selection_changed)
        self.scene.current_table_changed.connect(self.preview.set_table)
        self.scene.edge_activated.connect(self._edge_activated)
        self.scene.map_requested.connect(self.show_map_menu)
        self.validation.problem_activated.connect(self.select_problem)
        self.validation.counts_changed.connect(self._counts)
        self.document.problems_changed.connect(self._problems)
        self.document.modified_changed.connect(self._modified_changed)
        self.document.reset.connect(self._document_reset)
        self.view.zoom_changed.connect(self._zoom_changed)
        self.editor.edge_deleted.connect(self.view.setFocus)
        self._update_actions()

    def _undo_text(self, text: str) -> None:
        self.act_undo.setToolTip(f"Undo {text} ({self.act_undo.shortcut().toString()})" if text else "Undo")

    def _redo_text(self, text: str) -> None:
        self.act_redo.setToolTip(f"Redo {text} ({self.act_redo.shortcut().toString()})" if text else "Redo")

    def _modified_changed(self, modified: bool) -> None:
        self._update_actions()

    def _zoom_changed(self, zoom: float) -> None:
        self.zoom_label.setText(f"{zoom * 100:.0f} %")

    # --- actions --------------------------------------------------------------------------

    def _action(self, text: str, slot: Callable, shortcut=None, icon: str | None = None, tip: str = "",
                name: str = "") -> QAction:
        action = QAction(text, self)
        if icon:
            action.setIcon(icons.standard(icon))
        if shortcut is not None:
            keys = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        if tip:
            action.setToolTip(f"{tip} ({action.shortcut().toString()})" if shortcut is not None else tip)
        if name:
            action.setObjectName(name)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        a = self._action
        stack = self.document.undo_stack
        self.act_new = a("New…", self.new_mapping, None, "SP_FileIcon", "Start a new mapping for a connector",
                         "newMapping")
        # fixed texts (the toolbar keeps its width); what would be undone is in the tooltip
        self.act_undo = a("Undo", stack.undo, None, "SP_ArrowBack", "Undo", "undo")
        self.act_undo.setShortcut(QKeySequence.StandardKey.Undo)
        self.act_redo = a("Redo", stack.redo, None, "SP_ArrowForward", "Redo", "redo")
        self.act_redo.setShortcuts([QKeySequence.StandardKey.Redo, QKeySequence("Ctrl+Y")])
        for act in (self.act_undo, self.act_redo):
            act.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            act.setEnabled(False)
        stack.canUndoChanged.connect(self.act_undo.setEnabled)
        stack.canRedoChanged.connect(self.act_redo.setEnabled)
        stack.undoTextChanged.connect(self._undo_text)
        stack.redoTextChanged.connect(self._redo_text)
        self.act_add_table = a("Add table…", self.add_table, None, "SP_FileDialogNewFolder",
                               "Map another landed table onto an ESG entity", "addTable")
        self.act_automap = a("Auto-map", self.auto_map, "Ctrl+M", "SP_DialogYesButton",
                             "Propose edges by name and type similarity (selected table, or all)", "autoMap")
        self.act_delete = a("Delete", self.delete_selected, None, "SP_TrashIcon",
                            "Delete the selected edges or table mappings (Delete key on the canvas)", "deleteSelected")
        self.act_zoom_in = a("Zoom in", self.view.zoom_in, ["Ctrl++", "Ctrl+="], None, "Zoom in", "zoomIn")
        self.act_zoom_out = a("Zoom out", self.view.zoom_out, "Ctrl+-", None, "Zoom out", "zoomOut")
        self.act_fit = a("Fit", self.view.fit, "Ctrl+0", None, "Fit the whole mapping in view", "zoomFit")
        self.act_save = a("Save…", self.save, "Ctrl+S", "SP_DialogSaveButton",
                          "Save the mapping as a new version (author, time, audit entry)", "saveMapping")
        self.act_history = a("History…", self.show_history, None, "SP_FileDialogContentsView",
                             "Saved versions of this mapping", "mappingHistory")
        self.act_export = a("Export…", self.export_file, None, "SP_DialogSaveButton",
                            "Write the saved mapping to a file (to share it or keep it in version control)",
                            "exportMapping")
        self.act_import = a("Import…", self.import_file, None, "SP_DialogOpenButton",
                            "Read a mapping file and save it as a new version", "importMapping")
        self.act_apply = a("Apply", self.apply, "Ctrl+Return", "SP_MediaPlay",
                           "Map the landed rows with the saved mapping and recompute the KPIs", "applyMapping")
        self.act_sites = a("Sites…", self.show_sites, None, "SP_DirHomeIcon",
                           "Sites and their countries: the region emission factors are chosen by", "siteLocations")
        self.act_instruments = a("Instruments…", self.show_instruments, None, None,
                                 "Contractual instruments (GOs, RECs, PPAs): enter one, see what each covered",
                                 "instruments")
        self.act_settings = a("Mapping settings…", self.show_settings, None, None,
                              "Business keys and duplicates, fallback region, estimation of gaps", "mappingSettings")
        self.zoom_label = QLabel("100 %")
        self.zoom_label.setMinimumWidth(44)
        self.zoom_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

        bar = QToolBar("Mapping")
        bar.setObjectName("mappingToolbar")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.combo.setAccessibleName("Mapping")
        bar.addWidget(self.combo)
        bar.addAction(self.act_new)
        bar.addSeparator()
        bar.addAction(self.act_undo)
        bar.addAction(self.act_redo)
        bar.addSeparator()
        bar.addAction(self.act_add_table)
        bar.addAction(self.act_automap)
        bar.addAction(self.act_delete)
        bar.addSeparator()
        for act, text in ((self.act_zoom_out, "−"), (self.act_zoom_in, "+")):
            button = QToolButton()
            button.setDefaultAction(act)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setText(text)
            button.setAutoRaise(True)
            if act is self.act_zoom_in:
                bar.addWidget(self.zoom_label)
            bar.addWidget(button)
        bar.addAction(self.act_fit)
        bar.addSeparator()
        bar.addAction(self.act_save)
        bar.addAction(self.act_apply)
        # the less frequent file actions share one labelled menu button, so that Save and
        # Apply keep their labels at 1280 px (the smallest supported width)
        more = QToolButton()
        more.setObjectName("mappingMore")
        more.setText("Versions && files")
        more.setAccessibleName("Versions and files")
        more.setToolTip("History of saved versions, export to a file, import from a file")
        more.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        more.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        more.setAutoRaise(True)
        menu = QMenu(more)
        for act in (self.act_history, self.act_export, self.act_import):
            menu.addAction(act)
        more.setMenu(menu)
        bar.addWidget(more)
        # undo, redo and delete as icons (their names are in the tooltips and for screen readers)
        bar.addSeparator()
        bar.addAction(self.act_sites)
        for act in (self.act_undo, self.act_redo, self.act_delete, self.act_new, self.act_sites):
            button = bar.widgetForAction(act)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
            button.setAccessibleName(act.text().rstrip("…"))
        # the methodology's other dialogs are on the Sites button's arrow: a button of their
        # own would push the toolbar past 1280 px
        sites = bar.widgetForAction(self.act_sites)
        method_menu = QMenu(sites)
        method_menu.setObjectName("methodologyMenu")
        for act in (self.act_sites, self.act_instruments, self.act_settings):
            method_menu.addAction(act)
        sites.setMenu(method_menu)
        sites.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.toolbar = bar

    def _update_actions(self) -> None:
        has_ws = self.workspace is not None
        mapping = self.document.mapping
        has = mapping is not None
        self.act_new.setEnabled(has_ws)
        self.act_sites.setEnabled(has_ws)
        self.act_instruments.setEnabled(has_ws)
        self.act_settings.setEnabled(has_ws and has)
        self.act_add_table.setEnabled(has)
        self.act_automap.setEnabled(has and bool(mapping.tables))
        self.act_save.setEnabled(has and self.document.modified)
        self.act_history.setEnabled(has and mapping.version is not None)
        self.act_export.setEnabled(has and mapping.version is not None)
        self.act_import.setEnabled(has_ws)
        self.act_apply.setEnabled(has and not self.applying and bool(mapping.tables))
        self.act_delete.setEnabled(has and bool(self.scene.selectedItems()))
        self._update_combo_text()

    # --- workspace and loading ------------------------------------------------------------------

    def set_workspace(self, workspace) -> None:
        if self.swap_timer.isActive():  # the last edits on the old workspace
            self.swap_timer.stop()
            self._keep_swap()
        self.workspace = workspace
        self.preview.set_workspace(workspace)
        self.document.set_mapping(None)
        self.info.dismiss()
        self.reload()

    def reload(self, select: str | None = None) -> None:
        """List the workspace's mappings and open `select` (or the one shown, or the first)."""
        if self.workspace is None:
            return
        current = select or (self.document.mapping.name if self.document.mapping else None)

        def done(rows: list[dict[str, Any]]) -> None:
            self.listed = rows
            self._fill_combo()
            self.mappings_listed.emit(rows)
            names = [r["name"] for r in rows]
            if self.document.modified and self.document.mapping and self.document.mapping.name == current:
                return  # keep the unsaved work on the canvas
            if current in names:
                self.open_mapping(current)
            elif names:
                self.open_mapping(names[0])
            else:
                self.document.set_mapping(None)
                self._update_actions()

        self.pool.run(tasks.list_mappings, self.workspace, on_done=done, on_error=self._error, owner=self)

    def _fill_combo(self) -> None:
        self.combo.blockSignals(True)
        self.combo.clear()
        for r in self.listed:
            self.combo.addItem(f"{r['name']}  (v{r['version']})", r["name"])
        m = self.document.mapping
        if m is not None and self.combo.findData(m.name) < 0:
            self.combo.addItem(m.name, m.name)
        if m is not None:
            self.combo.setCurrentIndex(self.combo.findData(m.name))
        self.combo.blockSignals(False)
        self._update_combo_text()

    def _update_combo_text(self) -> None:
        m = self.document.mapping
        if m is None:
            return
        i = self.combo.findData(m.name)
        if i >= 0:
            text = f"{m.name}  ({'v' + str(m.version) if m.version else 'not saved'})"
            newest = next((r["version"] for r in self.listed if r["name"] == m.name), None)
            if m.version and newest and m.version != newest:
                text += f" of v{newest}"
            self.combo.setItemText(i, text + ("  •" if self.document.modified else ""))

    def _combo_chosen(self, index: int) -> None:
        name = self.combo.itemData(index)
        if self.document.mapping is not None and name == self.document.mapping.name:
            return
        if not self._may_discard():
            self._fill_combo()
            return
        self.open_mapping(name)

    def _may_discard(self) -> bool:
        if not self.document.modified:
            return True
        name = self.document.mapping.name
        if not dialogs.ask(self, "Unsaved changes", f"The mapping '{name}' has unsaved changes. Discard them?",
                           yes="Discard", no="Keep editing"):
            return False
        self.swap_timer.stop()
        if self.workspace is not None:
            swap.remove(self.workspace, name)
        return True

    # --- crash recovery ---------------------------------------------------------------------------

    def _stack_changed(self, _index: int) -> None:
        self.swap_timer.start()

    def _keep_swap(self) -> None:
        m = self.document.mapping
        if self.workspace is None or m is None:
            return
        try:
            if self.document.modified:  # removed on save and discard (an undo back to the saved state
                swap.write(self.workspace, m)  # leaves a copy equal to it, dropped when next opened)
        except OSError as exc:  # recovery is a convenience: never in the way of editing
            self.hint.setText(f"Could not keep a recovery copy of the unsaved edits ({exc}).")

    def _offer_recovery(self, opened: Mapping) -> None:
        kept = swap.read(self.workspace, opened.name)
        if kept is None or kept["base_version"] != opened.version:
            return
        restored: Mapping = kept["mapping"]
        restored.version, restored.author, restored.created_at, restored.mapping_id = \
            opened.version, opened.author, opened.created_at, opened.mapping_id
        restored.catalog_version = opened.catalog_version
        if restored.definition_hash() == opened.definition_hash():
            swap.remove(self.workspace, opened.name)
            return

        def restore() -> None:
            if self.document.mapping is opened:
                self.document.set_mapping(restored, self.document.context, modified=True)
                self._fill_combo()
                self.info.show_notice(f"Restored the unsaved edits of '{opened.name}'. Save them to keep them.",
                                      "ok", topic="recovery")

        def discard() -> None:
            swap.remove(self.workspace, opened.name)
            self.info.dismiss()

        self.info.show_notice(
            f"'{opened.name}' has unsaved edits from an earlier session (kept {kept['kept_at'].replace('T', ' ')}, "
            f"on top of v{opened.version}). Restore them?", "warn",
            [("Restore", restore), ("Discard", discard)], topic="recovery")

    def open_mapping(self, name: str, version: int | None = None) -> None:
        if self.workspace is None:
            return
        self.hint.setText(f"Opening {name}{f' v{version}' if version else ''}…")

        def done(opened: tasks.Opened) -> None:
            self.versions = opened.history
            newest = opened.history[0]["version"] if opened.history else None
            self.document.set_mapping(opened.mapping, opened.context,
                                      modified=version is not None and version != newest)
            if version is None:
                self._offer_recovery(opened.mapping)
            self._fill_combo()
            self._update_actions()
            self.hint.setText(f"{name} v{opened.mapping.version}: {len(opened.mapping.tables)} table mappings, "
                              f"{sum(len(t.edges) for t in opened.mapping.tables)} edges."
                              + (f" This is an older version; save it to make it the newest (v{newest + 1})."
                                 if version is not None and version != newest else ""))
            self.loaded.emit(opened.mapping)

        self.pool.run(tasks.open_mapping, self.workspace, name, version, on_done=done, on_error=self._error,
                      owner=self)

    def refresh_sources(self) -> None:
        """Re-read the landed tables' columns (after a sync) keeping the edits and undo stack."""
        m = self.document.mapping
        if self.workspace is None or m is None:
            return

        def done(context: tasks.SourceContext) -> None:
            old = self.document.context
            if self.document.mapping is m and (context.columns, context.keys) != (old.columns, old.keys):
                self.document.set_context(context)
                self.hint.setText("The landed tables changed: columns re-read, the mapping revalidated.")

        self.pool.run(tasks.source_context, self.workspace, m.connector, on_done=done, on_error=self._error, owner=self)

    def _document_reset(self) -> None:
        self.view.resetTransform()
        self.view.zoom_changed.emit(1.0)
        self.view.fit_width()
        m = self.document.mapping
        self.validation.set_problems(self.document.problems, self._table_names())
        self.preview.set_table(None)
        self._update_actions()
        if m is not None and not m.tables:
            self.hint.setText("Add a table mapping: a landed source table and the ESG entity it feeds.")

    def _table_names(self) -> dict[str, str]:
        m = self.document.mapping
        return {t.id: f"{t.stream} → {t.entity}" for t in m.tables} if m else {}

    # --- reactions --------------------------------------------------------------------------------

    def _problems(self, problems) -> None:
        self.validation.set_problems(problems, self._table_names())
        self._update_actions()

    def _counts(self, errors: int, warnings: int) -> None:
        text = "Problems"
        if errors or warnings:
            text += f" ({errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''})"
        self.bottom.setTabText(0, text)
        self.bottom.setTabIcon(0, icons.standard("SP_MessageBoxCritical") if errors else
                               icons.standard("SP_MessageBoxWarning") if warnings else icons.dot_icon("ok"))

    def _selection_changed(self) -> None:
        edges = self.scene.selected_edges()
        if len(edges) == 1:
            self.editor.set_edge(edges[0].table_id, edges[0].edge_id)
            if not self._selecting_problem:
                self.bottom.setCurrentWidget(self.preview)  # see what the edge makes of the landed rows
            edge = self.document.mapping.table(edges[0].table_id).edge(edges[0].edge_id)
            self.preview.set_table(edges[0].table_id)
            self.preview.highlight(edge.target if edge else None)
            self.inspector.setCurrentWidget(self.editor)
        else:
            if self.editor.edge_id is not None and not edges:
                self.editor.set_edge(None, None)
            fields = [i for i in self.scene.selectedItems() if isinstance(i, it.FieldItem)]
            self.preview.highlight(fields[0].name if fields else None)
            tables = {i.table_id for i in self.scene.selectedItems() if isinstance(i, (it.NodeItem, it.PortRow))}
            if len(tables) == 1 and not edges:
                self.table_editor.set_table(tables.pop())
                self.inspector.setCurrentWidget(self.table_editor)
            else:
                self.inspector.setCurrentWidget(self.editor)
        self._update_actions()

    def _edge_activated(self, table_id: str, edge_id: str) -> None:
        self.editor.set_edge(table_id, edge_id)
        self.inspector.setCurrentWidget(self.editor)
        self.editor.list.setFocus()

    def _show_hint(self, text: str) -> None:
        if text:
            self.hint.setText(text)

    def select_problem(self, problem) -> None:
        self._selecting_problem = True
        try:
            item = self.scene.select_problem(problem)
        finally:
            self._selecting_problem = False
        if item is not None:
            self.view.setFocus()
            self.hint.setText(f"{problem.message}  What to do: {problem.hint}")

    def _error(self, message: str) -> None:
        self.info.show_notice(message, "error", topic="mapping")
        self.hint.setText(message.splitlines()[0])
        self.message.emit(message)

    # --- commands -----------------------------------------------------------------------------------

    def undo(self) -> None:
        self.document.undo_stack.undo()

    def redo(self) -> None:
        self.document.undo_stack.redo()

    def delete_selected(self) -> None:
        self.scene.delete_selected()

    def new_mapping(self) -> NewMappingDialog | None:
        if self.workspace is None or not self._may_discard():
            return None

        def connectors(names: list[str]) -> None:
            dialog = NewMappingDialog(names, {r["name"] for r in self.listed}, self)
            dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            dialog.accepted.connect(lambda: self.create_mapping(*dialog.value()))
            dialog.open()
            self.new_dialog = dialog

        self.pool.run(tasks.connector_names, self.workspace, on_done=connectors, on_error=self._error, owner=self)
        return None

    def create_mapping(self, name: str, connector: str) -> None:
        def done(context: tasks.SourceContext) -> None:
            self.versions = []
            self.document.set_mapping(Mapping(name=name, connector=connector), context, modified=True)
            self._fill_combo()
            self._update_actions()
            self.add_table()

        self.pool.run(tasks.source_context, self.workspace, connector, on_done=done, on_error=self._error, owner=self)

    def add_table(self) -> AddTableDialog | None:
        if self.document.mapping is None:
            return None
        dialog = AddTableDialog(self.document.context.streams, self.document.catalog, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.document.add_table(*dialog.value()))
        dialog.open()
        return dialog

    def auto_map(self) -> AutoMapDialog | None:
        """Propose edges for the selected table mapping (all tables when none is selected).
        A selected edge does not choose its table: the analyst may be looking at another."""
        m = self.document.mapping
        if m is None or not m.tables:
            return None
        selected = {i.table_id for i in self.scene.selectedItems()
                    if isinstance(i, (it.NodeItem, it.PortRow, it.FieldItem)) and getattr(i, "table_id", None)}
        proposals = self.document.proposals(sorted(selected) or None)
        names = self._table_names()
        columns = {t.id: self.document.columns_of(t) or {} for t in m.tables}
        dialog = AutoMapDialog(proposals, names, columns, self,
                               none_because=self._why_no_proposals(selected or {t.id for t in m.tables}, columns))
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.scene.show_proposals(proposals)

        def accepted() -> None:
            chosen = dialog.accepted_proposals()
            self.scene.clear_proposals()
            self.document.accept_proposals(chosen)
            self.hint.setText(f"Auto-map: {len(chosen)} edge{'s' if len(chosen) != 1 else ''} added "
                              "(one undo step).")

        dialog.accepted.connect(accepted)
        dialog.rejected.connect(self.scene.clear_proposals)
        dialog.open()
        self.automap_dialog = dialog
        return dialog

    def show_map_menu(self, table_id: str, column: str) -> QMenu:
        """Mapping by keyboard: the fields this column may map onto, as a menu at the column
        (the same rules as a drop: incompatible fields are left out)."""
        targets = self.document.drop_targets(table_id, column)
        table = self.document.mapping.table(table_id)
        entity = self.document.catalog.entity(table.entity)
        menu = QMenu(self)
        menu.setObjectName("mapColumnMenu")
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        for fdef in entity.fields if entity else ():
            kind = targets.get(fdef.name)
            if kind is None:
                continue
            label = fdef.name + ("   (replaces its edge)" if kind == "replace" else "")
            act = menu.addAction(label)
            act.setData(fdef.name)
            act.triggered.connect(lambda _=False, f=fdef.name: self._map_by_keyboard(table_id, column, f))
        if menu.isEmpty():
            menu.addAction(f"No field of {table.entity} accepts {column}").setEnabled(False)
        self.map_menu = menu
        item = self.scene.column_item(table_id, column)
        at = self.view.viewport().mapToGlobal(self.view.mapFromScene(item.sceneBoundingRect().topRight())) \
            if item is not None else self.view.mapToGlobal(self.view.rect().center())
        menu.popup(at)
        return menu

    def _map_by_keyboard(self, table_id: str, column: str, field: str) -> None:
        edge = self.document.connect_column(table_id, column, field)
        if edge is not None:
            self.hint.setText(f"Mapped {column} onto {field}.")
            self.view.setFocus()

    def _why_no_proposals(self, table_ids: set[str], columns: dict[str, dict[str, str]]) -> str:
        """What Auto-map says when it has nothing to propose, table by table."""
        m, names = self.document.mapping, self._table_names()
        lines = []
        for t in (t for t in m.tables if t.id in table_ids):
            if not columns.get(t.id):
                lines.append(f"{names[t.id]}: its source table has not landed yet, so its columns are unknown "
                             "(sync the connector first).")
            elif not t.edges:
                lines.append(f"{names[t.id]}: no column name resembles a field of the entity. Drag a column onto "
                             "a field, or select the column and press Enter to pick its field.")
            else:
                lines.append(f"{names[t.id]}: every field that a column resembles is mapped already.")
        return "No proposals.\n" + "\n".join(lines)

    def save(self) -> SaveDialog | None:
        m = self.document.mapping
        if m is None:
            return None
        dialog = SaveDialog(m, len(self.document.errors), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.save_version(dialog.comment.text().strip()))
        dialog.open()
        self.save_dialog = dialog
        return dialog

    def save_version(self, comment: str = "", then: Callable[[], None] | None = None) -> None:
        m = self.document.mapping
        if m is None or self.workspace is None:
            return
        snapshot = m.copy()
        self.act_save.setEnabled(False)
        self.hint.setText(f"Saving {m.name}…")

        def done(stored: Mapping) -> None:
            if self.document.mapping is m:
                self.document.mark_saved(stored)
                self.swap_timer.stop()
                swap.remove(self.workspace, stored.name)
            self.versions.insert(0, {"version": stored.version, "author": stored.author,
                                     "created_at": stored.created_at, "comment": comment,
                                     "definition_hash": stored.definition_hash()})
            text = f"Saved {stored.name} as version {stored.version} (by {stored.author})."
            self.hint.setText(text)
            self.message.emit(text)
            self.info.dismiss()
            self.saved.emit(stored)
            self._refresh_list()
            if then is not None:
                then()

        def failed(message: str) -> None:
            self._update_actions()
            self._error(message)

        self.freshness.before_save(
            m, lambda: self.pool.run(tasks.save, self.workspace, snapshot, comment, on_done=done, on_error=failed,
                                     owner=self), cancelled=self._update_actions)

    def versions_seen(self, newest: dict[str, int]) -> None:
        """The window's watch: the newest saved version of every mapping."""
        self.freshness.seen(newest)

    def _refresh_list(self) -> None:
        def done(rows) -> None:
            self.listed = rows
            self._fill_combo()
            self._update_actions()
            self.mappings_listed.emit(rows)

        self.pool.run(tasks.list_mappings, self.workspace, on_done=done, on_error=self._error, owner=self)

    # --- files ------------------------------------------------------------------------------------

    def export_file(self, path: str | None = None) -> None:
        """Write the saved mapping (as last saved: save edits first) to a JSON file."""
        from esg_workbench.gui.dialogs import last_folder, remember_folder
        from esg_workbench.mapping import exchange

        m = self.document.mapping
        if m is None or self.workspace is None or m.version is None:
            return
        if path is None:
            suggested = str(Path(last_folder(self.settings, "mappings")) / f"{m.name}{exchange.SUFFIX}")
            path, _ = QFileDialog.getSaveFileName(self, "Export mapping", suggested, "Mapping (*.json)")
            if not path:
                return
        remember_folder(self.settings, "mappings", path)
        unsaved = " (the unsaved edits are not in it: save first to include them)" if self.document.modified else ""

        def done(written) -> None:
            text = f"Exported '{m.name}' v{m.version} to {written}{unsaved}."
            self.hint.setText(text)
            self.message.emit(text)
            self.exported.emit(str(written))

        self.pool.run(exchange.export_mapping, self.workspace, m.name, path, m.version,
                      on_done=done, on_error=self._error, owner=self)

    def import_file(self, path: str | None = None) -> None:
        """Save a mapping file as a new version, then open it."""
        from esg_workbench.gui.dialogs import last_folder, remember_folder
        from esg_workbench.mapping import exchange

        if self.workspace is None or not self._may_discard():
            return
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import mapping", last_folder(self.settings, "mappings"),
                                                  "Mapping (*.json);;All files (*)")
            if not path:
                return
        remember_folder(self.settings, "mappings", path)

        def done(saved) -> None:
            text = f"Imported '{saved.name}' as version {saved.version} from {Path(path).name}."
            self.hint.setText(text)
            self.message.emit(text)
            self.reload(select=saved.name)
            self.imported.emit(saved.name)

        self.pool.run(exchange.import_mapping, self.workspace, path, on_done=done, on_error=self._error, owner=self)

    def show_sites(self):
        """The sites and their countries (set one by hand there)."""
        from esg_workbench.gui.mapping.sites_dialog import SitesDialog

        if self.workspace is None:
            return None
        self.sites_dialog = self._open(SitesDialog(self.workspace, self.pool, self))
        return self.sites_dialog

    def show_instruments(self):
        """Contractual instruments: entered by hand or mapped, with what each covered."""
        from esg_workbench.gui.mapping.instruments_dialog import InstrumentsDialog

        if self.workspace is None:
            return None
        dialog = InstrumentsDialog(self.workspace, self.pool, self)
        dialog.changed.connect(lambda: self.hint.setText(
            "Instruments changed: apply the mapping (or recompute the KPIs) for market-based Scope 2 to follow."))
        self.instruments_dialog = self._open(dialog)
        return dialog

    def show_settings(self):
        """The mapping's methodology settings (undoable edits) and the estimation of gaps."""
        from esg_workbench.gui.mapping.settings_dialog import MappingSettingsDialog

        if self.workspace is None or self.document.mapping is None:
            return None
        dialog = MappingSettingsDialog(self.document, self.workspace, self.pool, self)
        dialog.saved.connect(lambda: self.hint.setText(
            "Mapping settings changed: save and apply the mapping for them to count."))
        self.settings_dialog = self._open(dialog)
        return dialog

    @staticmethod
    def _open(dialog):
        """A dialog of the canvas: window-modal, loading its data, deleted when closed."""
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.reload()
        dialog.open()
        return dialog

    def show_history(self) -> HistoryDialog | None:
        m = self.document.mapping
        if m is None or self.workspace is None or m.version is None:
            return None
        name = m.name

        def done(versions) -> None:
            self.versions = versions
            dialog = HistoryDialog(name, versions, m.version, self)
            dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            dialog.open_version.connect(lambda v: self._open_version(name, v))
            dialog.open()
            self.history_dialog = dialog

        self.pool.run(tasks.history, self.workspace, name, on_done=done, on_error=self._error, owner=self)
        return None

    def _open_version(self, name: str, version: int) -> None:
        if self._may_discard():
            self.open_mapping(name, version)

    def apply(self) -> None:
        """Save when needed, then apply the saved version and aggregate, in a worker."""
        m = self.document.mapping
        if m is None or self.workspace is None or self.applying:
            return
        errors = self.document.errors
        if errors:
            self.bottom.setCurrentWidget(self.validation)
            self.info.show_notice(
                f"The mapping has {len(errors)} error{'s' if len(errors) != 1 else ''}, so it cannot be applied. "
                f"First: {errors[0].message}\nWhat to do: {errors[0].hint}", "error",
                [("Show it", lambda: self.select_problem(errors[0]))], topic="apply")
            return
        if self.document.modified:
            if not dialogs.ask(self, "Apply mapping",
                               f"'{m.name}' has unsaved changes. Save them as version {(m.version or 0) + 1} "
                               "and apply that version?", yes="Save and apply", no="Cancel"):
                return
            self.save_version("saved to apply", then=self._run_apply)
            return
        self._run_apply()

    def _run_apply(self) -> None:
        m = self.document.mapping
        relay = Relay(self)
        relay.message.connect(lambda text: self.info.set_text(text))
        self.applying = True
        self._update_actions()
        from esg_workbench.core.specs import CancelToken

        # Cancel rolls the apply (or the recompute) back: staging rows and KPIs stay as they were
        self.apply_cancel = cancel = CancelToken()
        self.info.show_notice(f"Applying {m.name} v{m.version} to the landed rows…", "info",
                              [("Cancel", lambda: cancel.cancel())], topic="apply")

        def done(result: dict[str, Any]) -> None:
            relay.deleteLater()
            self.applying = False
            self._update_actions()
            text = (f"Applied {result['mapping']} v{result['version']}: {result['source_rows']:,} landed rows → "
                    f"{result['staging_rows']:,} staging rows in {result['apply_seconds']:.1f} s; "
                    f"{result['kpi_values']:,} KPI values in {result['aggregate_seconds']:.1f} s.")
            self.info.show_notice(text, "ok", [("Show KPIs", self.kpis_requested.emit)], topic="apply")
            self.message.emit(text)
            self.applied.emit(result)

        def failed(message: str) -> None:
            relay.deleteLater()
            self.applying = False
            self._update_actions()
            if cancel.cancelled:
                self.info.show_notice(f"Applying {m.name} was cancelled: the step under way was rolled back, its staging rows or KPI "
                                      "values are those of before.", "info", topic="apply")
            else:
                self.info.show_notice(f"Applying {m.name} failed: {message}", "error", topic="apply")
            self.message.emit(message)
            self.apply_failed.emit(message)

        self.pool.run(tasks.apply_and_aggregate, self.workspace, m.name, m.version, relay.message.emit, cancel,
                      on_done=done, on_error=failed, owner=self)
