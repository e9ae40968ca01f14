"""The transform editor: what the selected edge does to its column's values.

Click an edge on the canvas and its source column, its transforms (in order) and the
settings of the selected transform show here. Every change is an undoable command on the
document (typing in one box merges into one undo step), and the preview grid below the
canvas recomputes the mapped output from the landed rows as you edit.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import icons
from esg_workbench.gui.mapping.document import MappingDocument, column_unit
from esg_workbench.mapping.errors import ExpressionError, MappingError
from esg_workbench.mapping.model import Edge, edge_output
from esg_workbench.mapping.transforms import (
    CAST_TYPES,
    Cast,
    Constant,
    Expression,
    FuelEnergy,
    Lookup,
    Period,
    Transform,
    Unit,
    ValueMap,
)

KINDS = [
    ("unit", "Unit conversion"),
    ("cast", "Cast to another type"),
    ("value_map", "Map values (codes → catalog values)"),
    ("lookup", "Look up in another landed table"),
    ("fuel_energy", "Fuel quantity → energy (kWh)"),
    ("period", "Date → reporting month"),
    ("expression", "Expression"),
    ("constant", "Constant value"),
]
COMMON_UNITS = {
    "energy": ["kWh", "MWh", "GWh", "GJ", "MJ", "therm"],
    # never a bare 'gallon' or 'ton' (units.AMBIGUOUS): the analyst picks which one is meant
    "volume": ["litre", "m3", "Nm3", "ML", "US gallon", "imperial gallon"],
    "mass": ["kg", "t", "short ton", "long ton"],
    "length": ["km", "mile"],
    "time": ["h"],
    "count": ["persons", "count"],
    "emission_intensity": ["kgCO2e/kWh"],
}
NO_COLUMN = "(no column: constant or expression)"
SHORT = {"unit": "Unit", "cast": "Cast", "value_map": "Map values", "lookup": "Look up", "fuel_energy": "Fuel energy",
         "period": "Month", "expression": "Expression", "constant": "Constant"}


def _typed(text: str) -> Any:
    """A constant as the user typed it: a number when it reads as one."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


class TransformEditor(QFrame):
    edge_deleted = Signal()

    def __init__(self, document: MappingDocument, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("transformEditor")
        self.document = document
        self.table_id: str | None = None
        self.edge_id: str | None = None
        self._shown: list[dict] | None = None  # the transforms the form shows (JSON)
        self._loading = False

        self.title = QLabel("No edge selected")
        self.title.setObjectName("edgeTitle")
        self.title.setStyleSheet("font-weight: bold; font-size: 11pt;")
        self.title.setWordWrap(True)
        self.subtitle = QLabel("Click an edge on the canvas to edit its transforms, or drag a source column "
                               "onto an ESG field to make one.")
        self.subtitle.setWordWrap(True)
        self.subtitle.setStyleSheet("color: #546e7a;")
        self.source = QComboBox()
        self.source.setObjectName("edgeSource")
        self.source.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.source.setMinimumContentsLength(10)
        self.list = QListWidget()
        self.list.setObjectName("transformList")
        self.list.setToolTip("The transforms run top to bottom on the column's values")
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.add_button = QToolButton()
        self.add_button.setText("Add")
        self.add_button.setIcon(icons.standard("SP_FileDialogNewFolder"))
        self.add_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.add_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.add_menu = QMenu(self)
        for kind, text in KINDS:
            self.add_menu.addAction(text, lambda k=kind: self.add_transform(k))
        self.add_button.setMenu(self.add_menu)
        self.remove_button = QToolButton()
        self.remove_button.setIcon(icons.standard("SP_TrashIcon"))
        self.remove_button.setToolTip("Remove the selected transform")
        self.up_button = QToolButton()
        self.up_button.setArrowType(Qt.ArrowType.UpArrow)
        self.up_button.setToolTip("Apply earlier")
        self.down_button = QToolButton()
        self.down_button.setArrowType(Qt.ArrowType.DownArrow)
        self.down_button.setToolTip("Apply later")
        self.settings = QWidget()
        self.settings.setObjectName("transformSettings")
        self.settings_layout = QVBoxLayout(self.settings)
        self.settings_layout.setContentsMargins(0, 0, 0, 0)
        self.output = QLabel()
        self.output.setObjectName("edgeOutput")
        self.output.setWordWrap(True)
        self.problems = QLabel()
        self.problems.setObjectName("edgeProblems")
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #c62828;")
        self.delete_button = QPushButton(icons.standard("SP_TrashIcon"), "Delete edge")
        self.delete_button.setObjectName("deleteEdge")

        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.up_button)
        buttons.addWidget(self.down_button)
        buttons.addStretch(1)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Source column", self.source)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        self.body = QWidget()
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 4, 0, 0)
        body.addLayout(form)
        heading = QLabel("Transforms, applied in order")
        heading.setStyleSheet("color: #37474f; font-weight: bold;")
        body.addWidget(heading)
        body.addWidget(self.list)
        body.addLayout(buttons)
        body.addWidget(self.settings)
        body.addWidget(self.output)
        body.addWidget(self.problems)
        body.addStretch(1)
        body.addWidget(self.delete_button, 0, Qt.AlignmentFlag.AlignRight)
        self.scroll = QScrollArea()
        self.scroll.setWidget(self.body)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout.addWidget(self.scroll, 1)
        layout.addStretch(0)  # takes the room while no edge is shown
        self.scroll.setVisible(False)

        self.source.activated.connect(self._source_chosen)
        self.list.currentRowChanged.connect(lambda _: self._show_settings())
        self.remove_button.clicked.connect(self.remove_transform)
        self.up_button.clicked.connect(lambda: self.move_transform(-1))
        self.down_button.clicked.connect(lambda: self.move_transform(1))
        self.delete_button.clicked.connect(self.delete_edge)
        document.edge_changed.connect(self._edge_changed)
        document.edge_removed.connect(self._edge_removed)
        document.table_removed.connect(self._table_removed)
        document.reset.connect(self._reset)
        document.problems_changed.connect(self._problems_changed)

    # --- what is shown -----------------------------------------------------------------------

    def edge(self) -> Edge | None:
        if self.table_id is None or self.document.mapping is None:
            return None
        try:
            return self.document.mapping.table(self.table_id).edge(self.edge_id)
        except KeyError:
            return None

    def set_edge(self, table_id: str | None, edge_id: str | None) -> None:
        self.table_id, self.edge_id = table_id, edge_id
        self._shown = None
        self._refresh(select_row=0)

    def _edge_changed(self, table_id: str, edge_id: str, attribute: str) -> None:
        if (table_id, edge_id) != (self.table_id, self.edge_id):
            return
        edge = self.edge()
        if attribute == "transforms" and edge is not None and [t.to_json() for t in edge.transforms] == self._shown:
            self._refresh_list_texts()  # our own edit coming back: keep the form (and the cursor) as it is
            self._show_status()
            return
        self._refresh(select_row=self.list.currentRow())

    def _table_removed(self, table_id: str) -> None:
        if table_id == self.table_id:
            self.set_edge(None, None)

    def _reset(self) -> None:
        self.set_edge(None, None)

    def _problems_changed(self, problems) -> None:
        self._show_status()

    def _edge_removed(self, table_id: str, edge_id: str) -> None:
        if (table_id, edge_id) == (self.table_id, self.edge_id):
            self.set_edge(None, None)

    def _refresh(self, select_row: int = 0) -> None:
        edge = self.edge()
        self.scroll.setVisible(edge is not None)
        if edge is None:
            self.title.setText("No edge selected")
            self.subtitle.setText("Click an edge on the canvas to edit its transforms, or drag a source column "
                                  "onto an ESG field to make one.")
            self._clear_settings()
            return
        table = self.document.mapping.table(self.table_id)
        fdef = self.field_def()
        self.title.setText(f"{edge.source or 'constant'} → {edge.target}")
        what = f"{fdef.label} · {'required · ' if fdef.required else ''}{fdef.type}" if fdef else edge.target
        if fdef is not None and fdef.role == "measure":
            what += f" in {fdef.unit or ', '.join(fdef.units.values())}"
        self.subtitle.setText(f"{what}\n{table.stream} → {table.entity}")
        with QSignalBlocker(self.source):
            self.source.clear()
            columns = self.document.columns_of(table) or {}
            for name, vtype in columns.items():
                self.source.addItem(f"{name}  ({vtype})", name)
            if edge.source and edge.source not in columns:
                self.source.addItem(f"{edge.source}  (missing)", edge.source)
            self.source.addItem(NO_COLUMN, None)
            self.source.setCurrentIndex(max(0, self.source.findData(edge.source)))
        self._shown = [t.to_json() for t in edge.transforms]
        with QSignalBlocker(self.list):
            self.list.clear()
            for t in edge.transforms:
                self.list.addItem(QListWidgetItem(self._describe(t)))
        self.list.setFixedHeight(8 + 20 * min(5, max(2, self.list.count())))
        row = min(max(select_row, 0), self.list.count() - 1)
        with QSignalBlocker(self.list):
            self.list.setCurrentRow(row)
        self._show_settings()
        self._show_status()

    def _refresh_list_texts(self) -> None:
        edge = self.edge()
        if edge is None:
            return
        for i, t in enumerate(edge.transforms):
            if i < self.list.count():
                self.list.item(i).setText(self._describe(t))

    @staticmethod
    def _describe(t: Transform) -> str:
        name = SHORT.get(t.kind, t.kind)
        detail = t.describe()
        return f"{name}: {detail}" if detail != t.kind else name

    def field_def(self):
        edge = self.edge()
        if edge is None:
            return None
        entity = self.document.catalog.entity(self.document.mapping.table(self.table_id).entity)
        return entity.field(edge.target) if entity else None

    def _show_status(self) -> None:
        edge = self.edge()
        if edge is None:
            return
        columns = self.document.columns_of(self.table_id) or {}
        try:
            value_type, unit = edge_output(edge, columns)
            self.output.setText(f"Delivers: {value_type}{f' in {unit}' if unit else ''}")
            self.output.setStyleSheet("color: #2e7d32;")
        except MappingError as exc:
            self.output.setText(f"Delivers: nothing usable yet ({exc.message})")
            self.output.setStyleSheet("color: #c62828;")
        mine = [p for p in self.document.problems if p.edge_id == edge.id]
        self.problems.setText("\n".join(f"{'⚠' if p.severity == 'warning' else '✖'} {p.message}" for p in mine))
        self.problems.setStyleSheet(f"color: {'#c62828' if any(p.severity == 'error' for p in mine) else '#ef6c00'};")
        row = self.list.currentRow()
        self.remove_button.setEnabled(row >= 0)
        self.up_button.setEnabled(row > 0)
        self.down_button.setEnabled(0 <= row < self.list.count() - 1)

    # --- edits -------------------------------------------------------------------------------

    def _transforms(self) -> list[Transform]:
        edge = self.edge()
        return [Transform.from_json(t.to_json()) for t in edge.transforms] if edge else []

    def commit(self, transforms: list[Transform], merge_key: Any = None) -> None:
        if self.edge() is None:
            return
        self._shown = [t.to_json() for t in transforms]
        self.document.set_transforms(self.table_id, self.edge_id, transforms, merge_key)

    def _source_chosen(self, index: int) -> None:
        edge = self.edge()
        column = self.source.itemData(index)
        if edge is not None and column != edge.source:
            self.document.set_edge_source(self.table_id, self.edge_id, column)

    def add_transform(self, kind: str) -> None:
        transforms = self._transforms()
        transforms.append(self._new(kind))
        self.commit(transforms)
        self._shown = None
        self._refresh(select_row=len(transforms) - 1)

    def remove_transform(self) -> None:
        row = self.list.currentRow()
        transforms = self._transforms()
        if 0 <= row < len(transforms):
            del transforms[row]
            self.commit(transforms)
            self._shown = None
            self._refresh(select_row=row - 1 if row > 0 else 0)

    def move_transform(self, step: int) -> None:
        row = self.list.currentRow()
        transforms = self._transforms()
        other = row + step
        if 0 <= row < len(transforms) and 0 <= other < len(transforms):
            transforms[row], transforms[other] = transforms[other], transforms[row]
            self.commit(transforms)
            self._shown = None
            self._refresh(select_row=other)

    def delete_edge(self) -> None:
        if self.edge() is not None:
            self.document.remove_edges([(self.table_id, self.edge_id)])
            self.edge_deleted.emit()

    def _new(self, kind: str) -> Transform:
        edge, fdef = self.edge(), self.field_def()
        if kind == "cast":
            return Cast(to={"date": "date", "boolean": "boolean", "text": "text"}.get(fdef.type if fdef else "", "number"))
        if kind == "unit":
            to = (fdef.unit or next(iter(fdef.units.values()), "")) if fdef else ""
            return Unit(from_unit=column_unit(edge.source or "") or to, to_unit=to)
        if kind == "fuel_energy":
            fuels = list(self.document.catalog.vocabulary("fuel_type"))
            return FuelEnergy(fuel=fuels[0] if fuels else "", from_unit="litre")
        if kind == "value_map":
            return ValueMap(mapping={})
        if kind == "constant":
            vocab = list(self.document.catalog.vocabulary(fdef.vocabulary if fdef else None))
            return Constant(value=vocab[0] if vocab else "")
        if kind == "period":
            return Period()
        if kind == "expression":
            return Expression(text="value")
        streams = [s for s in self.document.context.streams if s != self.document.mapping.table(self.table_id).stream]
        return Lookup(stream=streams[0] if streams else "", key_column="id", value_column="")

    # --- the settings form of the selected transform ----------------------------------------------

    def _clear_settings(self) -> None:
        while self.settings_layout.count():
            item = self.settings_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()

    def _show_settings(self) -> None:
        self._clear_settings()
        row = self.list.currentRow()
        edge = self.edge()
        if edge is None or not (0 <= row < len(edge.transforms)):
            self._show_status()
            return
        t = edge.transforms[row]
        box = QFrame()
        box.setObjectName("transformForm")
        box.setStyleSheet("#transformForm { background: #f5f7f8; border: 1px solid #dde3e6; border-radius: 4px; }")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        builder = getattr(self, f"_form_{t.kind}", None)
        if builder is not None:
            builder(form, row, t)
        self.settings_layout.addWidget(box)
        self._show_status()

    def _update(self, row: int, key: str, **changes: Any) -> None:
        """Commit the transform at `row` with `changes` (one undo step per row and setting)."""
        transforms = self._transforms()
        if not (0 <= row < len(transforms)):
            return
        data = transforms[row].to_json()
        data.update(changes)
        transforms[row] = Transform.from_json(data)
        self.commit(transforms, merge_key=(row, key))
        if row < self.list.count():
            self.list.item(row).setText(self._describe(transforms[row]))

    def _combo(self, values: list[str], current: str, editable: bool, on_change: Callable[[str], None],
               name: str) -> QComboBox:
        combo = QComboBox()
        combo.setObjectName(name)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
        combo.setEditable(editable)
        combo.addItems([v for v in dict.fromkeys(values) if v is not None])
        if combo.findText(current) < 0 and current:
            combo.addItem(current)
        combo.setCurrentText(current)
        if editable:
            combo.editTextChanged.connect(on_change)
        else:
            combo.currentTextChanged.connect(on_change)
        return combo

    def _units_for(self, dims: tuple[str, ...] | list[str]) -> list[str]:
        out: list[str] = []
        for d in dims or COMMON_UNITS:
            out += COMMON_UNITS.get(d, [])
        return out

    def _form_cast(self, form: QFormLayout, row: int, t: Cast) -> None:
        form.addRow("To", self._combo(list(CAST_TYPES), t.to, False,
                                      lambda v: self._update(row, "to", to=v), "castTo"))

    def _form_unit(self, form: QFormLayout, row: int, t: Unit) -> None:
        fdef = self.field_def()
        dims = fdef.allowed_dimensions if fdef else ()
        form.addRow("From", self._combo(self._units_for(dims), t.from_unit, True,
                                        lambda v: self._update(row, "from_unit", from_unit=v.strip()), "unitFrom"))
        form.addRow("To", self._combo(self._units_for(dims), t.to_unit, True,
                                      lambda v: self._update(row, "to_unit", to_unit=v.strip()), "unitTo"))

    def _form_fuel_energy(self, form: QFormLayout, row: int, t: FuelEnergy) -> None:
        fuels = list(self.document.catalog.vocabulary("fuel_type"))
        form.addRow("Fuel", self._combo(fuels, t.fuel, False, lambda v: self._update(row, "fuel", fuel=v), "fuel"))
        form.addRow("Quantity in", self._combo(["litre", "m3", "kg", "t", "kWh"], t.from_unit, True,
                                               lambda v: self._update(row, "from_unit", from_unit=v.strip()),
                                               "fuelUnit"))
        form.addRow("Basis", self._combo(["Gross CV", "Net CV"], t.basis, False,
                                         lambda v: self._update(row, "basis", basis=v), "fuelBasis"))

    def _form_period(self, form: QFormLayout, row: int, t: Period) -> None:
        note = QLabel("The date's reporting month, YYYY-MM. Quarters and years are rolled up in the KPIs.")
        note.setWordWrap(True)
        form.addRow(note)

    def _form_constant(self, form: QFormLayout, row: int, t: Constant) -> None:
        fdef = self.field_def()
        vocab = list(self.document.catalog.vocabulary(fdef.vocabulary if fdef else None))
        form.addRow("Value", self._combo(vocab, "" if t.value is None else str(t.value), True,
                                         lambda v: self._update(row, "value", value=_typed(v)), "constantValue"))

    def _form_expression(self, form: QFormLayout, row: int, t: Expression) -> None:
        from esg_workbench.mapping.expressions import parse

        edit = QLineEdit(t.text)
        edit.setObjectName("expressionText")
        edit.setPlaceholderText("value * coalesce(renewable_share, 0)")
        status = QLabel()
        status.setWordWrap(True)

        def changed(text: str) -> None:
            try:
                parse(text)
            except ExpressionError as exc:
                status.setText(exc.message)
                status.setStyleSheet("color: #c62828;")
                return
            status.setText("`value` is the column's value; other columns by name.")
            status.setStyleSheet("color: #546e7a;")
            self._update(row, "text", text=text)

        edit.textChanged.connect(changed)
        edit.editingFinished.connect(lambda: self._update(row, "text", text=edit.text())
                                     if edit.text() != t.text else None)
        changed(t.text)
        form.addRow("Expression", edit)
        form.addRow(status)

    def _form_lookup(self, form: QFormLayout, row: int, t: Lookup) -> None:
        context = self.document.context
        streams = context.streams
        columns = list(context.columns.get(t.stream, {}))
        form.addRow("Table", self._combo(streams, t.stream, False,
                                         lambda v: (self._update(row, "stream", stream=v), self._show_settings()),
                                         "lookupStream"))
        form.addRow("Where column", self._combo(columns, t.key_column, False,
                                                lambda v: self._update(row, "key_column", key_column=v), "lookupKey"))
        form.addRow("equals the value, read", self._combo([""] + columns, t.value_column, False,
                                                          lambda v: self._update(row, "value_column", value_column=v),
                                                          "lookupValue"))

    def _form_value_map(self, form: QFormLayout, row: int, t: ValueMap) -> None:
        fdef = self.field_def()
        vocab = list(self.document.catalog.vocabulary(fdef.vocabulary if fdef else None))
        table = QTableWidget(0, 2)
        table.setObjectName("valueMapTable")
        table.setHorizontalHeaderLabels(["Source value", "Becomes"])
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        table.verticalHeader().setVisible(False)
        table.verticalHeader().setDefaultSectionSize(22)
        pairs = list(t.mapping.items()) + [("", "")]
        table.setFixedHeight(min(220, 28 + 22 * max(3, len(pairs))))
        table.setRowCount(len(pairs))
        for i, (k, v) in enumerate(pairs):
            table.setItem(i, 0, QTableWidgetItem(str(k)))
            table.setItem(i, 1, QTableWidgetItem("" if v is None else str(v)))
        if vocab:
            table.setToolTip("Catalog values: " + ", ".join(vocab))

        def changed(_item) -> None:
            mapping = {}
            for i in range(table.rowCount()):
                k, v = table.item(i, 0), table.item(i, 1)
                if k is not None and k.text().strip():
                    mapping[k.text().strip()] = _typed(v.text()) if v is not None and v.text().strip() else None
            last = table.item(table.rowCount() - 1, 0)
            if last is not None and last.text().strip():
                with QSignalBlocker(table):
                    table.insertRow(table.rowCount())
                    table.setItem(table.rowCount() - 1, 0, QTableWidgetItem(""))
                    table.setItem(table.rowCount() - 1, 1, QTableWidgetItem(""))
            self._update(row, "mapping", mapping=mapping)

        table.itemChanged.connect(changed)
        form.addRow(table)
        if vocab:
            hint = QLabel("Catalog values: " + ", ".join(vocab[:12]) + (" …" if len(vocab) > 12 else ""))
            hint.setWordWrap(True)
            hint.setStyleSheet("color: #546e7a;")
            form.addRow(hint)
        default = self._combo([""] + vocab, "" if t.default is None else str(t.default), True,
                              lambda v: self._update(row, "default", default=_typed(v) if v.strip() else None),
                              "valueMapDefault")
        form.addRow("Other values become", default)
        keep = QCheckBox("Keep other values unchanged")
        keep.setChecked(t.keep_unmapped)
        keep.toggled.connect(lambda on: self._update(row, "keep_unmapped", keep_unmapped=on))
        form.addRow(keep)
