"""Connectors through the GUI: the setup dialog (typing, inline validation, Test
connection with the precise result), the list's badges, edit, duplicate, delete."""

from __future__ import annotations

from PySide6.QtCore import Qt

from tests.gui.conftest import add_connector, fill_connector_dialog, ok_button, open_dialog


def test_add_connector_test_connection_shows_precise_result(qtbot, window, source):
    dialog = open_dialog(qtbot, window, window.act_add)
    assert dialog.problems.isHidden()  # nothing typed yet: no error shown
    fill_connector_dialog(qtbot, dialog, "erp", source, database="no_such_db")

    # a wrong database name: the DatabaseMissing message with what to do
    with qtbot.waitSignal(dialog.tested, timeout=20000) as blocker:
        qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
    ok, message = blocker.args
    assert not ok
    assert "the database 'no_such_db' does not exist" in message
    assert "What to do: Check the database name" in message
    assert "does not exist" in dialog.result.text()
    assert "Traceback" not in dialog.result.text()

    # fixed: connected, with what it found
    dialog._fields["database"].clear()
    qtbot.keyClicks(dialog._fields["database"], source["database"])
    with qtbot.waitSignal(dialog.tested, timeout=20000) as blocker:
        qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [True, "Connected. 2 tables readable in schema public."]
    assert dialog.result.text() == "✔ Connected. 2 tables readable in schema public."

    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    assert window.connectors.names() == ["erp"]
    assert window.connectors.current_name() == "erp"
    item = window.connectors.list.item(0)
    assert item.data(Qt.ItemDataRole.UserRole + 2) == ("never synced", "idle")
    # the password field was empty: nothing went to the keyring, no marker in the config
    assert "password_in_keyring" not in window.connectors.overview("erp").config

    # Test connection on the saved connector marks it validated
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        window.act_test.trigger()
    assert window.connectors.list.item(0).data(Qt.ItemDataRole.UserRole + 2) == ("validated", "ok")
    assert "Connected." in window.info.label.text()


def test_dialog_validates_inline(qtbot, window, source):
    add_connector(qtbot, window, source, "erp")
    dialog = open_dialog(qtbot, window, window.act_add)
    fill_connector_dialog(qtbot, dialog, "erp", source)
    assert "Another connector already has this name" in dialog.problems.text()
    assert dialog.name.styleSheet()  # the field is marked

    qtbot.keyClicks(dialog.name, "-2")
    assert not dialog.validation_problems(), dialog.problems.text()

    dialog._fields["port"].clear()
    qtbot.keyClicks(dialog._fields["port"], "99999")
    assert "Port must be a number" in dialog.problems.text()
    dialog._fields["port"].clear()
    qtbot.keyClicks(dialog._fields["port"], "5432")

    dialog.load_type.setCurrentIndex(dialog.load_type.findData("delta"))
    assert "cursor_field" in dialog.problems.text()
    qtbot.keyClicks(dialog.cursor_field, "updated_at")
    assert not dialog.validation_problems() and dialog.problems.isHidden()

    qtbot.keyClicks(dialog.lookback, "soon")
    assert "Look-back must be a duration" in dialog.problems.text() and "soon" not in dialog.problems.text()
    dialog.lookback.clear()
    qtbot.keyClicks(dialog.lookback, "15m")
    assert not dialog.validation_problems() and ok_button(dialog).isEnabled()

    # a folder of files brings its own cursor (modification times): delta needs none
    dialog.type.setCurrentText("files")
    qtbot.keyClicks(dialog._fields["path"], "/tmp")
    dialog.cursor_field.clear()
    dialog.load_type.setCurrentIndex(dialog.load_type.findData("delta"))
    assert "cursor_field" not in dialog.problems.text(), dialog.problems.text()
    dialog.reject()


def test_edit_duplicate_delete(qtbot, window, source, answers):
    add_connector(qtbot, window, source, "erp")

    dialog = open_dialog(qtbot, window, window.act_edit)
    assert dialog.windowTitle() == "Edit connector"
    assert dialog._fields["database"].text() == source["database"]
    dialog.chunk_size.setValue(5000)
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    assert window.connectors.overview("erp").config["chunk_size"] == 5000

    dialog = open_dialog(qtbot, window, window.act_duplicate)
    assert dialog.name.text() == "erp copy"
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    assert window.connectors.names() == ["erp", "erp copy"]
    assert window.connectors.overview("erp copy").config["database"] == source["database"]

    # deleting asks first; "Keep" keeps it
    window.connectors.select("erp copy")
    answers["answers"] = [False]
    window.act_delete.trigger()
    assert answers["asked"] and "Delete the connector 'erp copy'" in answers["asked"][-1][1]
    assert "erp copy" in window.connectors.names()
    answers["answers"] = [True]
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        window.act_delete.trigger()
    assert window.connectors.names() == ["erp"]


def test_password_goes_to_the_keyring_and_leaves_with_the_connector(qtbot, window, source, answers):
    import pytest

    from esg_workbench import credentials
    from esg_workbench.core.errors import KeyringUnavailable

    try:
        credentials.check_backend()
    except KeyringUnavailable as exc:
        pytest.skip(f"no secure keyring here (scripts/test.sh starts one): {exc.message}")
    dialog = open_dialog(qtbot, window, window.act_add)
    fill_connector_dialog(qtbot, dialog, "erp", source)
    qtbot.keyClicks(dialog.password, "s3cret-pw")
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    overview = window.connectors.overview("erp")
    assert overview.config.get("password_in_keyring") is True
    assert "s3cret-pw" not in str(overview.config)
    assert credentials.load_secret(overview.id) == "s3cret-pw"
    answers["answers"] = [True]
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        window.act_delete.trigger()
    assert credentials.load_secret(overview.id) is None
