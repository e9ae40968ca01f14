"""Contractual instruments (guarantees of origin, RECs, PPAs): the table of every
instrument, entered by hand or mapped, with the MWh allocated to its site's electricity
and the MWh left unused; and a form to enter one from its cancellation statement or
contract (mapping/instruments.py checks it; errors are shown in the dialog). Reading and
writing run in the worker pool."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QDate, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
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

def _usage_and_sites(workspace) -> tuple[list[dict[str, Any]], list[str]]:
    """The instruments with what they covered, and the sites to offer (worker thread)."""
    from esg_workbench.mapping import instruments, sites

    return instruments.usage(workspace), [s["site"] for s in sites.locations(workspace)]


COLUMNS = ["Site", "Type", "MWh", "From", "To", "Allocated MWh", "Unused MWh", "Tracking id", "Evidence", "Source"]


class InstrumentsDialog(QDialog):
    """Non-blocking (`open()`); `changed` after an instrument was entered or removed (the
    KPIs must be recomputed for it to count), `loaded` when the table is filled, `failed`
    with the message of an error."""

    changed = Signal()
    loaded = Signal()
    failed = Signal(str)

    def __init__(self, workspace, pool, parent: QWidget | None = None, actor: str | None = None):
        super().__init__(parent)
        from esg_workbench.mapping.instruments import kinds

        self.workspace, self.pool, self.actor = workspace, pool, actor
        self.setWindowTitle("Contractual instruments (market-based Scope 2)")
        self.setObjectName("instrumentsDialog")
        self.tree = QTreeWidget()
        self.tree.setObjectName("instrumentsTable")
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.tree.currentItemChanged.connect(lambda *_: self._update_buttons())
        # the form, in the order of a cancellation statement
        self.site = QComboBox()  # the sites the workspace knows, or one typed in
        self.site.setEditable(True)
        self.site.setObjectName("instrumentSite")
        self.site.lineEdit().setPlaceholderText("site code, as in the mapped data")
        self.kind = QComboBox()
        self.kind.setObjectName("instrumentType")
        for key, entry in kinds().items():
            self.kind.addItem(entry.get("label", key), key)
        self.mwh = QDoubleSpinBox()
        self.mwh.setObjectName("instrumentMwh")
        self.mwh.setDecimals(3)
        self.mwh.setRange(0.0, 1e9)
        self.mwh.setSuffix(" MWh")
        today = QDate.currentDate()
        self.start = QDateEdit(QDate(today.year() - 1, 1, 1))
        self.start.setObjectName("instrumentFrom")
        self.end = QDateEdit(QDate(today.year() - 1, 12, 31))
        self.end.setObjectName("instrumentTo")
        for edit in (self.start, self.end):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
        self.tracking = QLineEdit()
        self.tracking.setObjectName("instrumentTracking")
        self.tracking.setPlaceholderText("registry certificate numbers or contract id")
        self.evidence = QLineEdit()
        self.evidence.setObjectName("instrumentEvidence")
        self.evidence.setPlaceholderText("cancellation statement, contract reference")
        self.factor = QDoubleSpinBox()
        self.factor.setObjectName("instrumentFactor")
        self.factor.setDecimals(5)
        self.factor.setRange(0.0, 10.0)
        self.factor.setSuffix(" kg CO2e/kWh")
        self.factor.setToolTip("0 for renewable instruments")
        form = QFormLayout()
        for label, widget in (("Site", self.site), ("Type", self.kind), ("Electricity covered", self.mwh),
                              ("Period from", self.start), ("Period to", self.end), ("Tracking id", self.tracking),
                              ("Evidence", self.evidence), ("Emission factor", self.factor)):
            form.addRow(label, widget)
        self.add_button = QPushButton("Enter instrument")
        self.add_button.setObjectName("instrumentAdd")
        self.add_button.clicked.connect(self.add)
        self.remove_button = QPushButton("Remove selected")
        self.remove_button.setObjectName("instrumentRemove")
        self.remove_button.setToolTip("Remove an instrument entered by hand (mapped ones go with their source rows)")
        self.remove_button.clicked.connect(self.remove)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setObjectName("instrumentsMessage")
        note = QLabel("Instruments cover their site's purchased electricity in the months of their period, pro rata "
                      "to consumption, at most what the site used each month. Unused MWh are not carried to other "
                      "periods or sites. Entered instruments count from the next recompute of the KPIs.")
        note.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        row.addStretch(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.tree, 1)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.message)
        layout.addWidget(buttons)
        self.resize(900, 600)
        self.rows: list[dict[str, Any]] = []
        self._update_buttons()

    # --- reading ------------------------------------------------------------------------------

    def reload(self) -> None:
        self.pool.run(_usage_and_sites, self.workspace, on_done=self._fill, on_error=self._failed, owner=self)

    def _fill(self, found: tuple[list[dict[str, Any]], list[str]]) -> None:
        rows, sites = found
        typed = self.site.currentText()
        self.site.clear()
        self.site.addItems(sites)
        self.site.setEditText(typed)
        self.rows = rows
        self.tree.clear()
        labels = {self.kind.itemData(i): self.kind.itemText(i) for i in range(self.kind.count())}
        for r in rows:
            item = QTreeWidgetItem([
                r["site"] or "", r["type"] or "", f"{r['mwh']:g}" if r["mwh"] is not None else "", r["from"] or "",
                r["to"] or "", f"{r['allocated_mwh']:,.3f}", f"{r['unused_mwh']:,.3f}", r["tracking_id"] or "",
                r["evidence"] or "", r["source"]])
            item.setToolTip(1, labels.get(r["type"], r["type"] or ""))  # the type's name, as the form offers it
            item.setToolTip(8, r["evidence"] or "")  # evidence references run long
            for column in (2, 5, 6):  # MWh figures line up
                item.setTextAlignment(column, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.tree.addTopLevelItem(item)
        self._update_buttons()
        self.loaded.emit()

    def selected(self) -> dict[str, Any] | None:
        item = self.tree.currentItem()
        return self.rows[self.tree.indexOfTopLevelItem(item)] if item is not None else None

    def _update_buttons(self) -> None:
        row = self.selected()
        self.remove_button.setEnabled(bool(row and row["id"] is not None))

    # --- writing ------------------------------------------------------------------------------

    def add(self) -> None:
        from esg_workbench.mapping import instruments

        self.message.setText("Saving …")
        self.pool.run(instruments.add, self.workspace, site=self.site.currentText(), kind=self.kind.currentData(),
                      mwh=self.mwh.value(), start=self.start.date().toString("yyyy-MM-dd"),
                      end=self.end.date().toString("yyyy-MM-dd"), tracking_id=self.tracking.text(),
                      evidence=self.evidence.text(), kg_per_kwh=self.factor.value(), actor=self.actor,
                      on_done=self._added, on_error=self._failed, owner=self)

    def _added(self, added: dict[str, Any]) -> None:
        self.message.setText(f"Entered {added['mwh']:g} MWh for {added['site']} ({added['tracking_id']}). "
                             "Recompute the KPIs (Apply) for it to count.")
        self.tracking.clear()
        self.changed.emit()
        self.reload()

    def remove(self) -> None:
        from esg_workbench.mapping import instruments

        row = self.selected()
        if not row or row["id"] is None:
            return
        self.pool.run(instruments.remove, self.workspace, row["id"], actor=self.actor,
                      on_done=self._removed, on_error=self._failed, owner=self)

    def _removed(self, gone: dict[str, Any]) -> None:
        self.message.setText(f"Removed {gone['tracking_id']}. Recompute the KPIs (Apply) for it to stop counting.")
        self.changed.emit()
        self.reload()

    def _failed(self, message: str) -> None:
        self.message.setText(message)
        self.failed.emit(message)
