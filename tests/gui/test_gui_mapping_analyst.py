"""The mapping tab as issue 15 found it: Auto-map's message, mapping by keyboard, mappings
as files, the preview's method column, Fit that stays readable, and the toolbars at
1280x720 (the smallest supported size)."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QLabel

from tests.gui.mapping_demo import show_loaded, wait_idle, ws  # noqa: F401  (ws: a fixture)


@pytest.fixture
def panel(qtbot, ws):
    from esg_workbench.gui.mapping.panel import MappingPanel
    from esg_workbench.gui.workers import WorkerPool

    pool = WorkerPool()
    panel = MappingPanel(pool)
    show_loaded(qtbot, panel, ws)
    yield panel
    try:
        if panel.map_menu is not None:
            panel.map_menu.close()
    except RuntimeError:
        pass  # closed and deleted already
    wait_idle(qtbot, pool)
    qtbot.wait(400)  # a preview the last edit scheduled (250 ms timer) starts and ends before shutdown
    wait_idle(qtbot, pool)
    assert pool.shutdown(10000)


def add_water_table(panel):
    dialog = panel.add_table()
    dialog.stream.setCurrentText("water")
    dialog.entity.setCurrentIndex(dialog.entity.findData("water"))
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    return panel.document.mapping.tables[-1]


def test_auto_map_is_not_steered_by_another_tables_edge(panel):
    new = add_water_table(panel)
    scene = panel.scene
    edge = next(iter(scene.rows["electricity"].edges.values()))
    scene.select_item(edge)  # an edge of a fully mapped table is selected
    automap = panel.auto_map()
    assert any(table_id == new.id for table_id, _ in automap.proposals)  # the new table gets proposals
    automap.reject()

    scene.select_item(scene.rows["electricity"].entity)  # the fully mapped table itself
    automap = panel.auto_map()
    assert automap.proposals == []
    intro = automap.findChild(QLabel, "autoMapIntro")
    assert "electricity_readings → purchased_electricity: every field that a column resembles is mapped" \
        in intro.text()
    automap.reject()


def test_map_a_column_by_keyboard(qtbot, panel):
    new = add_water_table(panel)
    scene, view = panel.scene, panel.view
    view.setFocus()
    scene.clearSelection()
    qtbot.keyClick(view, Qt.Key.Key_Down)  # the first column of the first table
    first = scene.selectedItems()
    assert len(first) == 1 and first[0].name == next(iter(next(iter(scene.rows.values())).source.columns))
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert scene.selectedItems()[0] is list(next(iter(scene.rows.values())).source.columns.values())[1]

    scene.select_item(scene.column_item(new.id, "withdrawal_m3"))
    qtbot.keyClick(view, Qt.Key.Key_Return)
    menu = panel.map_menu
    assert menu is not None and menu.isVisible()
    offered = {a.data() for a in menu.actions() if a.data()}
    # the fields a drop would accept, no others
    assert offered == set(panel.document.drop_targets(new.id, "withdrawal_m3")) and "withdrawal" in offered
    entity = panel.document.catalog.entity(new.entity)
    assert {f.name for f in entity.fields} - offered  # e.g. a date field is not offered for a number
    with qtbot.waitSignal(panel.document.problems_changed, timeout=30000):
        next(a for a in menu.actions() if a.data() == "withdrawal").trigger()
    table = panel.document.mapping.table(new.id)
    assert [(e.source, e.target) for e in table.edges] == [("withdrawal_m3", "withdrawal")]
    # as a drop would: water is reported in m³ (ESRS E3-4), so m³ needs no conversion
    assert [(t.from_unit, t.to_unit) for t in table.edges[0].transforms] == []
    assert panel.document.undo_stack.undoText() == "Map withdrawal_m3 onto withdrawal"


def test_export_and_import_a_mapping_file(qtbot, panel, tmp_path):
    path = tmp_path / "sample.esgmap.json"
    with qtbot.waitSignal(panel.exported, timeout=30000):
        panel.export_file(str(path))
    data = json.loads(path.read_text())
    assert data["format"] == 1 and data["name"] == "sample_erp" and data["exported"]["version"] == 1
    assert len(data["tables"]) == len(panel.document.mapping.tables)

    data["description"] = "shared by a colleague"
    path.write_text(json.dumps(data))
    said: list[str] = []
    panel.message.connect(said.append)
    with qtbot.waitSignal(panel.imported, timeout=30000):
        panel.import_file(str(path))
    qtbot.waitUntil(lambda: panel.document.mapping is not None and panel.document.mapping.version == 2,
                    timeout=30000)
    assert panel.document.mapping.description == "shared by a colleague"
    assert any("Imported 'sample_erp' as version 2 from sample.esgmap.json" in m for m in said)

    for content, words in (("not json {", "is not a mapping file: it is not JSON"),
                           ('{"rows": []}', "is JSON, but not an ESG Workbench mapping"),
                           (json.dumps({**data, "format": 99}), "mapping format 99")):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with qtbot.waitSignal(panel.message, timeout=30000) as said:
            panel.import_file(str(bad))
        assert words in said.args[0]
    assert panel.document.mapping.version == 2  # nothing was saved from the bad files


def test_preview_shows_the_method_and_fit_stays_readable(qtbot, panel):
    from esg_workbench.gui.mapping.preview import COLUMNS
    from esg_workbench.gui.mapping.view import READABLE_ZOOM

    assert "method" in COLUMNS and panel.preview.model.columns == COLUMNS
    panel.view.fit()
    assert panel.view.zoom >= READABLE_ZOOM
    assert panel.zoom_label.text() == f"{panel.view.zoom * 100:.0f} %"


def test_toolbars_keep_their_actions_at_1280_by_720(qtbot, window):
    window.resize(1280, 720)
    window.tabs.setCurrentWidget(window.mapping)
    bar = window.mapping.toolbar
    qtbot.waitUntil(lambda: bar.widgetForAction(window.mapping.act_apply).isVisible(), timeout=5000)
    for act in (window.mapping.act_save, window.mapping.act_apply, window.mapping.act_automap,
                window.mapping.act_fit):
        assert bar.widgetForAction(act).isVisible(), act.text()
    assert window.mapping.findChild(type(bar.widgetForAction(window.mapping.act_apply)), "mappingMore").isVisible()
    assert bar.sizeHint().width() <= bar.width()
    window.tabs.setCurrentWidget(window.kpis)
    qtbot.waitUntil(lambda: window.kpis.xlsx_button.isVisible(), timeout=5000)
    assert window.kpis.csv_button.isVisible() and window.kpis.drill_button.isVisible()
    main = window.findChild(type(bar), "mainToolbar")
    assert all(main.widgetForAction(a).isVisible() for a in main.actions() if not a.isSeparator())


def test_source_nodes_widen_for_long_column_names(qtbot):
    from PySide6.QtGui import QFontMetricsF

    from esg_workbench.gui.mapping import items as it

    short = {"id": "number", "kwh": "number"}
    assert it.source_width(short) == it.SOURCE_W
    long_name = "monthly_consumption_kwh_adjusted_for_meter_swap"
    width = it.source_width({**short, long_name: "number"})
    assert it.SOURCE_W < width < it.MAX_SOURCE_W
    # the room paint_text gives the name at that width holds it whole
    room = width - 26 - QFontMetricsF(it._font(8)).horizontalAdvance("number") - 20
    assert it._elide(long_name, it._font(9), room) == long_name
    assert it.source_width({"x" * 400: "text"}) == it.MAX_SOURCE_W  # capped: elided, whole in the tooltip
