"""What a new analyst trips over (issue 15): screens that go stale, the connector
dialog's tab order and its errors, the schema filter that finds what is not loaded yet,
icons that say what they do."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractSpinBox, QWidget

from esg_workbench.gui.schema_browser import KIND
from tests.gui.conftest import add_connector, ok_button, open_dialog


def _named(model, parent, name):
    for r in range(model.rowCount(parent)):
        index = model.index(r, 0, parent)
        if index.data() == name:
            return index
    raise AssertionError(f"{name} not under {parent.data()}")


def test_views_follow_a_connector_as_it_changes(qtbot, window, source, pg_conn):
    assert "This workspace is empty" in window.info.label.text()
    add_connector(qtbot, window, source, "erp")
    assert not window.info.isVisible()  # the empty-workspace notice went with the first connector

    # Sync tab: never discovered yet ...
    sync = window.sync
    qtbot.waitUntil(lambda: sync.status is not None, timeout=20000)
    assert sync.tables.item(0).text().startswith("Not discovered yet")
    assert sync.load_type.itemText(0) == "Connector setting (full)"

    # ... a discovery (Refresh schema with the connector chosen in the list, nothing picked
    # in the tree) fills its table list without a restart
    window.schema.tree.setCurrentIndex(window.schema.proxy.index(-1, -1))
    with qtbot.waitSignal(window.schema.refreshed, timeout=30000):
        window.act_refresh_schema.trigger()
    qtbot.waitUntil(lambda: sync.tables.count() == 2, timeout=20000)
    assert [sync.tables.item(i).data(Qt.ItemDataRole.UserRole) for i in range(2)] == \
        ["public.energy_use", "public.sites"]

    # a new source table is reported as new, not as "no change"
    pg_conn.execute("CREATE TABLE waste (id int PRIMARY KEY, kg numeric)")
    with qtbot.waitSignal(window.schema.refreshed, timeout=30000):
        window.act_refresh_schema.trigger()
    assert "1 new: public.waste" in window.schema.status.text()
    assert "no change" not in window.schema.status.text()
    qtbot.waitUntil(lambda: sync.tables.count() == 3, timeout=20000)

    # an edit of the load type shows in the Sync tab at once
    dialog = open_dialog(qtbot, window, window.act_edit)
    dialog.load_type.setCurrentIndex(dialog.load_type.findData("delta"))
    qtbot.keyClicks(dialog.cursor_field, "updated_at")
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: sync.load_type.itemText(0) == "Connector setting (delta)", timeout=20000)


def _tab_chain(dialog, start: QWidget, count: int) -> list[QWidget]:
    chain, widget = [start], start
    while len(chain) < count:
        widget = widget.nextInFocusChain()
        inner = isinstance(widget.parent(), QAbstractSpinBox)  # a spin box's own line edit: the same stop
        if widget.focusPolicy() & Qt.FocusPolicy.TabFocus and widget.isVisibleTo(dialog) and widget.isEnabled() \
                and not inner:
            chain.append(widget)
    return chain


def test_connector_dialog_tabs_down_the_form_and_keeps_values_out_of_errors(qtbot, window):
    dialog = open_dialog(qtbot, window, window.act_add)
    dialog.type.setCurrentText("postgres")
    f = dialog._fields
    qtbot.waitUntil(lambda: f["host"].isVisibleTo(dialog))
    expected = [dialog.name, dialog.type, f["host"], f["port"], f["database"], f["schema"], f["username"],
                dialog.password, dialog.load_type, dialog.cursor_field, dialog.chunk_strategy, dialog.window,
                dialog.chunk_size, dialog.lookback]
    chain = _tab_chain(dialog, dialog.name, len(expected))
    assert [w.objectName() or type(w).__name__ for w in chain] == \
        [w.objectName() or type(w).__name__ for w in expected]
    assert chain == expected

    # nothing touched: no error shown, though the form is incomplete
    assert dialog.validation_problems() and dialog.problems.isHidden() and not f["host"].styleSheet()
    # a password typed into Look-back: the error names the field, not what was typed
    qtbot.keyClicks(dialog.lookback, "s3cret-pw")
    assert "Look-back must be a duration" in dialog.problems.text()
    assert "s3cret-pw" not in dialog.problems.text() and "s3cret-pw" not in dialog.lookback.toolTip()
    assert "Host is required" not in dialog.problems.text()  # host was not touched yet
    # Save shows every problem and puts the cursor in the first field to fix
    dialog.activateWindow()
    qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    assert dialog.isVisible()
    text = dialog.problems.text()
    assert "Give the connector a name" in text and "Host is required" in text and "Database is required" in text
    assert f["host"].styleSheet() and dialog.name.styleSheet()
    dialog.reject()

    # the type's rows are rebuilt on a type change: the order follows them
    dialog = open_dialog(qtbot, window, window.act_add)
    dialog.type.setCurrentText("files")
    qtbot.waitUntil(lambda: dialog._fields["path"].isVisibleTo(dialog))  # (new rows show on the next turn)
    chain = _tab_chain(dialog, dialog.name, 4)
    assert chain[2] is dialog._fields["path"] and chain[3].text() == "Browse…"
    dialog.reject()


def test_schema_filter_finds_columns_not_loaded_and_opens_the_tree(qtbot, window, source):
    add_connector(qtbot, window, source, "erp")
    from esg_workbench.sync import operations

    operations.discover_connector(window.workspace, "erp")
    browser = window.schema
    window.tabs.setCurrentWidget(browser)
    assert browser.connector_item("erp").data(Qt.ItemDataRole.UserRole + 3) is None  # nothing loaded yet

    with qtbot.waitSignal(browser.revealed, timeout=30000) as blocker:
        qtbot.keyClicks(browser.filter, "kwh")  # a column of energy_use
    assert blocker.args == [1]
    proxy, tree = browser.proxy, browser.tree
    erp = _named(proxy, tree.rootIndex(), "erp")
    energy = _named(proxy, _named(proxy, erp, "public"), "energy_use")
    assert tree.isExpanded(erp) and tree.isExpanded(energy)
    kwh = _named(proxy, energy, "kwh")  # shown, and only the matching column
    assert proxy.rowCount(energy) == 1 and kwh.data(Qt.ItemDataRole.UserRole + 1) == "column"
    assert "1 table(s) match 'kwh'" in browser.status.text()

    browser.filter.clear()
    qtbot.waitUntil(lambda: proxy.rowCount(_named(proxy, _named(proxy, _named(proxy, tree.rootIndex(), "erp"),
                                                                 "public"), "energy_use")) == 7)
    # type icons: a number, a text and a timestamp column look different
    energy = _named(proxy, _named(proxy, _named(proxy, tree.rootIndex(), "erp"), "public"), "energy_use")
    keys = {name: _named(proxy, energy, name).data(Qt.ItemDataRole.DecorationRole).cacheKey()
            for name in ("id", "kwh", "note", "updated_at")}
    assert len(set(keys.values())) == 4
    with qtbot.waitSignal(browser.revealed, timeout=30000) as blocker:
        qtbot.keyClicks(browser.filter, "zzz_nothing")
    assert blocker.args == [0] and "Nothing discovered matches" in browser.status.text()
    assert browser.connector_item("erp").child(0).data(KIND) == "schema"


def test_icons_are_distinct_and_icon_buttons_are_named(window):
    assert window.act_test.icon().cacheKey() != window.act_verify.icon().cacheKey()
    bar = window.connectors.toolbar
    for act in bar.actions():
        button = bar.widgetForAction(act)
        assert button.accessibleName() and button.toolTip(), act.text()
    assert {bar.widgetForAction(a).accessibleName() for a in bar.actions()} >= {
        "Add connector", "Edit connector", "Test connection"}


def test_data_grid_sorts_naturally_filters_and_keeps_null_apart(qtbot):
    from decimal import Decimal

    from esg_workbench.gui.data_grid import DataGrid
    from esg_workbench.gui.sample_model import EMPTY_TIP, NULL_TEXT, RIGHT, RecordsModel

    rows = [{"key": "row 10", "amount": "10.5", "note": ""}, {"key": "row 9", "amount": None, "note": None},
            {"key": "row 100", "amount": "2", "note": "x"}, {"key": "row 1", "amount": Decimal("-3"), "note": "y"}]
    model = RecordsModel(rows)
    grid = DataGrid(model, "testGrid")
    qtbot.addWidget(grid)
    grid.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    assert [grid.proxy.index(r, 0).data() for r in range(4)] == ["row 1", "row 9", "row 10", "row 100"]
    grid.view.sortByColumn(1, Qt.SortOrder.AscendingOrder)  # numbers as numbers (text "10.5" > "2"), NULL first
    assert [grid.proxy.index(r, 1).data() for r in range(4)] == [NULL_TEXT, "-3", "2", "10.5"]
    # the amount column is numeric (text DECIMALs too): right-aligned; text is not
    assert grid.proxy.index(3, 1).data(Qt.ItemDataRole.TextAlignmentRole) == RIGHT
    assert grid.proxy.index(3, 0).data(Qt.ItemDataRole.TextAlignmentRole) is None
    # NULL and empty text look different
    null = model.index(1, 2)
    empty = model.index(0, 2)
    assert null.data() == NULL_TEXT and null.data(Qt.ItemDataRole.FontRole).italic()
    assert empty.data() == "" and empty.data(Qt.ItemDataRole.ToolTipRole) == EMPTY_TIP
    assert empty.data(Qt.ItemDataRole.FontRole) is None
    with qtbot.waitSignal(grid.filtered, timeout=5000) as shown:
        qtbot.keyClicks(grid.filter, "ROW 1")
    assert shown.args == [3]  # row 1, row 10, row 100
    assert grid.count.text() == "3 of 4 rows"


def test_progress_counts_every_planned_table_and_eta_uses_the_rate():
    from esg_workbench.gui.sync_jobs import Figures

    # the case: 12 of the first table's 54 chunks done, two more tables to come
    f = Figures(planned={"erp.meter_readings": 540_000, "erp.sites": 100_000, "erp.travel": None})
    f.per_stream["erp.meter_readings"] = (12, 54, 0)
    f.rows_read = f.rows_written = 120_000
    f.elapsed = 10.0
    # by rows over all three tables (the unknown one weighs as the mean of the known): 12.5 %,
    # not 22 % (12/54 of the one table begun)
    assert round(f.fraction, 4) == 0.125
    assert round(f.eta) == 70  # an estimate is missing: time so far scaled by what is left
    f.planned["erp.travel"] = 320_000
    assert round(f.eta) == 70  # (960,000 - 120,000) rows left at 12,000 rows/s
    f.planned = {"erp.meter_readings": 540_000, "erp.sites": 100_000}
    assert round(f.fraction, 4) == 0.1875 and round(f.eta, 1) == round(520_000 / 12_000, 1)
    # without a plan (a scheduled sync): the old rule, by the streams begun
    g = Figures(streams_total=None)
    g.per_stream["x"] = (1, 2, 0)
    assert g.fraction == 0.5


def test_cancel_shows_what_it_waits_for(qtbot, window, source):
    from esg_workbench.sync import operations

    add_connector(qtbot, window, source, "erp", chunk_size=500, chunk_strategy="id")
    operations.discover_connector(window.workspace, "erp")
    panel = window.sync
    window.tabs.setCurrentWidget(panel)
    with qtbot.waitSignal(panel.status_loaded, timeout=20000):
        panel.refresh_status()
    qtbot.mouseClick(panel.sync_button, Qt.MouseButton.LeftButton)
    job = window.jobs.job("erp")
    assert set(job.figures.planned) == {"public.energy_use", "public.sites"}  # progress counts both
    qtbot.waitUntil(lambda: job.figures.per_stream.get("public.energy_use", (0,))[0] >= 2, timeout=30000)
    with qtbot.waitSignal(window.jobs.ended, timeout=60000):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
        panel._show_figures()  # (the worker's end arrives through the event loop: still cancelling here)
        assert "cancelling (" in panel.progress.format() and panel.cancel_button.text().startswith("Cancelling…")
        assert "chunk being written" in panel.cancel_button.toolTip()
        job.cancel()  # a second Cancel (Esc) is answered in the log
        assert job.log[-1].split("  ", 1)[1].startswith("Still cancelling after")
    assert job.result.status.value == "cancelled"
    assert panel.cancel_button.text() == "&Cancel"


def test_export_dialogs_remember_the_last_folder(qtbot, window, tmp_path, monkeypatch):
    from pathlib import Path

    from esg_workbench.gui import kpi_panel

    folder = tmp_path / "reports"
    folder.mkdir()
    suggested: list[str] = []

    def save_dialog(parent, title, path, filters):
        suggested.append(path)
        return str(folder / "kpis.csv"), filters

    monkeypatch.setattr(kpi_panel.QFileDialog, "getSaveFileName", save_dialog)
    monkeypatch.setattr(window.kpis, "export", lambda path, kind=None: None)  # (the dialog is what is tested)
    window.kpis._ask_export("csv")
    assert Path(suggested[0]).parent == Path.home()  # first time: the home folder
    window.kpis._ask_export("xlsx")
    assert Path(suggested[1]).parent == folder and suggested[1].endswith(".xlsx")
    assert window.settings.value("folders/kpi_export") == str(folder)  # kept for the next start


def test_changes_made_elsewhere_show_without_a_restart(qtbot, window, source):
    """Another window or process adds and edits connectors: this window follows."""
    from esg_workbench.sync import operations

    window.watch.setInterval(100)
    ws = window.workspace
    operations.add_connector(ws, "elsewhere", "postgres", {"host": source["host"], "port": source["port"],
                                                           "database": source["database"]})
    qtbot.waitUntil(lambda: window.connectors.names() == ["elsewhere"], timeout=20000)
    assert not window.info.isVisible()  # not empty any more
    window.connectors.select("elsewhere")
    sync = window.sync
    qtbot.waitUntil(lambda: sync.load_type.count() and sync.load_type.itemText(0) == "Connector setting (full)",
                    timeout=20000)
    operations.update_connector(ws, "elsewhere", {"host": source["host"], "port": source["port"],
                                                  "database": source["database"], "load_type": "delta",
                                                  "cursor_field": "updated_at"})
    qtbot.waitUntil(lambda: sync.load_type.itemText(0) == "Connector setting (delta)", timeout=20000)
    operations.discover_connector(ws, "elsewhere")
    qtbot.waitUntil(lambda: sync.tables.count() == 2 and sync.tables.item(0).data(Qt.ItemDataRole.UserRole)
                    == "public.energy_use", timeout=20000)


def test_switch_workspace_refuses_a_typo_unless_a_new_one_is_asked_for(qtbot, tmp_path):
    from esg_workbench.gui import dialogs
    from esg_workbench.workspace import open_workspace

    existing = tmp_path / "esg.duckdb"
    open_workspace(str(existing)).close()
    dialog = dialogs.WorkspaceDialog(str(existing))
    qtbot.addWidget(dialog)
    open_button = dialog.buttons.button(dialog.buttons.StandardButton.Open)
    assert dialog.problem.text() == "" and open_button.isEnabled()

    for typo, words in ((tmp_path / "Reprots" / "esg.duckdb", "There is no folder"),
                        (tmp_path / "esgg.duckdb", "There is no workspace at this path"),
                        (tmp_path, "is a folder")):
        dialog.path.clear()
        qtbot.keyClicks(dialog.path, str(typo))
        assert words in dialog.problem.text() and not open_button.isEnabled(), typo
    dialog.path.clear()
    qtbot.keyClicks(dialog.path, str(tmp_path / "new" / "team.duckdb"))
    dialog.create.setChecked(True)  # asked for: allowed, and said what will happen
    assert dialog.problem.text() == "" and open_button.isEnabled()
    assert "A new, empty workspace will be created, with the folder" in dialog.note.text()
