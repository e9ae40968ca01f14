"""The connector setup dialog: one form per connector type, inline validation, a
password field whose value goes straight to the keyring, and Test connection.

Validation speaks only of fields the user has touched, or of all of them once Save was
pressed; its messages name the field and never repeat what was typed (a password typed
into the wrong field must not show up in clear). Tab goes down the form as it is drawn."""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QIntValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.connectors.options import REQUIRED_OPTIONS
from esg_workbench.connectors.registry import NEEDS_PASSWORD, OWN_CURSOR, TYPE_OPTIONS, connector_types
from esg_workbench.core.errors import ConfigError
from esg_workbench.core.specs import WINDOWS, ConnectorSpec, LoadSettings, parse_duration
from esg_workbench.gui import icons

DEFAULT_PORTS = {"postgres": "5432", "mysql": "3306"}
LABELS = {"host": "Host", "port": "Port", "database": "Database", "schema": "Schema",
          "username": "User name", "path": "File"}
PLACEHOLDERS = {"host": "db.example.com", "database": "erp", "schema": "public (default)",
                "username": "reporting_reader", "path": "/path/to/file"}
INVALID_STYLE = "border: 1px solid #c62828; border-radius: 2px;"


def test_connection(type_: str, name: str, options: dict[str, Any], password: str | None,
                    stored_secret_of: str | None = None) -> str:
    """Runs in a worker: open the source and validate it (the precise result)."""
    from esg_workbench.connectors.registry import create_connector

    if not password and stored_secret_of:
        from esg_workbench import credentials

        password = credentials.load_secret(stored_secret_of)
    connector = create_connector(ConnectorSpec(type=type_, name=name or "test", options=options, password=password))
    try:
        return connector.validate()
    finally:
        connector.close()


class ConnectorDialog(QDialog):
    """Add (record None), edit (record given) or duplicate (record given, duplicate=True).

    `save(name, type, options, password) -> record` runs in a worker when OK is pressed;
    the dialog closes when it succeeded and shows the error otherwise."""

    tested = Signal(bool, str)  # ok, message (for tests and the status bar)

    def __init__(self, pool, save: Callable[..., Any], *, record=None, duplicate: bool = False,
                 taken_names: set[str] = frozenset(), parent: QWidget | None = None):
        super().__init__(parent)
        self.pool = pool
        self.save_fn = save
        self.record = None if duplicate else record
        self.taken = set(taken_names) - ({record.name} if record is not None and not duplicate else set())
        self.setWindowTitle("Edit connector" if self.record else "Add connector")
        self.setMinimumWidth(520)
        self._testing = False
        self._saving = False
        self._fields: dict[str, QLineEdit] = {}
        self._touched: set[QWidget] = set()  # fields the user has edited
        self._save_pressed = False
        self._ready = False  # (filling the form is no touch)

        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. erp-production")
        self.type = QComboBox()
        self.type.addItems(connector_types())

        top = QFormLayout()
        top.addRow("&Name", self.name)
        top.addRow("&Type", self.type)

        self.location_box = QGroupBox("Connection")
        self.location = QFormLayout(self.location_box)
        self.password = QLineEdit()

        self.load_box = QGroupBox("Loading")
        load = QFormLayout(self.load_box)
        self.load_type = QComboBox()
        self.load_type.addItem("Full (replace the table each sync)", "full")
        self.load_type.addItem("Delta (rows changed since the last sync)", "delta")
        self.cursor_field = QLineEdit()
        self.cursor_field.setPlaceholderText("updated_at (needed for delta and time windows)")
        self.chunk_strategy = QComboBox()
        for label, value in (("Automatic (by table size)", "auto"), ("Id ranges", "id"), ("Time windows", "time")):
            self.chunk_strategy.addItem(label, value)
        self.window = QComboBox()
        self.window.addItem("Automatic", "")
        for w in WINDOWS:
            self.window.addItem(w.capitalize(), w)
        self.chunk_size = QSpinBox()
        self.chunk_size.setRange(0, 10_000_000)
        self.chunk_size.setSingleStep(10_000)
        self.chunk_size.setSpecialValueText("Automatic")
        self.chunk_size.setSuffix(" rows")
        self.lookback = QLineEdit()
        self.lookback.setPlaceholderText("none, or e.g. 15m, 2h (re-read late rows)")
        load.addRow("&Load type", self.load_type)
        load.addRow("&Cursor field", self.cursor_field)
        load.addRow("Chunk &strategy", self.chunk_strategy)
        load.addRow("&Window", self.window)
        load.addRow("Chunk si&ze", self.chunk_size)
        load.addRow("Look-&back", self.lookback)

        self.problems = QLabel()
        self.problems.setObjectName("problems")
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #c62828;")
        self.result = QLabel()
        self.result.setObjectName("testResult")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result.setMinimumHeight(36)

        self.test_button = QPushButton(icons.standard("SP_BrowserReload"), "&Test connection")
        self.test_button.setObjectName("testButton")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Save" if self.record else "Add")
        self.buttons.addButton(self.test_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.buttons.accepted.connect(self._save)
        self.buttons.rejected.connect(self.reject)
        self.test_button.clicked.connect(self._test)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.location_box)
        layout.addWidget(self.load_box)
        layout.addWidget(self.problems)
        layout.addWidget(self.result)
        layout.addWidget(self.buttons)

        self.type.currentTextChanged.connect(self._build_location)
        for w in (self.name, self.cursor_field, self.lookback, self.password):
            w.textChanged.connect(self._revalidate)
            w.textEdited.connect(lambda _=None, w=w: self._touch(w))
        for w in (self.load_type, self.chunk_strategy, self.window):
            w.currentIndexChanged.connect(self._revalidate)
            w.currentIndexChanged.connect(lambda _=None, w=w: self._touch(w))
        self.chunk_size.valueChanged.connect(self._revalidate)

        self._build_location(self.type.currentText())
        if record is not None:
            self._fill(record, duplicate)
        self._ready = True
        self._revalidate()

    # --- form ---------------------------------------------------------------------------

    def _build_location(self, type_: str) -> None:
        old = {k: f.text() for k, f in self._fields.items()}
        while self.location.rowCount():
            self.location.removeRow(0)  # deletes the row's widgets (not the password field: re-added below)
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setObjectName("password")
        self.password.textChanged.connect(self._revalidate)
        self._fields = {}
        for key in TYPE_OPTIONS.get(type_, ()):
            field = QLineEdit(old.get(key, ""))
            field.setObjectName(key)
            field.setPlaceholderText(PLACEHOLDERS.get(key, ""))
            if key == "port":
                field.setValidator(QIntValidator(1, 65535, field))
                if not field.text():
                    field.setText(DEFAULT_PORTS.get(type_, ""))
            field.textChanged.connect(self._revalidate)
            field.textEdited.connect(lambda _=None, f=field: self._touch(f))
            self._fields[key] = field
            label = LABELS.get(key, key) + (" *" if key in REQUIRED_OPTIONS.get(type_, ()) else "")
            if key == "path":
                row = QWidget()
                h = QHBoxLayout(row)
                h.setContentsMargins(0, 0, 0, 0)
                h.addWidget(field)
                browse = QPushButton("Browse…")
                browse.clicked.connect(lambda: self._browse(field))
                h.addWidget(browse)
                self.location.addRow(label, row)
            else:
                self.location.addRow(label, field)
        if type_ in NEEDS_PASSWORD:
            self.password.setPlaceholderText(
                "unchanged (stored in the keyring)" if self.record is not None and self._has_secret()
                else "kept in the system keyring, never in the workspace")
            self.location.addRow("Password", self.password)
        self._order_tabs()
        self._revalidate()

    def _order_tabs(self) -> None:
        """Tab follows the form as drawn: name, type, the connection fields (and their
        Browse buttons), the password, then the loading settings and the buttons. (Qt's
        default is creation order, and the connection rows are rebuilt per type.)"""
        chain: list[QWidget] = [self.name, self.type]
        for row in range(self.location.rowCount()):
            item = self.location.itemAt(row, QFormLayout.ItemRole.FieldRole)
            widget = item.widget() if item is not None else None
            if widget is None:
                continue
            chain += [w for w in widget.findChildren(QWidget) if w.focusPolicy() & Qt.FocusPolicy.TabFocus] \
                if not isinstance(widget, QLineEdit) else [widget]
        chain += [self.load_type, self.cursor_field, self.chunk_strategy, self.window, self.chunk_size,
                  self.lookback, self.buttons]
        for first, second in zip(chain, chain[1:]):
            QWidget.setTabOrder(first, second)
    def _browse(self, field: QLineEdit) -> None:
        if self.type.currentText() in OWN_CURSOR:  # a folder of files
            path = QFileDialog.getExistingDirectory(self, "Choose the folder", field.text())
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Choose the database file", field.text())
        if path:
            field.setText(path)

    def _has_secret(self) -> bool:
        from esg_workbench.sync.engine import PASSWORD_MARKER

        return bool(self.record and self.record.config.get(PASSWORD_MARKER))

    def _fill(self, record, duplicate: bool) -> None:
        self.name.setText(f"{record.name} copy" if duplicate else record.name)
        self.type.setCurrentText(record.type)
        self.type.setEnabled(duplicate)  # a connector's type is fixed once it has data
        config = record.config
        for key, field in self._fields.items():
            if config.get(key) is not None:
                field.setText(str(config[key]))
        self.load_type.setCurrentIndex(max(0, self.load_type.findData(config.get("load_type", "full"))))
        self.cursor_field.setText(str(config.get("cursor_field") or ""))
        self.chunk_strategy.setCurrentIndex(max(0, self.chunk_strategy.findData(config.get("chunk_strategy", "auto"))))
        self.window.setCurrentIndex(max(0, self.window.findData(config.get("window") or "")))
        self.chunk_size.setValue(int(config.get("chunk_size") or 0))
        self.lookback.setText(str(config.get("lookback") or ""))
        if duplicate and self.type.currentText() in NEEDS_PASSWORD:
            self.password.setPlaceholderText("enter the password for the copy")

    # --- values and validation ----------------------------------------------------------

    def values(self) -> tuple[str, str, dict[str, Any], str | None]:
        options: dict[str, Any] = {k: f.text().strip() for k, f in self._fields.items() if f.text().strip()}
        if "port" in options:
            options["port"] = int(options["port"])
        options["load_type"] = self.load_type.currentData()
        for key, value in (("cursor_field", self.cursor_field.text().strip()),
                           ("chunk_strategy", self.chunk_strategy.currentData()),
                           ("window", self.window.currentData()),
                           ("lookback", self.lookback.text().strip())):
            if value:
                options[key] = value
        if self.chunk_size.value():
            options["chunk_size"] = self.chunk_size.value()
        password = self.password.text() if self.type.currentText() in NEEDS_PASSWORD else ""
        return self.name.text().strip(), self.type.currentText(), options, password or None

    def validation_problems(self) -> dict[QWidget, str]:
        problems: dict[QWidget, str] = {}
        name = self.name.text().strip()
        if not name:
            problems[self.name] = "Give the connector a name."
        elif name in self.taken:
            problems[self.name] = "Another connector already has this name."
        for key, field in self._fields.items():
            if key in REQUIRED_OPTIONS.get(self.type.currentText(), ()) and not field.text().strip():
                problems[field] = f"{LABELS.get(key, key)} is required."
            if key == "port" and field.text() and not field.hasAcceptableInput():
                problems[field] = "Port must be a number from 1 to 65535."
        if self.lookback.text().strip():
            try:
                parse_duration(self.lookback.text())
            except ConfigError:  # (its message repeats the text: say it without)
                problems[self.lookback] = "Look-back must be a duration such as 90 (seconds), 15m, 2h or 1d."
        if not problems:
            try:
                LoadSettings.from_options(self.values()[2], own_cursor=self.type.currentText() in OWN_CURSOR)
            except ConfigError as exc:
                problems[self.cursor_field if "cursor" in exc.message else self.load_type] = exc.message
        return problems

    def _touch(self, widget: QWidget) -> None:
        if self._ready:
            self._touched.add(widget)
            self._revalidate()

    def shown_problems(self) -> dict[QWidget, str]:
        """The problems to show now: of touched fields, or all once Save was pressed."""
        problems = self.validation_problems()
        if self._save_pressed:
            return problems
        touched = set(self._touched)
        if touched & {self.load_type, self.chunk_strategy, self.window, self.cursor_field}:
            touched |= {self.load_type, self.cursor_field}  # the load settings are checked together
        return {w: m for w, m in problems.items() if w in touched}

    def _revalidate(self, *_: Any) -> None:
        if not hasattr(self, "buttons"):
            return
        problems = self.validation_problems()
        shown = self.shown_problems()
        for widget in [self.name, self.cursor_field, self.lookback, self.load_type, *self._fields.values()]:
            widget.setStyleSheet(INVALID_STYLE if widget in shown else "")
            widget.setToolTip(shown.get(widget, ""))
            widget.setAccessibleDescription(shown.get(widget, ""))
        self.problems.setText("\n".join(shown.values()))
        self.problems.setVisible(bool(shown))
        location_ok = not any(w in problems for w in self._fields.values())
        # Save stays pressable while the form is incomplete: pressing it shows what is missing
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not self._saving)
        self.test_button.setEnabled(location_ok and not self._testing)

    # --- actions --------------------------------------------------------------------------

    def _show_result(self, ok: bool, text: str) -> None:
        color = icons.STATUS_COLORS["ok" if ok else "error"]
        self.result.setStyleSheet(f"color: {color};")
        self.result.setText(("✔ " if ok else "✘ ") + text)

    def _test(self) -> None:
        name, type_, options, password = self.values()
        self._testing = True
        self.result.setStyleSheet("color: #555;")
        self.result.setText("Testing the connection…")
        self._revalidate()
        stored = self.record.id if self.record is not None and self._has_secret() else None

        def done(message: str) -> None:
            self._testing = False
            self._show_result(True, message)
            self._revalidate()
            self.tested.emit(True, message)

        def failed(message: str) -> None:
            self._testing = False
            self._show_result(False, message)
            self._revalidate()
            self.tested.emit(False, message)

        self.pool.run(test_connection, type_, name, options, password, stored,
                      on_done=done, on_error=failed, owner=self)

    def _save(self) -> None:
        problems = self.validation_problems()
        if problems:
            self._save_pressed = True
            self._revalidate()
            next(iter(problems)).setFocus()  # the first field to fix
            return
        self._saving = True
        self._revalidate()
        self.result.setStyleSheet("color: #555;")
        self.result.setText("Saving…")

        def done(record: Any) -> None:
            self._saving = False
            self.saved_record = record
            self.accept()

        def failed(message: str) -> None:
            self._saving = False
            self._show_result(False, message)
            self._revalidate()

        self.pool.run(self.save_fn, *self.values(), on_done=done, on_error=failed, owner=self)
