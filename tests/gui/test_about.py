"""Help ▸ About: version, runtime, the licences of the shipped data, and where the
workspace, logs, settings and secrets live, with Copy and Open folder."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QDialogButtonBox

from esg_workbench import __version__
from esg_workbench.gui.about_dialog import AboutDialog
from esg_workbench.mapping.factors import ATTRIBUTION


class FileUrlCatcher(QObject):
    """Stands in for the file manager: Qt hands it the file:// URLs the app opens."""

    def __init__(self):
        super().__init__()
        self.opened: list[QUrl] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.opened.append(url)


def open_about(qtbot, window) -> AboutDialog:
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    about = next(a for a in help_menu.actions() if a.text() == "&About ESG Workbench")
    about.trigger()
    dialog = window.findChild(AboutDialog)
    assert dialog is not None, "Help ▸ About opened no About dialog"
    qtbot.waitExposed(dialog)
    return dialog


def test_about_shows_version_licences_and_where_things_live(qtbot, make_window, tmp_path, monkeypatch, settings):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # platformdirs' user log folder follows it
    window = make_window()
    dialog = open_about(qtbot, window)

    assert f"Version {__version__}" in dialog.findChild(type(dialog.versions), "aboutTitle").text()
    versions = dialog.versions.text()
    for part in ("Python 3.", "Qt 6.", "PySide6 6.", "DuckDB ", "SQLAlchemy 2."):
        assert part in versions
    licences = dialog.licences.text()
    assert ATTRIBUTION in licences and "Open Government Licence v3.0" in licences
    assert "ESG Workbench</b>: Proprietary" in licences  # pyproject's licence
    assert "Sample data" in licences

    workspace_file = tmp_path / "workspace.duckdb"
    logs = tmp_path / "state" / "esg-workbench" / "log"
    assert dialog.fields["workspace"].text() == str(workspace_file)
    assert dialog.fields["logs"].text() == str(logs)
    assert dialog.fields["settings"].text() == settings.fileName() == str(tmp_path / "settings.ini")
    assert dialog.fields["keyring"].text() == "esg-workbench"
    assert "keyring" not in dialog.open_buttons  # nothing on disk to open

    qtbot.mouseClick(dialog.copy_buttons["workspace"], Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == str(workspace_file)
    qtbot.mouseClick(dialog.copy_buttons["keyring"], Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "esg-workbench"

    catcher = FileUrlCatcher()
    QDesktopServices.setUrlHandler("file", catcher, "open")
    try:
        assert not logs.exists()
        qtbot.mouseClick(dialog.open_buttons["logs"], Qt.MouseButton.LeftButton)
        qtbot.mouseClick(dialog.open_buttons["workspace"], Qt.MouseButton.LeftButton)
    finally:
        QDesktopServices.unsetUrlHandler("file")
    assert [Path(u.toLocalFile()) for u in catcher.opened] == [logs, tmp_path]
    assert logs.is_dir()  # made for the file manager to show, not an error

    qtbot.mouseClick(dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Close),
                     Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.findChild(AboutDialog) is None)  # closed and deleted


def test_about_a_postgresql_workspace_shows_its_url_without_a_folder(qtbot, make_window, pg_database):
    from tests.conftest import PG_HOST, PG_PORT, PG_USER

    window = make_window(url=f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}")
    dialog = open_about(qtbot, window)
    assert dialog.fields["workspace"].text() == window.workspace.display_url
    assert pg_database in dialog.fields["workspace"].text()
    assert "workspace" not in dialog.open_buttons
    dialog.close()


def test_the_app_icon_is_drawn_at_every_window_manager_size(qtbot):
    from PySide6.QtCore import QSize

    from esg_workbench.gui.app import ICON_SIZES, app_icon

    icon = app_icon()
    assert set(icon.availableSizes()) == {QSize(s, s) for s in ICON_SIZES}
    image = icon.pixmap(64, 64).toImage()
    assert image.pixelColor(32, 32).alpha() == 255 and image.pixelColor(0, 0).alpha() == 0
