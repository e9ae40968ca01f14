"""The mapping canvas on the real demo data: drag a column onto a field with the mouse
(incompatible fields greyed meanwhile), undo and redo, replace and delete edges, edit a
transform and watch the preview, auto-map, fix a validation error by clicking it, save
versions and reopen an old one, and apply in a worker thread."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialogButtonBox

from esg_workbench.gui.mapping import items as it
from tests.gui.mapping_demo import panel, wait_idle, ws  # noqa: F401  (panel, ws: fixtures)

LEFT = Qt.MouseButton.LeftButton
NOMOD = Qt.KeyboardModifier.NoModifier


# --- helpers: real mouse events on the view's viewport ------------------------------------------------

def viewport_point(panel, item, scene_pos: QPointF | None = None) -> QPoint:
    view = panel.view
    view.ensureVisible(item.sceneBoundingRect(), 20, 20)
    pos = scene_pos if scene_pos is not None else item.sceneBoundingRect().center()
    return view.mapFromScene(pos)


def drag(qtbot, panel, column: it.ColumnItem, field: it.FieldItem, check_midway=None) -> None:
    """Press on a column, move across the canvas, release on a field: real mouse events."""
    viewport = panel.view.viewport()
    start = viewport_point(panel, column)
    end = viewport_point(panel, field)
    start = viewport_point(panel, column)  # both visible now
    QTest.mousePress(viewport, LEFT, NOMOD, start)
    for step in (0.25, 0.5, 0.75):
        QTest.mouseMove(viewport, start + (end - start) * step)
    if check_midway is not None:
        check_midway()
    QTest.mouseMove(viewport, end)
    QTest.mouseRelease(viewport, LEFT, NOMOD, end)


def click(qtbot, panel, item, scene_pos: QPointF | None = None) -> None:
    qtbot.mouseClick(panel.view.viewport(), LEFT, NOMOD, viewport_point(panel, item, scene_pos))


def table_of(panel, table_id: str):
    return panel.document.mapping.table(table_id)


# --- tests ------------------------------------------------------------------------------------------------

def test_canvas_draws_the_shipped_mapping(panel):
    m = panel.document.mapping
    assert (m.name, m.version) == ("sample_erp", 1)
    scene = panel.scene
    # 8 activity tables, the sites (with their countries) and the energy attribute certificates
    assert len(scene.rows) == len(m.tables) == 10
    assert sum(len(r.edges) for r in scene.rows.values()) == sum(len(t.edges) for t in m.tables) == 55
    row = scene.rows["electricity"]
    assert row.source.title == "electricity_readings" and row.entity.title == "Purchased electricity"
    kwh = row.source.columns["kwh"]
    assert (kwh.value_type, kwh.mapped) == ("number", True)
    assert row.source.columns["id"].is_key
    site = row.entity.fields["site"]
    assert site.fdef.required and site.mapped and not row.entity.fields["market_factor"].mapped
    edge = row.edges["electricity-energy"]
    assert edge.label == "kWh → MWh" and edge.start == kwh.port_pos() and edge.end == row.entity.fields["energy"].port_pos()
    assert scene.rows["gas"].edges["gas-fuel_type"].tag == "= natural_gas"  # a constant: no column
    assert panel.document.problems == [] and "No problems" in panel.validation.tree.topLevelItem(0).text(0)
    assert not panel.document.modified and not panel.act_save.isEnabled()


def test_drag_a_column_onto_a_field_greys_the_others_then_undo_redo(qtbot, panel):
    scene, doc = panel.scene, panel.document
    row = scene.rows["electricity"]
    column, field = row.source.columns["reading_date"], row.entity.fields["period"]
    seen = {}

    def midway():
        assert scene.interaction is not None and column.dragging
        seen["period"] = field.drag_state
        seen["energy"] = row.entity.fields["energy"].drag_state  # a date cannot be a quantity
        seen["other_table"] = scene.rows["gas"].entity.fields["period"].drag_state
        seen["hint"] = panel.hint.text()

    before = len(table_of(panel, "electricity").edges)
    drag(qtbot, panel, column, field, check_midway=midway)
    assert seen["period"] == it.CANDIDATE and seen["energy"] == it.GREYED and seen["other_table"] == it.GREYED
    assert "Dragging reading_date (date)" in seen["hint"]
    assert scene.interaction is None and all(f.drag_state == it.NORMAL for f in scene.all_fields())

    table = table_of(panel, "electricity")
    assert len(table.edges) == before + 1
    new = table.edges_to("period")[0]
    assert new.source == "reading_date" and new.source_type == "date"
    assert [t.kind for t in new.transforms] == ["period"]  # a date onto a month field: date → month
    item = scene.edge_item(new.id)
    assert item is not None and item.isSelected() and field.mapped
    assert panel.editor.edge_id == new.id  # the click-to-edit panel follows the selection
    assert doc.modified and panel.act_save.isEnabled()
    assert doc.undo_stack.undoText() == "Map reading_date onto period"

    panel.act_undo.trigger()
    assert table_of(panel, "electricity").edges_to("period") == [] and scene.edge_item(new.id) is None
    assert not field.mapped and not doc.modified
    panel.act_redo.trigger()
    assert table_of(panel, "electricity").edges_to("period")[0].id == new.id and scene.edge_item(new.id) is not None
    assert doc.modified


def test_a_drop_on_a_greyed_field_does_nothing_and_says_why(qtbot, panel):
    scene, doc = panel.scene, panel.document
    row = scene.rows["electricity"]
    before = [e.to_json() for e in table_of(panel, "electricity").edges]
    drag(qtbot, panel, row.source.columns["tariff"], row.entity.fields["energy"])
    assert [e.to_json() for e in table_of(panel, "electricity").edges] == before
    assert doc.undo_stack.count() == 0
    assert "Cannot drop tariff on energy" in panel.hint.text() and "needs a number" in panel.hint.text()


def test_a_drop_on_a_mapped_field_replaces_its_edge_in_one_undo_step(qtbot, panel):
    scene, doc = panel.scene, panel.document
    row = scene.rows["electricity"]
    drag(qtbot, panel, row.source.columns["tariff"], row.entity.fields["supplier"])
    edges = table_of(panel, "electricity").edges_to("supplier")
    assert [e.source for e in edges] == ["tariff"] and "electricity-supplier" not in row.edges
    assert doc.undo_stack.count() == 1
    panel.act_undo.trigger()
    assert [e.id for e in table_of(panel, "electricity").edges_to("supplier")] == ["electricity-supplier"]
    assert scene.edge_item("electricity-supplier") is not None


def test_click_an_edge_delete_it_with_the_keyboard_and_undo(qtbot, panel):
    scene = panel.scene
    edge = scene.edge_item("electricity-supplier")
    assert edge._label_rect() is None  # no transforms: click the curve itself, near its column
    click(qtbot, panel, edge, edge.path().pointAtPercent(0.1))
    assert edge.isSelected() and panel.editor.edge_id == "electricity-supplier"
    assert panel.editor.title.text() == "supplier → supplier"
    QTest.keyClick(panel.view, Qt.Key.Key_Delete)
    assert table_of(panel, "electricity").edge("electricity-supplier") is None
    assert scene.edge_item("electricity-supplier") is None and panel.editor.edge_id is None
    QTest.keyClick(panel.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert table_of(panel, "electricity").edge("electricity-supplier") is not None


def test_edit_a_transform_and_the_preview_follows(qtbot, panel):
    scene, doc, preview = panel.scene, panel.document, panel.preview
    qtbot.waitUntil(lambda: preview.model.total_rows > 0 and not preview.busy, timeout=30000)
    # each column holds its texts, up to the 180 px cap (measured from the texts, not by the delegate)
    from PySide6.QtGui import QFontMetrics

    metrics, model = QFontMetrics(preview.view.font()), preview.model
    for column in range(model.columnCount()):
        widest = max(metrics.horizontalAdvance(model.index(row, column).data() or "") for row in range(model.rowCount()))
        assert preview.view.columnWidth(column) >= min(widest, 180), column
    edge = scene.edge_item("electricity-energy")
    click(qtbot, panel, edge, edge._label_rect().center())
    assert preview.table_id == "electricity" and panel.bottom.currentWidget() is preview
    rows = [r for r in preview.model._rows if r["field"] == "energy"]
    assert rows
    assert preview.model.highlight_column == "normalized_value" and preview.model.highlight_field == "energy"
    before = {r["source_key"]: r["normalized_value"] for r in rows}

    editor = panel.editor
    assert editor.list.count() == 1 and editor.list.item(0).text() == "Unit: kWh → MWh"
    unit_from = editor.settings.findChild(type(editor.source), "unitFrom")
    with qtbot.waitSignal(preview.updated, timeout=30000) as second:
        unit_from.setEditText("")
        qtbot.keyClicks(unit_from.lineEdit(), "MWh")  # the meter counts MWh, not kWh
    after = {r["source_key"]: r["normalized_value"] for r in second.args[0] if r["field"] == "energy"}
    assert after.keys() == before.keys()
    assert all(after[k] == pytest.approx(before[k] * 1000) for k in before)
    assert table_of(panel, "electricity").edge("electricity-energy").transforms[0].from_unit == "MWh"
    assert scene.edge_item("electricity-energy").label == "MWh → MWh"
    assert doc.undo_stack.count() == 1  # typing in one box is one undo step
    assert "Delivers: number in MWh" in editor.output.text()

    with qtbot.waitSignal(preview.updated, timeout=30000) as third:
        panel.act_undo.trigger()
    assert table_of(panel, "electricity").edge("electricity-energy").transforms[0].from_unit == "kWh"
    assert {r["source_key"]: r["normalized_value"] for r in third.args[0] if r["field"] == "energy"} == before
    assert editor.list.item(0).text() == "Unit: kWh → MWh"  # the editor follows the model

    # a broken setting shows on the edge, in the editor and in the problems list
    unit_from = editor.settings.findChild(type(editor.source), "unitFrom")  # the form was rebuilt by the undo
    unit_from.setEditText("furlong")
    assert any(p.kind == "IncompatibleUnit" or p.kind == "UnknownUnit" for p in doc.problems)
    assert scene.edge_item("electricity-energy").problem == "error" and "✖" in editor.problems.text()


def test_auto_map_proposes_edges_for_the_analyst_to_accept(qtbot, panel, answers):
    doc, scene = panel.document, panel.scene
    dialog = panel.add_table()
    dialog.stream.setCurrentText("water")
    dialog.entity.setCurrentIndex(dialog.entity.findData("water"))
    dialog.label.setText("Water bills, again")
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    new = doc.mapping.tables[-1]
    assert (new.stream, new.entity, new.edges) == ("water", "water", [])
    assert new.id in scene.rows
    assert {p.kind for p in doc.problems if p.table_id == new.id} >= {"RequiredFieldUnmapped"}

    scene.select_item(scene.rows[new.id].entity)
    automap = panel.auto_map()
    proposed = {(e.source, e.target) for _, e in automap.proposals}
    assert {("withdrawal_m3", "withdrawal"), ("discharge_m3", "discharge"), ("site_id", "site")} <= proposed
    assert all(table_id == new.id for table_id, _ in automap.proposals)
    assert len(scene.proposals.items) == len(automap.proposals)  # drawn dashed meanwhile
    withdrawal = next(e for _, e in automap.proposals if e.target == "withdrawal")
    assert withdrawal.transforms == []  # water is reported in m3 (ESRS E3-4): nothing to convert
    # the analyst rejects one proposal
    rejected = next(i for i in range(automap.tree.topLevelItemCount())
                    if automap.tree.topLevelItem(i).text(1) == "site")
    automap.tree.topLevelItem(rejected).setCheckState(0, Qt.CheckState.Unchecked)
    automap.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    table = doc.mapping.table(new.id)
    mapped = {(e.source, e.target) for e in table.edges}
    assert ("withdrawal_m3", "withdrawal") in mapped and ("site_id", "site") not in mapped
    assert len(table.edges) == len(proposed) - 1 and scene.proposals is None
    assert len(scene.rows[new.id].edges) == len(table.edges)
    assert doc.undo_stack.undoText().startswith("Auto-map")
    panel.act_undo.trigger()  # all accepted proposals in one step
    assert doc.mapping.table(new.id).edges == []


def test_fix_a_validation_error_by_clicking_it(qtbot, panel):
    doc, scene, validation = panel.document, panel.scene, panel.validation
    click(qtbot, panel, scene.edge_item("electricity-site"), scene.edge_item("electricity-site")._label_rect().center())
    QTest.keyClick(panel.view, Qt.Key.Key_Delete)
    problem = next(p for p in doc.problems if p.kind == "RequiredFieldUnmapped")
    assert (problem.table_id, problem.field) == ("electricity", "site")
    assert "1 error" in panel.bottom.tabText(0)
    site = scene.rows["electricity"].entity.fields["site"]
    assert site.problem == "error"
    scene.clearSelection()
    panel.view.verticalScrollBar().setValue(panel.view.verticalScrollBar().maximum())  # the item out of view

    entry = validation.item_for("RequiredFieldUnmapped", "site")
    rect = validation.tree.visualItemRect(entry)
    qtbot.mouseClick(validation.tree.viewport(), LEFT, NOMOD, rect.center())
    assert scene.selectedItems() == [site]
    visible = panel.view.mapToScene(panel.view.viewport().rect()).boundingRect()
    assert visible.contains(site.sceneBoundingRect().center())
    assert "Drag a source column onto the field" in panel.hint.text()

    drag(qtbot, panel, scene.rows["electricity"].source.columns["meter_id"], site)
    assert table_of(panel, "electricity").edges_to("site")[0].source == "meter_id"
    assert doc.problems == [] and site.problem is None
    assert "No problems" in validation.tree.topLevelItem(0).text(0)


def test_save_versions_and_reopen_an_old_one(qtbot, panel, ws):
    from esg_workbench.mapping import store

    doc = panel.document
    panel.scene.select_item(panel.scene.edge_item("electricity-meter"))
    QTest.keyClick(panel.view, Qt.Key.Key_Delete)
    dialog = panel.save()
    assert "version 2" in dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).text()
    qtbot.keyClicks(dialog.comment, "meters are not needed for the KPIs")
    with qtbot.waitSignal(panel.saved, timeout=30000) as saved:
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert saved.args[0].version == 2 and doc.mapping.version == 2
    assert not doc.modified and doc.undo_stack.isClean() and not panel.act_save.isEnabled()
    history = store.history(ws, "sample_erp")
    assert [h["version"] for h in history] == [2, 1]
    assert history[0]["comment"] == "meters are not needed for the KPIs"
    assert store.load_mapping(ws, "sample_erp").table("electricity").edge("electricity-meter") is None
    wait_idle(qtbot, panel.pool)
    assert "v2" in panel.combo.currentText()

    panel.show_history()
    qtbot.waitUntil(lambda: getattr(panel, "history_dialog", None) is not None, timeout=10000)
    versions = panel.history_dialog
    assert versions.tree.topLevelItemCount() == 2 and versions.tree.topLevelItem(0).text(0).startswith("v2")
    versions.select_version(1)
    with qtbot.waitSignal(panel.loaded, timeout=30000):
        versions.open_button.click()
    assert doc.mapping.version == 1 and doc.mapping.table("electricity").edge("electricity-meter") is not None
    assert panel.scene.edge_item("electricity-meter") is not None
    assert doc.modified and "older version" in panel.hint.text()  # saving it restores it as v3


def test_apply_saves_then_runs_in_a_worker_and_reports(qtbot, panel, ws, answers, monkeypatch):
    from esg_workbench.gui.mapping import tasks
    from esg_workbench.mapping import aggregate

    before = aggregate.find_value(ws, "energy_electricity", "2023-01", "DE-MUC")["value"]
    threads = []
    real = tasks.apply_and_aggregate

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks, "apply_and_aggregate", spy)
    doc = panel.document
    energy = doc.mapping.table("electricity").edge("electricity-energy")
    unit = energy.transforms[0]
    doc.set_transforms("electricity", energy.id, [type(unit)(from_unit="MWh", to_unit="MWh")])
    answers["answers"] = [True]  # "Save them as version 2 and apply?"
    with qtbot.waitSignal(panel.applied, timeout=60000) as applied:
        panel.act_apply.trigger()
    assert answers["asked"] and answers["asked"][0][0] == "Apply mapping"
    assert threads and threads[0] is not threading.main_thread()
    result = applied.args[0]
    assert (result["mapping"], result["version"]) == ("sample_erp", 2) and result["staging_rows"] > 10000
    assert "Applied sample_erp v2" in panel.info.label.text()
    assert aggregate.find_value(ws, "energy_electricity", "2023-01", "DE-MUC")["value"] == pytest.approx(before * 1000)


def test_apply_refuses_a_mapping_with_errors(qtbot, panel):
    doc = panel.document
    doc.remove_edges([("electricity", "electricity-site")])
    panel.act_apply.trigger()
    assert not panel.applying and panel.info.isVisible()
    assert "cannot be applied" in panel.info.label.text() and "What to do" in panel.info.label.text()
    panel.info.buttons[0].click()  # "Show it"
    assert panel.scene.selectedItems() == [panel.scene.rows["electricity"].entity.fields["site"]]


def test_zoom_and_pan(qtbot, panel):
    view = panel.view
    view.zoom_reset()
    panel.act_zoom_in.trigger()
    assert view.zoom == pytest.approx(1.25)
    panel.act_zoom_out.trigger()
    panel.act_zoom_out.trigger()
    assert view.zoom == pytest.approx(0.8)
    panel.act_fit.trigger()
    assert view.zoom < 0.8  # eight table mappings fit in the window
    view.zoom_reset()
    bar = view.verticalScrollBar()
    bar.setValue(0)
    viewport = view.viewport()
    QTest.mousePress(viewport, Qt.MouseButton.MiddleButton, NOMOD, QPoint(300, 400))
    QTest.mouseMove(viewport, QPoint(300, 200))
    QTest.mouseRelease(viewport, Qt.MouseButton.MiddleButton, NOMOD, QPoint(300, 200))
    assert bar.value() == 200


def test_a_mapped_column_gone_after_schema_drift(qtbot, panel, ws):
    from esg_workbench.mapping.apply import resolve_connector_id, source_info

    with ws.transaction() as conn:
        raw = source_info(ws, conn, resolve_connector_id(ws, conn, "sample-erp"), "electricity_readings").raw_table
        conn.exec_driver_sql(f'ALTER TABLE "{raw}" DROP COLUMN supplier')
    with qtbot.waitSignal(panel.document.problems_changed, timeout=30000):
        panel.refresh_sources()  # what the main window does when a sync ends
    problem = next(p for p in panel.document.problems if p.kind == "MappedColumnMissing")
    assert (problem.table_id, problem.column, problem.edge_id) == ("electricity", "supplier", "electricity-supplier")
    scene = panel.scene
    column = scene.column_item("electricity", "supplier")
    assert column.value_type is None and column.problem == "error"  # drawn struck out, in red
    assert scene.edge_item("electricity-supplier").problem == "error"
    entry = panel.validation.item_for("MappedColumnMissing")
    qtbot.mouseClick(panel.validation.tree.viewport(), LEFT, NOMOD,
                     panel.validation.tree.visualItemRect(entry).center())
    assert scene.selectedItems() == [scene.edge_item("electricity-supplier")]
    QTest.keyClick(panel.view, Qt.Key.Key_Delete)
    assert panel.document.problems == []
    assert scene.column_item("electricity", "supplier") is None  # nothing uses the missing column now


def test_table_settings_filter_and_key_columns(qtbot, panel):
    doc, scene, preview = panel.document, panel.scene, panel.preview
    qtbot.waitUntil(lambda: preview.model.total_rows > 0 and not preview.busy, timeout=30000)
    all_rows = preview.model.total_rows
    entity = scene.rows["electricity"].entity
    click(qtbot, panel, entity, entity.sceneBoundingRect().topLeft() + QPointF(60, 12))  # the node's header
    editor = panel.table_editor
    assert panel.inspector.currentWidget() is editor and editor.table_id == "electricity"
    assert "primary key (id)" in editor.keys_status.text()
    with qtbot.waitSignal(preview.updated, timeout=30000) as updated:
        qtbot.keyClicks(editor.filter, "kwh > 100000")
    assert table_of(panel, "electricity").filter == "kwh > 100000"
    assert 0 < len(updated.args[0]) < all_rows  # the preview maps the filtered rows only
    assert doc.undo_stack.count() == 1  # typed in one go: one undo step
    qtbot.keyClicks(editor.filter, " >")  # not an expression: shown in red, not committed
    assert editor.filter_status.styleSheet() == "color: #c62828;" and editor.filter_status.text()
    assert table_of(panel, "electricity").filter == "kwh > 100000"
    key = next(editor.keys.item(i) for i in range(editor.keys.count())
               if editor.keys.item(i).data(Qt.ItemDataRole.UserRole) == "meter_id")
    key.setCheckState(Qt.CheckState.Checked)
    assert table_of(panel, "electricity").key_columns == ["meter_id"]
    assert "Traced by meter_id" in editor.keys_status.text()
    panel.act_undo.trigger()
    panel.act_undo.trigger()
    assert table_of(panel, "electricity").key_columns is None and table_of(panel, "electricity").filter is None
    assert editor.filter.text() == ""  # the editor follows the model


def test_a_new_mapping_from_scratch(qtbot, panel, answers, ws):
    from esg_workbench.gui.mapping.dialogs import AddTableDialog, NewMappingDialog
    from esg_workbench.mapping import store

    panel.new_mapping()
    qtbot.waitUntil(lambda: isinstance(getattr(panel, "new_dialog", None), NewMappingDialog), timeout=10000)
    dialog = panel.new_dialog
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    qtbot.keyClicks(dialog.name, "sample_erp")
    assert not ok.isEnabled() and "already" in dialog.problem.text()
    dialog.name.clear()
    qtbot.keyClicks(dialog.name, "travel_only")
    assert ok.isEnabled() and dialog.connector.currentText() == "sample-erp"
    ok.click()
    qtbot.waitUntil(lambda: panel.document.mapping is not None and panel.document.mapping.name == "travel_only",
                    timeout=10000)
    add = next(w for w in panel.findChildren(AddTableDialog) if w.isVisible())  # opened for the first table
    add.stream.setCurrentText("business_travel")
    add.entity.setCurrentIndex(add.entity.findData("business_travel"))
    add.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    doc = panel.document
    table = doc.mapping.tables[0]
    row = panel.scene.rows[table.id]
    drag(qtbot, panel, row.source.columns["distance_km"], row.entity.fields["distance"])
    edge = doc.mapping.table(table.id).edges_to("distance")[0]
    assert (edge.source, edge.transforms) == ("distance_km", [])  # already in km: no conversion proposed
    assert doc.modified and "not saved" in panel.combo.currentText()
    dialog = panel.save()
    with qtbot.waitSignal(panel.saved, timeout=30000):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert store.load_mapping(ws, "travel_only").version == 1
    wait_idle(qtbot, panel.pool)
    assert {panel.combo.itemData(i) for i in range(panel.combo.count())} == {"sample_erp", "travel_only"}


def test_unsaved_edits_survive_a_crash(qtbot, ws, tmp_path):
    """Edits go to a swap file; a new panel on the workspace offers to restore them."""
    from esg_workbench.gui.mapping import swap
    from esg_workbench.gui.mapping.panel import MappingPanel
    from esg_workbench.gui.workers import WorkerPool

    def open_panel():
        pool = WorkerPool()
        panel = MappingPanel(pool)
        qtbot.addWidget(panel)
        panel.show()
        with qtbot.waitSignal(panel.loaded, timeout=30000):
            panel.set_workspace(ws)
        return panel, pool

    first, pool1 = open_panel()
    first.document.remove_edges([("electricity", "electricity-meter")])
    qtbot.waitUntil(lambda: swap.swap_path(ws, "sample_erp").exists(), timeout=5000)
    assert swap.swap_path(ws, "sample_erp").parent == tmp_path / ".esg-mapping-swap"
    wait_idle(qtbot, pool1)
    pool1.shutdown()
    first.hide()  # the app "crashed": the edits were never saved

    second, pool2 = open_panel()
    assert second.document.mapping.table("electricity").edge("electricity-meter") is not None
    assert second.info.isVisible() and "unsaved edits from an earlier session" in second.info.label.text()
    second.info.buttons[0].click()  # Restore
    assert second.document.mapping.table("electricity").edge("electricity-meter") is None
    assert second.document.modified and second.act_save.isEnabled()
    dialog = second.save()
    with qtbot.waitSignal(second.saved, timeout=30000):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert not swap.swap_path(ws, "sample_erp").exists()  # a clean save drops the copy
    wait_idle(qtbot, pool2)
    pool2.shutdown()


def test_cancelling_an_apply_leaves_the_staging_rows_and_kpis(qtbot, panel, ws):
    from esg_workbench.mapping import aggregate

    before = aggregate.find_value(ws, "energy_electricity", "2023-01", "DE-MUC")
    panel.act_apply.trigger()
    cancel = next(b for b in panel.info.buttons if b.text() == "Cancel")
    with qtbot.waitSignal(panel.apply_failed, timeout=60000):
        cancel.click()
    assert not panel.applying and "was cancelled" in panel.info.label.text()
    assert aggregate.find_value(ws, "energy_electricity", "2023-01", "DE-MUC") == before


def test_the_unit_registry_is_built_in_the_canvas_workers(ws, monkeypatch):
    """The canvas validates on the GUI thread, and validating converts units: the tasks it
    runs first (list, open, the landed columns) build pint's registry in the worker, so
    the first validation does not freeze the window for 0.7-1 s building it."""
    from esg_workbench.gui.mapping import tasks
    from esg_workbench.mapping import units

    threads = []
    real = units.registry
    monkeypatch.setattr(units, "registry", lambda: threads.append(threading.get_ident()) or real())
    tasks.list_mappings(ws)
    tasks.source_context(ws, "erp")
    assert len(threads) >= 2
