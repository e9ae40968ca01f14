"""A table's own load settings (sync/table_settings.py): load type, cursor field (the
columns discovery proposes first), primary key for a table that declares none, chunk
size, and whether delta loads look for rows deleted in the source."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
)


class TableSettingsDialog(QDialog):
    """Shows one table's settings; `settings()` is what to save (None clears a setting)."""

    def __init__(self, stream: str, current: dict[str, Any], parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Table settings — {stream}")
        self.stream = stream
        own = current.get("own") or {}
        self.load_type = QComboBox()
        self.load_type.setObjectName("tableLoadType")
        for label, value in (("Connector setting", None), ("Full", "full"), ("Delta", "delta")):
            self.load_type.addItem(label, value)
        self.load_type.setCurrentIndex(max(0, self.load_type.findData(own.get("load_type"))))
        self.cursor = QComboBox()
        self.cursor.setObjectName("tableCursor")
        self.cursor.setEditable(True)
        self.cursor.addItem("")  # the connector's cursor
        for name in current.get("cursor_candidates") or []:
            self.cursor.addItem(name)
        self.cursor.setCurrentText(own.get("cursor_field") or "")
        self.cursor.setToolTip("Proposed from the table's columns: the most likely change time first")
        self.primary_key = QLineEdit(",".join(own.get("primary_key") or []))
        self.primary_key.setObjectName("tablePrimaryKey")
        declared = current.get("declared_key") or []
        if declared:
            self.primary_key.setEnabled(False)
            self.primary_key.setPlaceholderText(f"declared: {', '.join(declared)}")
        else:
            self.primary_key.setPlaceholderText("columns that identify a row, e.g. site,day")
        self.chunk_size = QSpinBox()
        self.chunk_size.setObjectName("tableChunkSize")
        self.chunk_size.setRange(0, 10_000_000)
        self.chunk_size.setSingleStep(10_000)
        self.chunk_size.setSpecialValueText("Connector setting")
        self.chunk_size.setValue(int(own.get("chunk_size") or 0))
        self.detect_deletes = QCheckBox("Mark rows deleted in the source (delta loads)")
        self.detect_deletes.setObjectName("tableDetectDeletes")
        self.detect_deletes.setChecked(bool(own.get("detect_deletes")))
        self.deletes_every = QSpinBox()
        self.deletes_every.setObjectName("tableDeletesEvery")
        self.deletes_every.setRange(1, 10_000)
        self.deletes_every.setValue(int(own.get("deletes_every") or 1))
        self.deletes_every.setSuffix(" sync(s)")
        self.deletes_every.setEnabled(self.detect_deletes.isChecked())
        self.detect_deletes.toggled.connect(self.deletes_every.setEnabled)

        form = QFormLayout()
        form.addRow("Load type", self.load_type)
        form.addRow("Cursor field", self.cursor)
        form.addRow("Primary key", self.primary_key)
        form.addRow("Chunk size", self.chunk_size)
        form.addRow(self.detect_deletes)
        form.addRow("Look for deleted rows every", self.deletes_every)
        self.problem = QLabel()
        self.problem.setObjectName("tableSettingsProblem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #b00020;")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.problem)
        layout.addWidget(self.buttons)

    def settings(self) -> dict[str, Any]:
        return {
            "load_type": self.load_type.currentData(),
            "cursor_field": self.cursor.currentText().strip() or None,
            "primary_key": self.primary_key.text().strip() or None if self.primary_key.isEnabled() else None,
            "chunk_size": self.chunk_size.value() or None,
            "detect_deletes": True if self.detect_deletes.isChecked() else None,
            "deletes_every": self.deletes_every.value() if self.detect_deletes.isChecked() else None,
        }

    def show_problem(self, message: str) -> None:
        self.problem.setText(message)
