"""Where each site is: the table of sites with their country (ISO 3166) and who set it,
and a row to set a site's country by hand (it wins over any mapping). Reading and writing
run in the worker pool; errors (an unknown country) are shown in the dialog."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

NO_COUNTRY = "— (flagged: no factor can be chosen)"


class SitesDialog(QDialog):
    """Non-blocking (`open()`); `changed` is emitted after a location was set or cleared,
    `loaded` when the table is filled, `failed` with the message of an error."""

    changed = Signal()
    loaded = Signal()
    failed = Signal(str)

    def __init__(self, workspace, pool, parent: QWidget | None = None):
        super().__init__(parent)
        self.workspace, self.pool = workspace, pool
        self.setWindowTitle("Sites and their countries")
        self.setObjectName("sitesDialog")
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Site", "Country", "Subdivision", "Set by"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.tree.currentItemChanged.connect(self._selected)
        self.site = QLineEdit()
        self.site.setPlaceholderText("site code")
        self.country = QLineEdit()
        self.country.setPlaceholderText("country: DE, SE, US …")
        self.subdivision = QLineEdit()
        self.subdivision.setPlaceholderText("subdivision (optional): CA")
        self.set_button = QPushButton("Set country")
        self.set_button.clicked.connect(self.set_location)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Forget the country set by hand (a mapping of sites may set it again)")
        self.clear_button.clicked.connect(self.clear_location)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setObjectName("sitesMessage")
        note = QLabel("Emission factors are chosen by the site's country (and subdivision). A country set here "
                      "wins over the mapped one. Apply the mappings again for emissions to follow.")
        note.setWordWrap(True)
        row = QHBoxLayout()
        for w in (self.site, self.country, self.subdivision, self.set_button, self.clear_button):
            row.addWidget(w)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.tree)
        layout.addLayout(row)
        layout.addWidget(self.message)
        layout.addWidget(buttons)
        self.resize(620, 420)
        self.rows: list[dict[str, Any]] = []

    # --- reading ------------------------------------------------------------------------------

    def reload(self) -> None:
        from esg_workbench.mapping import sites

        self.pool.run(sites.locations, self.workspace, on_done=self._fill, on_error=self._failed, owner=self)

    def _fill(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.tree.clear()
        for r in rows:
            item = QTreeWidgetItem([r["site"], r["country"] or NO_COUNTRY, r["subdivision"] or "",
                                    r["origin"] or ""])
            self.tree.addTopLevelItem(item)
        self.loaded.emit()

    def _selected(self, item: QTreeWidgetItem | None, _previous=None) -> None:
        if item is None:
            return
        row = self.rows[self.tree.indexOfTopLevelItem(item)]
        self.site.setText(row["site"])
        self.country.setText(row["country"] or "")
        self.subdivision.setText(row["subdivision"] or "")

    # --- writing ------------------------------------------------------------------------------

    def set_location(self) -> None:
        from esg_workbench.mapping import sites

        site, country = self.site.text().strip(), self.country.text().strip()
        if not site or not country:
            self.message.setText("Give a site and its country (two letters, e.g. DE).")
            return
        self.message.setText("Saving …")
        self.pool.run(sites.set_location, self.workspace, site, country, self.subdivision.text().strip() or None,
                      on_done=self._saved, on_error=self._failed, owner=self)

    def clear_location(self) -> None:
        from esg_workbench.mapping import sites

        site = self.site.text().strip()
        if not site:
            return
        self.pool.run(sites.clear_location, self.workspace, site, on_done=lambda _: self._saved(None),
                      on_error=self._failed, owner=self)

    def _saved(self, found: dict[str, Any] | None) -> None:
        self.message.setText(f"{found['site']} is in {found['region']}. Apply the mappings again for its emissions."
                             if found else "Cleared.")
        self.changed.emit()
        self.reload()

    def _failed(self, message: str) -> None:
        self.message.setText(message)
        self.failed.emit(message)
