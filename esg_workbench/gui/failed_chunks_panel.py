"""The Failed chunks tab: every chunk whose reads kept failing, as a review queue (table,
range, error, attempts, first and last failure, review), with Retry selected (through the
Sync tab, with progress and Cancel), Ignore selected with a reason, Reopen, and a filter
for the unreviewed ones. The logic is sync/review.py's; this is its view."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import icons
from esg_workbench.gui.data_grid import record_table

COLUMNS = ("Id", "Connector", "Table", "Range", "Attempts", "First failure", "Last failure", "Review", "Error")
ID, CONNECTOR, TABLE, RANGE, ATTEMPTS, FIRST, LAST, REVIEW, ERROR = range(len(COLUMNS))
CHUNK = Qt.ItemDataRole.UserRole + 1


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else "before this was recorded"


def review_text(chunk) -> str:
    if chunk.ignored:
        return f"ignored: {chunk.review_reason}"
    return "unreviewed" if chunk.retryable else "unreviewed (its plan was replaced: sync the table again)"


class IgnoreDialog(QDialog):
    """Asks why the chosen chunks may stay missing; OK only with a reason."""

    def __init__(self, count: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Ignore failed chunks")
        self.text = QLabel(f"Why may the rows of {'these ' + str(count) + ' chunks' if count != 1 else 'this chunk'} "
                           "stay missing? The reason goes into the audit trail; the KPIs they feed stay flagged "
                           "incomplete until the rows land.")
        self.text.setWordWrap(True)
        self.reason = QPlainTextEdit()
        self.reason.setObjectName("ignoreReason")
        self.reason.setPlaceholderText("e.g. the site was closed that month; no readings exist")
        self.reason.setMaximumHeight(90)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Ignore")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(self.reason)
        layout.addWidget(self.buttons)
        self.reason.textChanged.connect(self._update)
        self._update()

    @property
    def ok_button(self):
        return self.buttons.button(QDialogButtonBox.StandardButton.Ok)

    def _update(self) -> None:
        self.ok_button.setEnabled(bool(self.reason.toPlainText().strip()))


class FailedChunksPanel(QWidget):
    loaded = Signal()
    message = Signal(str)
    retry_requested = Signal(list)  # [SyncRequest]: the window starts them as syncs
    changed = Signal()  # chunks were ignored or reopened

    def __init__(self, pool, parent: QWidget | None = None):
        super().__init__(parent)
        self.pool = pool
        self.workspace = None
        self.chunks: list[Any] = []
        self._request = 0

        self.unreviewed = QCheckBox("Only &unreviewed")
        self.unreviewed.setObjectName("onlyUnreviewed")
        self.retry_button = QPushButton(icons.standard("SP_BrowserReload"), "&Retry selected")
        self.retry_button.setObjectName("retryChunks")
        self.ignore_button = QPushButton(icons.standard("SP_DialogNoButton"), "&Ignore selected…")
        self.ignore_button.setObjectName("ignoreChunks")
        self.reopen_button = QPushButton("Re&open")
        self.reopen_button.setObjectName("reopenChunks")
        self.reopen_button.setToolTip("Take back an ignore: the chunks are unreviewed again")
        self.refresh_button = QPushButton(icons.standard("SP_BrowserReload"), "Re&fresh")
        bar = QHBoxLayout()
        for w in (self.unreviewed, self.retry_button, self.ignore_button, self.reopen_button):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.refresh_button)

        self.table = record_table("failedChunksTable", COLUMNS, QAbstractItemView.SelectionMode.ExtendedSelection)
        self.details = QLabel()
        self.details.setObjectName("chunkDetails")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.PlainText)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = QLabel()
        self.status.setObjectName("failedChunksStatus")
        self.status.setStyleSheet("color: #666;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.details)
        layout.addWidget(self.status)

        self.unreviewed.toggled.connect(lambda _on: self.refresh())
        self.refresh_button.clicked.connect(self.refresh)
        self.retry_button.clicked.connect(self.retry_selected)
        self.ignore_button.clicked.connect(lambda: self.ignore_selected())
        self.reopen_button.clicked.connect(self.reopen_selected)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self._update_buttons()

    # --- data ------------------------------------------------------------------------------

    def set_workspace(self, workspace) -> None:
        self.workspace = workspace
        self._fill([])
        self.refresh()

    def refresh(self) -> None:
        if self.workspace is None:
            return
        from esg_workbench.sync import review

        self._request += 1
        request = self._request
        only = self.unreviewed.isChecked()

        def done(chunks: list[Any]) -> None:
            if request == self._request:
                self._fill(chunks)
                self.loaded.emit()

        def failed(message: str) -> None:
            self.status.setText(message)
            self.loaded.emit()

        self.pool.run(lambda ws: review.list_failed(ws, unreviewed_only=only), self.workspace,
                      on_done=done, on_error=failed, owner=self)

    def _fill(self, chunks: list[Any]) -> None:
        selected = set(self.selected_ids())
        self.chunks = list(chunks)
        self.table.setRowCount(len(chunks))
        for row, c in enumerate(chunks):
            cells = [str(c.id), c.connector, c.stream, c.range_text, str(c.attempts), _when(c.first_failed_at),
                     _when(c.last_failed_at), review_text(c), (c.error or "").splitlines()[0] if c.error else ""]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == ID:
                    item.setData(CHUNK, c)
                if column == ERROR:
                    item.setToolTip(c.error or "")
                if column == REVIEW and c.ignored:
                    item.setIcon(icons.dot_icon("warn"))
                    item.setToolTip(f"Ignored by {c.reviewed_by} at {_when(c.reviewed_at)}: {c.review_reason}")
                self.table.setItem(row, column, item)
        self.table.clearSelection()
        for row, c in enumerate(chunks):
            if c.id in selected:
                self.table.selectRow(row)
        ignored = sum(1 for c in chunks if c.ignored)
        self.status.setText(
            (f"{len(chunks)} failed chunk{'s' if len(chunks) != 1 else ''}"
             + ("" if self.unreviewed.isChecked() else f", {len(chunks) - ignored} unreviewed, {ignored} ignored")
             + ". An ignored chunk's rows stay missing, and its KPIs flagged incomplete, until it lands.")
            if chunks else ("No unreviewed failed chunks." if self.unreviewed.isChecked() else
                            "No failed chunks: every planned chunk landed or was replaced by a later sync."))
        self._update_buttons()

    # --- selection ---------------------------------------------------------------------------

    def selected_chunks(self) -> list[Any]:
        rows = sorted({i.row() for i in self.table.selectedItems()})
        return [self.table.item(r, ID).data(CHUNK) for r in rows if self.table.item(r, ID) is not None]

    def selected_ids(self) -> list[int]:
        return [c.id for c in self.selected_chunks()]

    def select_ids(self, ids: list[int]) -> None:
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row, c in enumerate(self.chunks):
            if c.id in ids:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    def _update_buttons(self) -> None:
        chosen = self.selected_chunks()
        has = self.workspace is not None and bool(chosen)
        self.retry_button.setEnabled(has and all(c.retryable for c in chosen))
        self.ignore_button.setEnabled(has)
        self.reopen_button.setEnabled(has and any(c.ignored for c in chosen))
        if len(chosen) == 1:
            c = chosen[0]
            text = f"Chunk {c.id} of {c.stream} ({c.connector}), {c.range_text}: {c.error or 'no error recorded'}"
            if c.ignored:
                text += f"\nIgnored by {c.reviewed_by} at {_when(c.reviewed_at)}: {c.review_reason}"
            self.details.setText(text)
        else:
            self.details.setText(f"{len(chosen)} chunks selected." if chosen else "")

    # --- actions -----------------------------------------------------------------------------

    def _run(self, fn, *args, done_text, on_done=None) -> None:
        def done(result) -> None:
            if on_done is not None:
                on_done(result)
            self.message.emit(done_text(result) if callable(done_text) else done_text)
            self.refresh()
            self.changed.emit()

        def failed(message: str) -> None:
            self.message.emit(message.split("\nWhat to do:")[0])
            self.status.setText(message)

        self.pool.run(fn, self.workspace, *args, on_done=done, on_error=failed, owner=self)

    def retry_selected(self) -> None:
        ids = self.selected_ids()
        if self.workspace is None or not ids:
            return
        from esg_workbench.sync import review

        self._run(review.retry_requests, ids, on_done=self.retry_requested.emit,
                  done_text=f"Retrying {len(ids)} chunk{'s' if len(ids) != 1 else ''}: see the Sync tab.")

    def ignore_selected(self, reason: str | None = None) -> IgnoreDialog | None:
        """With a reason: ignore at once. Without: ask for one (the dialog is returned)."""
        ids = self.selected_ids()
        if self.workspace is None or not ids:
            return None
        from esg_workbench.sync import review

        if reason is not None:
            self._run(review.ignore, ids, reason, done_text=lambda chunks: f"Ignored {len(chunks)} chunk"
                      f"{'s' if len(chunks) != 1 else ''}; recorded in the audit trail.")
            return None
        dialog = IgnoreDialog(len(ids), self)
        dialog.accepted.connect(lambda: self.ignore_selected(dialog.reason.toPlainText()))
        dialog.open()
        return dialog

    def reopen_selected(self) -> None:
        ids = [c.id for c in self.selected_chunks() if c.ignored]
        if self.workspace is None or not ids:
            return
        from esg_workbench.sync import review

        self._run(review.reopen, ids, done_text=f"{len(ids)} chunk{'s' if len(ids) != 1 else ''} unreviewed again.")


def install_failed_chunks_tab(window) -> FailedChunksPanel:
    """Add the Failed chunks tab to a MainWindow: loaded when shown and after every sync;
    a retry starts through the window's sync jobs (the Sync tab shows it)."""
    panel = FailedChunksPanel(window.pool)
    window.failed_chunks = panel
    window.tabs.addTab(panel, icons.standard("SP_MessageBoxWarning"), "Failed chunks")

    def refresh_if_shown() -> None:
        if window.tabs.currentWidget() is panel:
            panel.refresh()

    def start(requests: list) -> None:
        for request in requests:
            try:
                window.jobs.start(window.workspace, request)
            except RuntimeError:  # that connector is syncing already
                panel.message.emit(f"'{request.connector}' is syncing already; retry its chunks when it ends.")

    window.workspace_ready.connect(panel.set_workspace)
    window.tabs.currentChanged.connect(lambda _i: refresh_if_shown())
    window.jobs.ended.connect(lambda _job: refresh_if_shown())
    panel.retry_requested.connect(start)
    panel.message.connect(window.show_message)
    if getattr(window, "workspace", None) is not None:
        panel.set_workspace(window.workspace)
    return panel
