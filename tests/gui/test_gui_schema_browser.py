"""The schema browser: lazy levels, key icons, row estimates, filter, samples that
never crash on odd values, Refresh that highlights drift; and the sample grid model."""

from __future__ import annotations

import datetime as dt
import decimal

from PySide6.QtCore import Qt

from esg_workbench.gui.sample_model import DISPLAY_ERROR, NULL_TEXT, RecordsModel
from esg_workbench.gui.schema_browser import KIND, SchemaBrowser
from tests.gui.conftest import SOURCE_ROWS, add_connector


def _children(model, index):
    return [model.index(r, 0, index) for r in range(model.rowCount(index))]


def _named(model, parent, name):
    for index in _children(model, parent):
        if index.data() == name:
            return index
    raise AssertionError(f"{name} not under {parent.data()}: {[i.data() for i in _children(model, parent)]}")


def expand_to_tables(qtbot, window, connector="erp"):
    browser: SchemaBrowser = window.schema
    tree, proxy = browser.tree, browser.proxy
    window.tabs.setCurrentWidget(browser)
    top = _named(proxy, tree.rootIndex(), connector)
    # expanding the connector discovers the source; its only schema opens by itself
    with qtbot.waitSignal(browser.level_loaded, timeout=30000, check_params_cb=lambda k: k == "schema"):
        tree.expand(top)
    top = _named(proxy, tree.rootIndex(), connector)  # model indexes go stale when rows arrive
    schema = _named(proxy, top, "public")
    assert tree.isExpanded(schema)
    return top, schema


def test_browse_levels_and_samples(qtbot, window, source):
    add_connector(qtbot, window, source, "erp")
    browser = window.schema
    proxy, tree = browser.proxy, browser.tree
    top, schema = expand_to_tables(qtbot, window)
    assert [i.data() for i in _children(proxy, schema)] == ["energy_use", "sites"]
    energy = _named(proxy, schema, "energy_use")
    estimate = int(energy.siblingAtColumn(3).data().replace(",", ""))
    assert abs(estimate - SOURCE_ROWS) < SOURCE_ROWS * 0.2
    assert "key id" in energy.siblingAtColumn(4).data()

    # the columns level, with types, nullability and a key icon on the primary key
    with qtbot.waitSignal(browser.level_loaded, timeout=20000, check_params_cb=lambda k: k == "table"):
        tree.expand(energy)
    energy = _named(proxy, _named(proxy, _named(proxy, tree.rootIndex(), "erp"), "public"), "energy_use")
    columns = {i.data(): i for i in _children(proxy, energy)}
    assert list(columns) == ["id", "site_id", "kwh", "updated_at", "note", "payload", "raw"]
    assert columns["id"].siblingAtColumn(2).data() == "NOT NULL"
    assert columns["note"].siblingAtColumn(2).data() == "NULL"
    assert columns["kwh"].siblingAtColumn(1).data().upper().startswith("NUMERIC(14, 3)")
    assert columns["id"].siblingAtColumn(4).data() == "primary key"
    assert not columns["id"].data(Qt.ItemDataRole.DecorationRole).isNull()

    # selecting the table loads its sample rows into the grid; odd values render
    with qtbot.waitSignal(browser.samples_loaded, timeout=20000) as blocker:
        tree.setCurrentIndex(energy)
    assert blocker.args == ["public.energy_use", 100]
    grid = browser.samples
    assert grid.columns == ["id", "site_id", "kwh", "updated_at", "note", "payload", "raw"]
    texts = {grid.headerData(c, Qt.Orientation.Horizontal): grid.index(6, c).data() for c in range(grid.columnCount())}
    assert texts["id"] == "7" and texts["note"] == NULL_TEXT  # row 7 has no note
    assert grid.index(0, 4).data() == "line 1 ⏎ second line"
    assert grid.index(0, 6).data().startswith("0x")
    assert '"tags"' in grid.index(0, 5).data()
    assert "Sample rows of erp / public.energy_use" in browser.sample_title.text()

    # the filter keeps matching tables (and their parents)
    qtbot.keyClicks(browser.filter, "sites")
    qtbot.waitUntil(lambda: [i.data() for i in _children(proxy, _named(proxy, tree.rootIndex(), "erp"))
                             ] == ["public"] and [i.data() for i in _children(
                                 proxy, _named(proxy, _named(proxy, tree.rootIndex(), "erp"), "public"))] == ["sites"])
    browser.filter.clear()
    qtbot.waitUntil(lambda: proxy.rowCount(_named(proxy, _named(proxy, tree.rootIndex(), "erp"), "public")) == 2)


def test_refresh_highlights_drift(qtbot, window, source, pg_conn):
    add_connector(qtbot, window, source, "erp")
    browser = window.schema
    top, schema = expand_to_tables(qtbot, window)
    pg_conn.execute("ALTER TABLE energy_use ADD COLUMN co2_kg numeric(10,2)")
    pg_conn.execute("ALTER TABLE energy_use DROP COLUMN raw")

    browser.tree.setCurrentIndex(top)
    with qtbot.waitSignal(browser.refreshed, timeout=30000) as blocker:
        qtbot.mouseClick(browser.refresh_button, Qt.MouseButton.LeftButton)
    name, drift = blocker.args
    assert name == "erp" and set(drift) == {"public.energy_use"}
    assert "added co2_kg" in browser.status.text() and "dropped raw" in browser.status.text()

    # the reopened tree marks the changed table and its new column
    proxy, tree = browser.proxy, browser.tree
    qtbot.waitUntil(lambda: browser.connector_item("erp").child(0) is not None
                    and browser.connector_item("erp").child(0).data(KIND) == "schema"
                    and browser.connector_item("erp").child(0).data(Qt.ItemDataRole.UserRole + 3) == "loaded",
                    timeout=20000)
    top = _named(proxy, tree.rootIndex(), "erp")
    schema = _named(proxy, top, "public")
    energy = _named(proxy, schema, "energy_use")
    assert "changed: added co2_kg; dropped raw" in energy.siblingAtColumn(4).data()
    assert energy.data(Qt.ItemDataRole.BackgroundRole) is not None
    assert _named(proxy, schema, "sites").data(Qt.ItemDataRole.BackgroundRole) is None
    with qtbot.waitSignal(browser.level_loaded, timeout=20000, check_params_cb=lambda k: k == "table"):
        tree.expand(energy)
    energy = _named(proxy, _named(proxy, _named(proxy, tree.rootIndex(), "erp"), "public"), "energy_use")
    columns = {i.data(): i for i in _children(proxy, energy)}
    assert columns["co2_kg"].siblingAtColumn(4).data() == "new column"
    assert "dropped: raw" in columns


class Unprintable:
    def __str__(self):
        raise RuntimeError("no")

    __repr__ = __str__


def test_sample_model_never_crashes_on_odd_values(qtmodeltester):
    rows = [
        {"a": None, "b": float("nan"), "c": b"\x00\xff" * 40, "d": {"x": [1, 2]}, "e": "x" * 500},
        {"a": Unprintable(), "b": decimal.Decimal("1.10"), "c": dt.datetime(2024, 1, 1), "d": True, "e": "\x00\r\n"},
        {"unexpected": 1},  # a ragged row: missing columns show as NULL
        ("not", "a", "dict"),
    ]
    model = RecordsModel(rows, ["a", "b", "c", "d", "e"])
    qtmodeltester.check(model)
    assert model.index(0, 0).data() == NULL_TEXT
    assert model.index(0, 1).data() == "nan"
    assert model.index(0, 2).data().startswith("0x00ff") and model.index(0, 2).data().endswith("…")
    assert model.index(0, 3).data() == '{"x": [1, 2]}'
    assert len(model.index(0, 4).data()) == 120 and len(model.index(0, 4).data(Qt.ItemDataRole.ToolTipRole)) == 500
    assert model.index(1, 0).data() == DISPLAY_ERROR
    assert model.index(1, 3).data() == "true"
    assert model.index(2, 0).data() == NULL_TEXT
    assert model.index(3, 0).data() == "not"
    assert model.index(3, 4).data() == NULL_TEXT  # beyond the tuple


def test_sample_model_pages(qtmodeltester):
    model = RecordsModel([{"n": i} for i in range(1050)], page_size=500)
    assert model.rowCount() == 500 and model.canFetchMore()
    model.fetchMore()
    model.fetchMore()
    assert model.rowCount() == 1050 and not model.canFetchMore()
    assert model.index(1049, 0).data() == "1049"
    qtmodeltester.check(model)


def test_random_samples_setting(qtbot, window, source):
    """The discovery setting: a random sample of a chosen size instead of the first rows."""
    add_connector(qtbot, window, source, "erp")
    browser = window.schema
    proxy, tree = browser.proxy, browser.tree
    _, schema = expand_to_tables(qtbot, window)
    energy = _named(proxy, schema, "energy_use")
    with qtbot.waitSignal(browser.samples_loaded, timeout=20000):
        tree.setCurrentIndex(energy)
    first_ids = [browser.samples.index(r, 0).data() for r in range(browser.samples.rowCount())]
    assert first_ids[:20] == [str(i) for i in range(1, 21)]
    browser.sample_size.setValue(20)
    with qtbot.waitSignal(browser.samples_loaded, timeout=20000) as blocker:
        browser.sample_mode.setCurrentIndex(browser.sample_mode.findData("random"))
    assert blocker.args == ["public.energy_use", 20]
    ids = [browser.samples.index(r, 0).data() for r in range(browser.samples.rowCount())]
    assert len(set(ids)) == 20 and ids != [str(i) for i in range(1, 21)]
    assert all(1 <= int(i) <= SOURCE_ROWS for i in ids)
