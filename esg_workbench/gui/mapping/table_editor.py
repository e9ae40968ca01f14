"""The table mapping editor: what the selected source table feeds and how its rows are
picked and traced. Label, source table, ESG entity, a row filter (an expression: only
rows where it is true are mapped) and the key columns that trace each staging row to its
source row (the table's primary key when left empty). Every change is an undoable
command (SetTable); typing in one box is one undo step."""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import icons
from esg_workbench.gui.mapping.document import MappingDocument
from esg_workbench.mapping.errors import ExpressionError
from esg_workbench.mapping.model import SetTable


class TableEditor(QFrame):
    def __init__(self, document: MappingDocument, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("tableEditor")
        self.document = document
        self.table_id: str | None = None
        self.title = QLabel()
        self.title.setStyleSheet("font-weight: bold; font-size: 11pt;")
        self.title.setWordWrap(True)
        self.subtitle = QLabel()
        self.subtitle.setWordWrap(True)
        self.subtitle.setStyleSheet("color: #546e7a;")
        self.label = QLineEdit()
        self.label.setObjectName("tableLabel")
        self.label.setPlaceholderText("e.g. Electricity meter readings")
        self.stream = QComboBox()
        self.stream.setObjectName("tableStream")
        self.entity = QComboBox()
        self.entity.setObjectName("tableEntity")
        for e in document.catalog.entities.values():
            self.entity.addItem(f"{e.label} ({e.name})", e.name)
        for combo in (self.stream, self.entity):  # the editor's width decides, not the longest name
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(10)
        self.filter = QLineEdit()
        self.filter.setObjectName("tableFilter")
        self.filter.setPlaceholderText("e.g. tariff <> 'correction'  (empty: every row)")
        self.filter_status = QLabel()
        self.filter_status.setWordWrap(True)
        self.keys = QListWidget()
        self.keys.setObjectName("tableKeys")
        self.keys.setToolTip("Tick the columns that identify a source row; none ticked: the table's primary key")
        self.keys_status = QLabel()
        self.keys_status.setWordWrap(True)
        self.keys_status.setStyleSheet("color: #546e7a;")
        self.remove_button = QPushButton(icons.standard("SP_TrashIcon"), "Remove table mapping")
        self.remove_button.setObjectName("removeTable")
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Label", self.label)
        form.addRow("Source table", self.stream)
        form.addRow("ESG entity", self.entity)
        form.addRow("Row filter", self.filter)
        form.addRow(self.filter_status)
        form.addRow(QLabel("Key columns (lineage)"))
        form.addRow(self.keys)
        form.addRow(self.keys_status)
        body = QWidget()
        inner = QVBoxLayout(body)
        inner.setContentsMargins(8, 8, 8, 8)
        inner.addWidget(self.title)
        inner.addWidget(self.subtitle)
        inner.addLayout(form)
        inner.addStretch(1)
        inner.addWidget(self.remove_button, 0, Qt.AlignmentFlag.AlignRight)
        scroll = QScrollArea()  # small windows scroll instead of growing the main window
        scroll.setWidget(body)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

        self.label.textEdited.connect(lambda text: self._set("label", text.strip(), merge=True))
        self.stream.activated.connect(lambda _: self._set("stream", self.stream.currentText()))
        self.entity.activated.connect(lambda _: self._set("entity", self.entity.currentData()))
        self.filter.textEdited.connect(self._filter_edited)
        self.keys.itemChanged.connect(self._keys_changed)
        self.remove_button.clicked.connect(self._remove)
        document.table_changed.connect(self._table_changed)
        document.table_removed.connect(self._table_removed)
        document.reset.connect(self._reset)
        document.problems_changed.connect(self._problems)

    def set_table(self, table_id: str | None) -> None:
        self.table_id = table_id
        self._refresh()

    def table(self):
        if self.table_id is None or self.document.mapping is None:
            return None
        try:
            return self.document.mapping.table(self.table_id)
        except KeyError:
            return None

    def _reset(self) -> None:
        self.set_table(None)

    def _table_removed(self, table_id: str) -> None:
        if table_id == self.table_id:
            self.set_table(None)

    def _table_changed(self, table_id: str, attribute: str) -> None:
        if table_id == self.table_id:
            self._refresh(keep_text=attribute in ("label", "filter"))

    def _problems(self, problems) -> None:
        table = self.table()
        if table is None:
            return
        mine = [p for p in problems if p.table_id == table.id and p.edge_id is None and p.kind in
                ("MissingKey", "ExpressionError", "UnknownStream", "UnknownEntity", "MappedColumnMissing")]
        text = "\n".join(f"{'⚠' if p.severity == 'warning' else '✖'} {p.message}" for p in mine)
        self.keys_status.setText(text or self._keys_text(table))
        self.keys_status.setStyleSheet("color: #c62828;" if any(p.severity == "error" for p in mine)
                                       else "color: #ef6c00;" if mine else "color: #546e7a;")

    def _keys_text(self, table) -> str:
        primary = self.document.context.keys.get(table.stream) or []
        if table.key_columns:
            return f"Traced by {', '.join(table.key_columns)}."
        return (f"Traced by the primary key ({', '.join(primary)})." if primary else
                "No primary key: rows are traced by a hash of their values. Tick key columns.")

    def _refresh(self, keep_text: bool = False) -> None:
        table = self.table()
        self.setEnabled(table is not None)
        if table is None:
            self.title.setText("No table mapping selected")
            self.subtitle.setText("")
            return
        entity = self.document.catalog.entity(table.entity)
        self.title.setText(f"{table.stream} → {entity.label if entity else table.entity}")
        self.subtitle.setText("One staging row per mapped measure of each source row; the key columns trace it back.")
        columns = self.document.columns_of(table) or {}
        with QSignalBlocker(self.label), QSignalBlocker(self.filter):
            if not keep_text or self.label.text().strip() != (table.label or ""):
                self.label.setText(table.label or "")
            if not keep_text or self.filter.text().strip() != (table.filter or ""):
                self.filter.setText(table.filter or "")
        with QSignalBlocker(self.stream):
            self.stream.clear()
            self.stream.addItems(self.document.context.streams)
            if self.stream.findText(table.stream) < 0:
                self.stream.addItem(table.stream)
            self.stream.setCurrentText(table.stream)
        with QSignalBlocker(self.entity):
            self.entity.setCurrentIndex(max(0, self.entity.findData(table.entity)))
        with QSignalBlocker(self.keys):
            self.keys.clear()
            for name in columns:
                item = QListWidgetItem(f"{name}  ({columns[name]})")
                item.setData(Qt.ItemDataRole.UserRole, name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if name in (table.key_columns or []) else Qt.CheckState.Unchecked)
                self.keys.addItem(item)
        self._check_filter(table.filter or "")
        self._problems(self.document.problems)

    def _set(self, attribute: str, value, merge: bool = False) -> None:
        table = self.table()
        if table is None or getattr(table, attribute) == value:
            return
        self.document.edit(SetTable(table.id, attribute, value), f"Set the table's {attribute.replace('_', ' ')}",
                           ("table", table.id, attribute) if merge else None)

    def _check_filter(self, text: str) -> bool:
        from esg_workbench.mapping.expressions import parse

        if not text.strip():
            self.filter_status.setText("Every landed row is mapped.")
            self.filter_status.setStyleSheet("color: #546e7a;")
            return True
        try:
            parse(text)
        except ExpressionError as exc:
            self.filter_status.setText(exc.message)
            self.filter_status.setStyleSheet("color: #c62828;")
            return False
        self.filter_status.setText("Only rows where this is true are mapped.")
        self.filter_status.setStyleSheet("color: #546e7a;")
        return True

    def _filter_edited(self, text: str) -> None:
        if self._check_filter(text):
            self._set("filter", text.strip() or None, merge=True)

    def _keys_changed(self, _item) -> None:
        chosen = [self.keys.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.keys.count())
                  if self.keys.item(i).checkState() == Qt.CheckState.Checked]
        self._set("key_columns", chosen or None)

    def _remove(self) -> None:
        if self.table_id is not None:
            self.document.remove_tables([self.table_id])
