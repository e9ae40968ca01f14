"""The app around the panels: first start with the sample data, switching workspaces
and the recent list, remembered window state, readable errors, shortcuts."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from esg_workbench.gui import dialogs


def test_first_start_offers_and_loads_sample_data(qtbot, window):
    assert window.info.isVisible() and window.info.topic == "samples"
    assert "This workspace is empty" in window.info.label.text()
    load = window.info.buttons[0]
    assert load.text() == "Load sample data"
    with qtbot.waitSignal(window.sample_loaded, timeout=90000) as blocker:
        qtbot.mouseClick(load, Qt.MouseButton.LeftButton)
    summary = blocker.args[0]
    assert summary["status"] == "success"
    qtbot.waitUntil(lambda: window.connectors.names() == ["sample-erp"], timeout=20000)
    assert "Sample data loaded" in window.info.label.text()
    # the window leads to what the demo produced: the KPIs, not an empty Schema tab
    assert window.tabs.currentWidget() is window.kpis
    # (the window may have listed the connector while the demo ran: its badge follows)
    qtbot.waitUntil(lambda: window.connectors.list.item(0).data(Qt.ItemDataRole.UserRole + 2) == ("synced", "ok"),
                    timeout=20000)
    # the history shows the finished sync
    with qtbot.waitSignal(window.history.loaded, timeout=20000):
        window.tabs.setCurrentWidget(window.history)
    assert window.history.runs_model.index(0, 2).data() == "success"


def test_switch_workspace_recent_list_and_window_state(qtbot, make_window, tmp_path, settings, workspace_url):
    window = make_window()
    second = str(tmp_path / "second.duckdb")
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        window.open_workspace(second)
    assert second in window.windowTitle()
    assert window.recent_workspaces()[:2] == [second, workspace_url]
    recent = [a.text() for a in window.recent_menu.actions()]
    assert recent[0].endswith(second) and recent[1].endswith(workspace_url)

    # back through the recent menu
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        window.recent_menu.actions()[1].trigger()
    assert window.workspace_url == workspace_url

    window.resize(1001, 643)
    window.tabs.setCurrentWidget(window.audit)
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible())

    # the next start: the same size and tab, the last workspace when none is given
    again = make_window(url=None)
    assert again.workspace_url == workspace_url
    assert again.height() == 643  # (the offscreen screen is 800 wide: restoreGeometry fits the width to it)
    assert again.tabs.currentWidget() is again.audit


def test_a_broken_workspace_shows_a_readable_message(qtbot, make_window):
    window = make_window(url="mysql://nowhere/db", wait=False)
    with qtbot.waitSignal(window.workspace_failed, timeout=20000) as blocker:
        pass
    assert "is not a workspace" in blocker.args[0]
    assert window.info.isVisible() and "Could not open the workspace" in window.info.label.text()
    assert "Traceback" not in window.info.label.text()
    assert not window.act_add.isEnabled()


def test_workspace_dialog_checks_its_input(qtbot):
    dialog = dialogs.WorkspaceDialog("duckdb:////tmp/a.duckdb")
    qtbot.addWidget(dialog)
    assert dialog.duck.isChecked() and dialog.value() == "/tmp/a.duckdb"
    qtbot.keyClicks(dialog.url, "mysql://x")
    assert dialog.pg.isChecked() and "postgresql://" in dialog.problem.text()
    dialog.url.clear()
    qtbot.keyClicks(dialog.url, "postgresql://postgres@127.0.0.1/esg")
    assert dialog.problem.text() == "" and dialog.value() == "postgresql://postgres@127.0.0.1/esg"


def test_main_actions_have_shortcuts(window):
    shortcuts = {a.text().replace("&", ""): a.shortcut() for a in (
        window.act_add, window.act_edit, window.act_test, window.act_refresh_schema, window.act_sync,
        window.act_resume, window.act_cancel, window.act_retry, window.act_verify, window.act_switch)}
    assert shortcuts["Add connector…"] == QKeySequence("Ctrl+N")
    assert shortcuts["Sync"] == QKeySequence("F9")
    assert all(not s.isEmpty() for s in shortcuts.values()), shortcuts
    assert len({s.toString() for s in shortcuts.values()}) == len(shortcuts)
