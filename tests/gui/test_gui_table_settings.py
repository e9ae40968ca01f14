"""The sync panel's Table settings dialog: proposes the cursor columns discovery found,
saves a table's own settings to the connector (the next sync uses them), and keeps the
dialog open with the reason when a setting is refused."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from esg_workbench.sync import operations
from tests.gui.conftest import add_connector


def wait_status(qtbot, panel):
    with qtbot.waitSignal(panel.status_loaded, timeout=20000):
        panel.refresh_status()


def select_table(panel, stream: str) -> None:
    for i in range(panel.tables.count()):
        if panel.tables.item(i).data(Qt.ItemDataRole.UserRole) == stream:
            panel.tables.setCurrentRow(i)
            return
    raise AssertionError(f"{stream} is not listed")


def test_table_settings_dialog_saves_and_refuses(qtbot, window, source):
    add_connector(qtbot, window, source, "erp")
    panel = window.sync
    window.tabs.setCurrentWidget(panel)
    operations.discover_connector(window.workspace, "erp")
    panel.set_connector(None)
    with qtbot.waitSignal(panel.status_loaded, timeout=20000):
        panel.set_connector("erp")  # the panel lists the discovered tables
    assert not panel.table_settings_button.isEnabled()  # no table selected
    select_table(panel, "public.energy_use")
    assert panel.table_settings_button.isEnabled()

    qtbot.mouseClick(panel.table_settings_button, Qt.MouseButton.LeftButton)
    dialog = panel.table_dialog
    qtbot.waitExposed(dialog)
    assert [dialog.cursor.itemText(i) for i in range(dialog.cursor.count())] == ["", "updated_at"]
    assert not dialog.primary_key.isEnabled()  # energy_use declares its key
    dialog.cursor.setCurrentText("no_such_column")
    dialog.load_type.setCurrentIndex(dialog.load_type.findData("delta"))
    qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "has no column 'no_such_column'" in dialog.problem.text(), timeout=20000)
    assert dialog.isVisible()
    assert not operations.get_connector(window.workspace, "erp").config.get("tables")

    dialog.cursor.setCurrentText("updated_at")
    dialog.detect_deletes.setChecked(True)
    dialog.deletes_every.setValue(3)
    with qtbot.waitSignal(panel.status_loaded, timeout=20000):
        qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    saved = operations.get_connector(window.workspace, "erp").config["tables"]["public.energy_use"]
    assert saved == {"load_type": "delta", "cursor_field": "updated_at", "detect_deletes": True, "deletes_every": 3}
    assert panel.status["table_settings"]["public.energy_use"]["own"] == saved
