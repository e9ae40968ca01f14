"""Small dialogs and the info bar: confirmation, workspace switching, notices."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import icons


def ask(parent: QWidget | None, title: str, text: str, yes: str = "Yes", no: str = "No") -> bool:
    """A yes/no question (tests replace this function to answer it)."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.NoButton, parent)
    yes_button = box.addButton(yes, QMessageBox.ButtonRole.AcceptRole)
    box.addButton(no, QMessageBox.ButtonRole.RejectRole)
    box.exec()
    return box.clickedButton() is yes_button


def last_folder(settings, key: str) -> str:
    """The folder a file dialog of this kind last used (the home folder at first)."""
    from pathlib import Path

    folder = settings.value(f"folders/{key}") if settings is not None else None
    return folder if folder and Path(folder).is_dir() else str(Path.home())


def remember_folder(settings, key: str, path: str) -> None:
    from pathlib import Path

    if settings is not None and path:
        settings.setValue(f"folders/{key}", str(Path(path).parent))


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    """A readable error (message and what to do); never a traceback."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message.split("\nWhat to do:")[0], QMessageBox.StandardButton.Ok, parent)
    if "\nWhat to do:" in message:
        box.setInformativeText("What to do:" + message.split("\nWhat to do:", 1)[1])
    box.open()  # not modal-blocking: the event loop (and syncs' progress) keeps running


class InfoBar(QFrame):
    """A notice above the tabs with up to two actions and a close button."""

    closed = Signal()

    KINDS = {"info": ("#e3f2fd", "#1565c0"), "warn": ("#fff3e0", "#ef6c00"),
             "error": ("#ffebee", "#c62828"), "ok": ("#e8f5e9", "#2e7d32")}

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("infoBar")
        self.label = QLabel()
        self.label.setObjectName("infoText")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons: list[QPushButton] = []
        self.button_row = QHBoxLayout()
        self.close_button = QToolButton()
        self.close_button.setIcon(icons.standard("SP_TitleBarCloseButton"))
        self.close_button.setAutoRaise(True)
        self.close_button.setToolTip("Dismiss")
        self.close_button.clicked.connect(self.dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addLayout(self.button_row)
        layout.addWidget(self.close_button, 0, Qt.AlignmentFlag.AlignTop)
        self.topic = ""
        self.hide()

    def show_notice(self, text: str, kind: str = "info", actions: list[tuple[str, object]] = (),
                    topic: str = "") -> None:
        bg, fg = self.KINDS.get(kind, self.KINDS["info"])
        self.setStyleSheet(f"#infoBar {{ background: {bg}; border: 1px solid {fg}; border-radius: 4px; }}"
                           f" #infoText {{ color: #212121; }}")
        self.label.setText(text)
        for b in self.buttons:
            b.deleteLater()
        self.buttons = []
        for label, slot in actions:
            button = QPushButton(label)
            button.clicked.connect(slot)
            self.button_row.addWidget(button)
            self.buttons.append(button)
        self.topic = topic
        self.show()

    def set_text(self, text: str) -> None:
        self.label.setText(text)

    def set_busy(self, busy: bool) -> None:
        for b in self.buttons:
            b.setEnabled(not busy)

    def dismiss(self) -> None:
        self.hide()
        self.topic = ""
        self.closed.emit()


class WorkspaceDialog(QDialog):
    """Choose a workspace: a DuckDB file, or a shared PostgreSQL database."""

    def __init__(self, current: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Switch workspace")
        self.setMinimumWidth(560)
        self.duck = QRadioButton("A DuckDB file (one analyst, no server)")
        self.pg = QRadioButton("A shared PostgreSQL database (a team)")
        group = QButtonGroup(self)
        group.addButton(self.duck)
        group.addButton(self.pg)
        self.path = QLineEdit()
        self.path.setObjectName("workspacePath")
        self.path.setPlaceholderText("/home/me/esg/workspace.duckdb")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.url = QLineEdit()
        self.url.setObjectName("workspaceUrl")
        self.url.setPlaceholderText("postgresql://user@host:5432/esg  (password from ~/.pgpass or PGPASSWORD)")
        self.create = QCheckBox("Create a new workspace here (and its folder) if there is none")
        self.create.setObjectName("workspaceCreate")
        self.problem = QLabel()
        self.problem.setStyleSheet("color: #c62828;")
        self.problem.setWordWrap(True)
        self.note = QLabel()
        self.note.setObjectName("workspaceNote")
        self.note.setWordWrap(True)
        grid = QGridLayout()
        grid.addWidget(self.duck, 0, 0, 1, 2)
        grid.addWidget(self.path, 1, 0)
        grid.addWidget(browse, 1, 1)
        grid.addWidget(self.create, 2, 0, 1, 2)
        grid.addWidget(self.pg, 3, 0, 1, 2)
        grid.addWidget(self.url, 4, 0, 1, 2)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.note)
        layout.addWidget(self.problem)
        layout.addWidget(self.buttons)
        if current.startswith(("postgresql", "postgres://")):
            self.pg.setChecked(True)
            self.url.setText(current)
        else:
            self.duck.setChecked(True)
            self.path.setText(current.removeprefix("duckdb:///"))
        for w in (self.path, self.url):
            w.textChanged.connect(self._check)
        self.duck.toggled.connect(self._check)
        self.create.toggled.connect(self._check)
        self.path.textEdited.connect(lambda _: self.duck.setChecked(True))
        self.url.textEdited.connect(lambda _: self.pg.setChecked(True))
        self._check()

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Workspace file", self.path.text(), "DuckDB (*.duckdb);;All files (*)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            from pathlib import Path

            self.create.setChecked(not Path(path).exists())  # a new name typed in the file dialog
            self.path.setText(path)
            self.duck.setChecked(True)

    def value(self) -> str:
        if self.pg.isChecked():
            return self.url.text().strip()
        return self.path.text().strip()

    def _check(self, *_) -> None:
        from pathlib import Path

        problem = note = ""
        if self.pg.isChecked():
            if not self.url.text().strip().startswith(("postgresql://", "postgres://")):
                problem = "A PostgreSQL workspace is a URL starting with postgresql://"
        elif not self.path.text().strip():
            problem = "Give the path of a DuckDB file."
        else:
            # a typo must not silently start an empty workspace: a new one is asked for
            path = Path(self.path.text().strip().removeprefix("duckdb:///")).expanduser()
            if path.is_dir():
                problem = f"{path} is a folder: give the path of a DuckDB file in it."
            elif not path.exists():
                if self.create.isChecked():
                    note = "A new, empty workspace will be created" + (
                        f", with the folder {path.parent}." if not path.parent.is_dir() else ".")
                elif not path.parent.is_dir():
                    problem = (f"There is no folder {path.parent}. Check the path, or tick "
                               "\"Create a new workspace\" to make it.")
                else:
                    problem = ("There is no workspace at this path. Check the name, or tick "
                               "\"Create a new workspace\" to start one.")
        self.create.setEnabled(self.duck.isChecked())
        self.note.setText(note)
        self.problem.setText(problem)
        self.buttons.button(QDialogButtonBox.StandardButton.Open).setEnabled(not problem)
