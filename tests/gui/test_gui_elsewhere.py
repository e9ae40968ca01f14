"""The Schema and Mapping tabs follow changes made in another window or process on the
same workspace (issue 15): the window's watch (every WATCH_MS, 100 ms here) merges a
discovery made elsewhere into the open schema tree without closing what the analyst
opened, and offers a mapping version saved elsewhere without losing unsaved edits."""

from __future__ import annotations

from PySide6.QtCore import Qt

from esg_workbench.gui.schema_browser import KIND
from tests.gui.mapping_demo import copy_demo, wait_idle


def _named(model, parent, name):
    for r in range(model.rowCount(parent)):
        index = model.index(r, 0, parent)
        if index.data() == name:
            return index
    raise AssertionError(f"{name} not under {parent.data()}: "
                         f"{[model.index(r, 0, parent).data() for r in range(model.rowCount(parent))]}")


def _names(model, parent) -> list[str]:
    return [model.index(r, 0, parent).data() for r in range(model.rowCount(parent))]


def test_schema_tab_merges_a_discovery_made_in_another_window(qtbot, make_window, source, pg_conn):
    from esg_workbench.sync import operations

    first = make_window()
    operations.add_connector(first.workspace, "erp", "postgres", {
        "host": source["host"], "port": source["port"], "database": source["database"], "schema": "public",
        "username": source["user"]})
    first.watch.setInterval(100)
    qtbot.waitUntil(lambda: first.connectors.names() == ["erp"], timeout=20000)
    first.connectors.select("erp")
    browser = first.schema
    tree, proxy = browser.tree, browser.proxy

    # the analyst opens erp / public / energy_use and selects its column kwh
    with qtbot.waitSignal(browser.level_loaded, timeout=60000, check_params_cb=lambda k: k == "schema"):
        tree.expand(proxy.index(0, 0))  # discovers (first time), then opens the one schema
    public = proxy.index(0, 0, proxy.index(0, 0))
    assert _names(proxy, public) == ["energy_use", "sites"]
    energy = _named(proxy, public, "energy_use")
    with qtbot.waitSignal(browser.level_loaded, timeout=20000):
        tree.expand(energy)
    tree.setCurrentIndex(_named(proxy, energy, "kwh"))
    columns_before = _names(proxy, energy)

    # another window on the same workspace re-discovers after the source changed
    pg_conn.execute("CREATE TABLE waste (id int PRIMARY KEY, kg numeric)")
    pg_conn.execute("ALTER TABLE energy_use ADD COLUMN co2_kg numeric")
    second = make_window(first.workspace_url)
    second.connectors.select("erp")
    with qtbot.waitSignal(second.schema.refreshed, timeout=60000):
        second.act_refresh_schema.trigger()

    # the first window merges it in place: the new table and column appear, the drift is
    # marked, and energy_use stays open with kwh still selected
    qtbot.waitUntil(lambda: "waste" in _names(proxy, proxy.index(0, 0, proxy.index(0, 0))), timeout=20000)
    public = proxy.index(0, 0, proxy.index(0, 0))
    energy = _named(proxy, public, "energy_use")
    qtbot.waitUntil(lambda: "co2_kg" in _names(proxy, energy), timeout=20000)
    assert _names(proxy, public) == ["energy_use", "sites", "waste"]
    assert tree.isExpanded(proxy.index(0, 0)) and tree.isExpanded(public) and tree.isExpanded(energy)
    assert sorted(_names(proxy, energy)) == sorted(columns_before + ["co2_kg"])
    assert tree.currentIndex().data() == "kwh" and tree.currentIndex().parent() == energy
    assert "changed" in energy.siblingAtColumn(4).data()  # the drift note
    added = _named(proxy, energy, "co2_kg")
    assert added.siblingAtColumn(4).data() == "new column"
    qtbot.waitUntil(lambda: "another window or process: 1 new: waste; 1 changed: energy_use"
                    in browser.status.text(), timeout=20000)
    waste = _named(proxy, public, "waste")
    assert waste.data(KIND) == "table" and not tree.isExpanded(waste)

    # a table dropped at the source goes at the next discovery made elsewhere; nothing
    # else moves (the tree is not reloaded once a change is merged)
    pg_conn.execute("DROP TABLE waste")
    operations.discover_connector(second.workspace, "erp")
    qtbot.waitUntil(lambda: _names(proxy, proxy.index(0, 0, proxy.index(0, 0))) == ["energy_use", "sites"],
                    timeout=20000)
    assert tree.currentIndex().data() == "kwh"
    wait_idle(qtbot, first.pool)
    qtbot.wait(300)  # a few more looks find nothing new: no merge runs again
    qtbot.waitUntil(lambda: not browser._merging, timeout=20000)

    # this window's own Refresh merges the same way: what is open stays open
    pg_conn.execute("ALTER TABLE energy_use ADD COLUMN water_m3 numeric")
    assert first.act_refresh_schema.isEnabled()
    with qtbot.waitSignal(browser.refreshed, timeout=60000):
        first.act_refresh_schema.trigger()
    energy = _named(proxy, proxy.index(0, 0, proxy.index(0, 0)), "energy_use")
    assert "water_m3" in _names(proxy, energy) and tree.isExpanded(energy)
    assert tree.currentIndex().data() == "kwh"


def test_mapping_tab_offers_a_version_saved_elsewhere_and_keeps_unsaved_edits(
        qtbot, make_window, tmp_path_factory, tmp_path, answers):
    from esg_workbench.mapping import store

    url = f"duckdb:///{copy_demo(tmp_path_factory, tmp_path / 'ws.duckdb')}"
    mine = make_window(url)
    panel = mine.mapping
    qtbot.waitUntil(lambda: panel.document.mapping is not None and panel.document.mapping.version == 1,
                    timeout=60000)
    mine.watch.setInterval(100)
    mine.tabs.setCurrentWidget(panel)
    ws = mine.workspace

    # 1. no unsaved edits: a version saved by another process is offered, not forced
    theirs = store.load_mapping(ws, "sample_erp")
    theirs.table("electricity").edges = [e for e in theirs.table("electricity").edges if e.id != "electricity-meter"]
    store.save_mapping(ws, theirs, author="bob", comment="meters are not needed")
    qtbot.waitUntil(lambda: panel.info.isVisible() and "saved as v2" in panel.info.label.text(), timeout=20000)
    assert panel.document.mapping.version == 1  # nothing reloaded behind the analyst's back
    qtbot.waitUntil(lambda: "of v2" in panel.combo.currentText(), timeout=20000)
    with qtbot.waitSignal(panel.loaded, timeout=30000):
        panel.info.buttons[0].click()  # Reload v2
    assert panel.document.mapping.version == 2 and not panel.document.modified
    assert panel.document.mapping.table("electricity").edge("electricity-meter") is None

    # 2. unsaved edits here, a save in another window: reloading re-applies the edits on
    # top of the newer version; nothing is lost on either side
    second = make_window(url)
    other = second.mapping
    second.tabs.setCurrentWidget(other)
    qtbot.waitUntil(lambda: other.document.mapping is not None and other.document.mapping.version == 2,
                    timeout=60000)
    edited = panel.document.mapping
    table_ids = [t.id for t in edited.tables]
    mine_table, their_table = table_ids[0], table_ids[-1]
    _label(panel.document, mine_table, "edited here")
    assert panel.document.modified
    _label(other.document, their_table, "edited there")
    with qtbot.waitSignal(other.saved, timeout=30000):
        other.save_version("from the other window")
    qtbot.waitUntil(lambda: panel.info.isVisible() and "saved as v3" in panel.info.label.text(), timeout=20000)
    assert "with my edits" in panel.info.buttons[0].text()
    assert panel.document.modified and panel.document.mapping.version == 2  # still the analyst's canvas

    # Save now would replace v3's change: it asks first; "Cancel" keeps everything as it is
    answers["answers"] = [False]
    panel.save_version("mine")
    qtbot.waitUntil(lambda: bool(answers["asked"]), timeout=20000)
    assert "v3" in answers["asked"][0][1] and "replaces" in answers["asked"][0][1]
    wait_idle(qtbot, mine.pool)
    assert store.history(ws, "sample_erp")[0]["version"] == 3 and panel.document.modified

    with qtbot.waitSignal(panel.loaded, timeout=30000):
        panel.info.buttons[0].click()  # Reload v3 with my edits
    m = panel.document.mapping
    assert m.version == 3 and panel.document.modified
    assert m.table(mine_table).label == "edited here" and m.table(their_table).label == "edited there"
    assert "re-applied" in panel.info.label.text()
    with qtbot.waitSignal(panel.saved, timeout=30000):
        panel.save_version("both")
    saved = store.load_mapping(ws, "sample_erp")
    assert saved.version == 4
    assert saved.table(mine_table).label == "edited here" and saved.table(their_table).label == "edited there"
    # and the other window is offered v4 in turn
    second.watch.setInterval(100)
    qtbot.waitUntil(lambda: other.info.isVisible() and "saved as v4" in other.info.label.text(), timeout=20000)


def _label(document, table_id: str, text: str) -> None:
    """Rename a table mapping through the document's undoable edit (as the table editor does)."""
    from esg_workbench.mapping.model import SetTable

    document.edit(SetTable(table_id, "label", text), "Set the table's label")


def test_rebase_reapplies_edits_and_names_conflicts():
    from esg_workbench.gui.mapping.freshness import rebase
    from esg_workbench.mapping.model import Edge, Mapping, TableMapping

    base = Mapping("m", "erp", tables=[TableMapping("a", "energy", id="t1"), TableMapping("b", "waste", id="t2"),
                                       TableMapping("c", "water", id="t3")])
    base.version = 1
    mine, theirs = base.copy(), base.copy()
    mine.table("t1").edges.append(Edge("kwh", "kwh", id="e1"))  # mine only
    mine.table("t3").label = "mine"  # both
    mine.tables.append(TableMapping("d", "travel", id="t4"))  # added by me
    theirs.table("t2").label = "theirs"  # theirs only
    theirs.table("t3").label = "theirs"
    theirs.description = "changed there"
    theirs.version = 2
    merged, conflicts = rebase(base, mine, theirs)
    assert merged.version == 2 and merged.description == "changed there"
    assert [t.id for t in merged.tables] == ["t1", "t2", "t3", "t4"]
    assert merged.table("t1").edge("e1") is not None and merged.table("t2").label == "theirs"
    assert merged.table("t3").label == "mine" and conflicts == ["c → water"]
