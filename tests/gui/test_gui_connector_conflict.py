"""Two analysts editing one connector: the later save is refused with a plain "changed by
someone else" in the dialog, nothing is overwritten, and after a reload the edit saves."""

from __future__ import annotations

from PySide6.QtCore import Qt

from esg_workbench.sync import operations
from tests.gui.conftest import add_connector, ok_button, open_dialog


def test_saving_a_connector_someone_else_changed_asks_to_reload(qtbot, window, source):
    add_connector(qtbot, window, source, "erp")
    dialog = open_dialog(qtbot, window, window.act_edit)
    dialog.chunk_size.setValue(5000)

    # meanwhile another analyst saves the same connector
    theirs = {**window.connectors.overview("erp").config, "chunk_size": 777}
    operations.update_connector(window.workspace, "erp", theirs)

    qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "changed by someone else" in dialog.result.text(), timeout=20000)
    assert "Reload" in dialog.result.text() and "Traceback" not in dialog.result.text()
    assert dialog.isVisible()  # the user's edit is still in the form
    assert operations.get_connector(window.workspace, "erp").config["chunk_size"] == 777
    dialog.reject()

    # opened again, the editor shows their change, and the edit saves
    dialog = open_dialog(qtbot, window, window.act_edit)
    assert dialog.chunk_size.value() == 777
    dialog.chunk_size.setValue(5000)
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    assert operations.get_connector(window.workspace, "erp").config["chunk_size"] == 5000
