"""The methodology settings that were JSON or CLI only:

* per table mapping, its business key (the columns that identify a record, e.g. the
  invoice number) and what duplicates of it do: flagged only, or flagged and counted once;
* the mapping's fallback region: whose factors an activity takes when its site's region
  has none (flagged `factor_other_region` on every value; empty: no emission, `no_factor`);
* how the organization's KPI gaps are estimated (mapping/gaps.py; not part of a mapping).

The mapping's settings are undoable edits of the document (one macro per OK), saved with
the mapping like any edit; the estimation method is stored at once (audited) and counts
from the next recompute.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

DUPLICATES = (("flag", "Flag duplicates, count every row"), ("count_once", "Flag duplicates and count them once"))
ESTIMATES = ((None, "Do not estimate gaps"),
             ("previous_year", "Same month of the previous year"),
             ("neighbours", "Mean of the months before and after"),
             ("per_headcount", "Site's value per employee x the month's headcount"))


class MappingSettingsDialog(QDialog):
    """`saved` after the settings were applied (mapping edits pushed, estimation stored),
    `loaded` when the estimation method was read, `failed` with the message of an error."""

    saved = Signal()
    loaded = Signal()
    failed = Signal(str)

    def __init__(self, document, workspace, pool, parent: QWidget | None = None, actor: str | None = None):
        super().__init__(parent)
        self.document, self.workspace, self.pool, self.actor = document, workspace, pool, actor
        mapping = document.mapping
        self.setWindowTitle(f"Settings of mapping '{mapping.name}'")
        self.setObjectName("mappingSettingsDialog")
        layout = QVBoxLayout(self)
        # per table: business key and duplicates, scrolled (a mapping of ten tables is
        # taller than a 720 px screen)
        self.keys: dict[str, QListWidget] = {}
        self.duplicates: dict[str, QComboBox] = {}
        tables = QWidget()
        tables_layout = QVBoxLayout(tables)
        scroll = QScrollArea()
        scroll.setObjectName("settingsTables")
        scroll.setWidgetResizable(True)
        scroll.setWidget(tables)
        for table in mapping.tables:
            box = QGroupBox(f"{table.stream} → {table.entity}")
            form = QFormLayout(box)
            keys = QListWidget()
            keys.setObjectName(f"businessKey:{table.id}")
            keys.setAccessibleName(f"Business key of {table.stream}")
            keys.setMaximumHeight(90)
            columns = list((document.columns_of(table) or {}).keys())
            for column in columns + [k for k in (table.business_key or []) if k not in columns]:
                item = QListWidgetItem(column)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if column in (table.business_key or [])
                                   else Qt.CheckState.Unchecked)
                keys.addItem(item)
            dup = QComboBox()
            dup.setObjectName(f"duplicates:{table.id}")
            for value, label in DUPLICATES:
                dup.addItem(label, value)
            dup.setCurrentIndex(max(0, dup.findData(table.duplicates or "flag")))
            form.addRow("Business key (checked columns)", keys)
            form.addRow("Duplicates of the key", dup)
            self.keys[table.id], self.duplicates[table.id] = keys, dup
            tables_layout.addWidget(box)
        tables_layout.addStretch(1)
        layout.addWidget(scroll, 1)
        # the mapping: fallback region
        self.fallback = QLineEdit(mapping.factor_fallback_region or "")
        self.fallback.setObjectName("fallbackRegion")
        self.fallback.setPlaceholderText("none: a site's region without factors gets no emission (no_factor)")
        self.fallback.setToolTip("ISO 3166 code (GB, DE, US-CA) whose factors are used where the site's region has "
                                 "none; every value using them is flagged factor_other_region")
        # the organization: estimation of gaps
        self.estimate = QComboBox()
        self.estimate.setObjectName("gapEstimate")
        for value, label in ESTIMATES:
            self.estimate.addItem(label, value)
        self.estimate.setEnabled(False)  # until the stored choice is read
        form = QFormLayout()
        form.addRow("Fallback region of factors", self.fallback)
        form.addRow("Estimate gaps (all mappings)", self.estimate)
        layout.addLayout(form)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setObjectName("settingsMessage")
        layout.addWidget(self.message)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.apply)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.stored_estimate: str | None = None
        self.resize(640, 600)  # fits 1280 x 720 with the window's frame

    def reload(self) -> None:
        from esg_workbench.mapping import gaps

        self.pool.run(gaps.estimate_method, self.workspace, on_done=self._loaded, on_error=self._failed, owner=self)

    def _loaded(self, method: str | None) -> None:
        self.stored_estimate = method
        self.estimate.setCurrentIndex(max(0, self.estimate.findData(method)))
        self.estimate.setEnabled(True)
        self.loaded.emit()

    def business_key(self, table_id: str) -> list[str] | None:
        keys = self.keys[table_id]
        checked = [keys.item(i).text() for i in range(keys.count())
                   if keys.item(i).checkState() == Qt.CheckState.Checked]
        return checked or None

    def apply(self) -> None:
        """Check, push the mapping's changes as one undoable edit, store the estimation."""
        from esg_workbench.mapping import regions
        from esg_workbench.mapping.model import SetMapping, SetTable

        text = self.fallback.text().strip()
        region = regions.normalize(text) if text else None
        if text and not regions.is_country((region or "").split("-")[0]):
            self.message.setText(f"'{text}' is not an ISO 3166 country or region (e.g. GB, DE, US-CA).")
            self.failed.emit(self.message.text())
            return
        mapping = self.document.mapping
        edits = []
        for table in mapping.tables:
            key = self.business_key(table.id)
            if key != (table.business_key or None):
                edits.append(SetTable(table.id, "business_key", key))
            duplicates = self.duplicates[table.id].currentData()
            if duplicates != (table.duplicates or "flag"):
                edits.append(SetTable(table.id, "duplicates", duplicates))
        if region != (mapping.factor_fallback_region or None):
            edits.append(SetMapping("factor_fallback_region", region))
        if edits:
            with self.document.macro("Mapping settings"):
                for op in edits:
                    self.document.edit(op, "Mapping settings")
        method = self.estimate.currentData()
        if self.estimate.isEnabled() and method != self.stored_estimate:
            from esg_workbench.mapping import gaps

            self.pool.run(gaps.set_estimate_method, self.workspace, method, actor=self.actor,
                          on_done=lambda _: self._done(), on_error=self._failed, owner=self)
        else:
            self._done()

    def _done(self) -> None:
        self.saved.emit()
        self.accept()

    def _failed(self, message: str) -> None:
        self.message.setText(message)
        self.failed.emit(message)
