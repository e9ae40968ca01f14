"""The methodology's dialogs on the mapping canvas (the Sites button's menu): contractual
instruments entered by hand (checked, listed with the MWh allocated and unused, removed),
and the mapping settings that were JSON or CLI only (business key and duplicates, fallback
region: undoable edits; the estimation of gaps: stored for the organization). The toolbar
still fits 1280 px."""

from __future__ import annotations

import pytest

from tests.gui.mapping_demo import show_loaded, wait_idle, ws  # noqa: F401  (ws: a fixture)


@pytest.fixture
def panel(qtbot, ws):
    from esg_workbench.gui.mapping.panel import MappingPanel
    from esg_workbench.gui.workers import WorkerPool

    pool = WorkerPool()
    panel = MappingPanel(pool)
    show_loaded(qtbot, panel, ws)
    yield panel
    wait_idle(qtbot, pool)
    assert pool.shutdown(10000)


def _rows(dialog) -> dict[str, list[str]]:
    tree = dialog.tree
    return {tree.topLevelItem(i).text(7): [tree.topLevelItem(i).text(c) for c in range(tree.columnCount())]
            for i in range(tree.topLevelItemCount())}


def test_method_menu_fits_the_toolbar_at_1280(qtbot, panel):
    panel.resize(1280, 720)
    button = panel.toolbar.widgetForAction(panel.act_sites)  # Sites…, and the others on its arrow
    qtbot.waitUntil(button.isVisible, timeout=5000)
    assert button.menu().objectName() == "methodologyMenu"
    assert [a.objectName() for a in button.menu().actions()] == ["siteLocations", "instruments", "mappingSettings"]
    assert panel.toolbar.sizeHint().width() <= panel.toolbar.width() <= 1280
    assert panel.act_instruments.isEnabled() and panel.act_settings.isEnabled()


def test_instruments_dialog_enters_refuses_and_removes(qtbot, panel, ws):
    from esg_workbench.mapping import instruments

    dialog = panel.show_instruments()
    with qtbot.waitSignal(dialog.loaded, timeout=30000):
        pass
    mapped = _rows(dialog)
    assert mapped and all(r[9] != "entered by hand" for r in mapped.values())  # the demo's mapped instruments
    assert dialog.site.findText("DE-BER") >= 0  # the workspace's sites are offered
    dialog.site.setEditText("DE-BER")
    dialog.kind.setCurrentIndex(dialog.kind.findData("guarantee_of_origin"))
    dialog.mwh.setValue(12.5)
    from PySide6.QtCore import QDate

    dialog.start.setDate(QDate(2024, 1, 1))
    dialog.end.setDate(QDate(2024, 6, 30))
    dialog.evidence.setText("AIB cancellation statement 2024-118")
    with qtbot.waitSignal(dialog.failed, timeout=30000):  # no tracking id
        dialog.add_button.click()
    assert "tracking id" in dialog.message.text()
    dialog.tracking.setText("DE-UBA-2024-0042")
    with qtbot.waitSignals([dialog.changed, dialog.loaded], timeout=30000):
        dialog.add_button.click()
    row = _rows(dialog)["DE-UBA-2024-0042"]
    assert row[:5] == ["DE-BER", "guarantee_of_origin", "12.5", "2024-01-01", "2024-06-30"]
    assert row[9] == "entered by hand"
    # allocated (on the site's electricity of the KPIs computed) + unused = MWh covered
    assert float(row[5]) + float(row[6]) == pytest.approx(12.5)
    assert [r["tracking_id"] for r in instruments.usage(ws) if r["origin"] == "entered"] == ["DE-UBA-2024-0042"]
    dialog.tree.setCurrentItem(dialog.tree.topLevelItem(list(_rows(dialog)).index("DE-UBA-2024-0042")))
    assert dialog.remove_button.isEnabled()
    with qtbot.waitSignals([dialog.changed, dialog.loaded], timeout=30000):
        dialog.remove_button.click()
    assert "DE-UBA-2024-0042" not in _rows(dialog)
    dialog.tree.setCurrentItem(dialog.tree.topLevelItem(0))
    assert not dialog.remove_button.isEnabled()  # a mapped instrument goes with its source rows
    dialog.close()


def test_settings_dialog_sets_key_fallback_and_estimation(qtbot, panel, ws):
    from PySide6.QtCore import Qt

    from esg_workbench.mapping import gaps

    mapping = panel.document.mapping
    assert mapping.factor_fallback_region == "GB"  # the sample mapping's, flagged on every value using it
    table = next(t for t in mapping.tables if t.entity == "purchased_electricity")
    dialog = panel.show_settings()
    with qtbot.waitSignal(dialog.loaded, timeout=30000):
        pass
    assert dialog.fallback.text() == "GB" and dialog.estimate.currentData() is None
    assert dialog.height() <= 720 and len(dialog.keys) == len(mapping.tables)  # ten tables, scrolled
    keys = dialog.keys[table.id]
    columns = [keys.item(i).text() for i in range(keys.count())]
    assert columns, "the landed table's columns are offered as business key"
    chosen = columns[0]
    keys.item(0).setCheckState(Qt.CheckState.Checked)
    dialog.duplicates[table.id].setCurrentIndex(dialog.duplicates[table.id].findData("count_once"))
    dialog.fallback.setText("Atlantis")
    with qtbot.waitSignal(dialog.failed, timeout=5000):
        dialog.apply()
    assert "ISO 3166" in dialog.message.text() and mapping.factor_fallback_region == "GB"  # nothing changed
    dialog.fallback.setText("")
    dialog.estimate.setCurrentIndex(dialog.estimate.findData("neighbours"))
    with qtbot.waitSignal(dialog.saved, timeout=30000):
        dialog.apply()
    assert mapping.factor_fallback_region is None
    assert chosen in table.business_key and table.duplicates == "count_once"
    assert gaps.estimate_method(ws) == "neighbours"
    assert panel.document.modified
    assert "save and apply the mapping" in panel.hint.text()
    # one undo takes the mapping's settings back (the estimation is the organization's, stored)
    panel.document.undo_stack.undo()
    assert mapping.factor_fallback_region == "GB" and table.duplicates == "flag"


def test_kpis_tab_states_the_gwp_set_without_tinting(qtbot):
    from PySide6.QtCore import Qt

    from esg_workbench.gui.kpi_panel import KpiTableModel
    from esg_workbench.mapping.catalog import load_catalog

    model = KpiTableModel(load_catalog())
    base = {"site": "GB-LON", "period": "2023-01", "rule": "sum", "input_rows": 2, "result_hash": "ab" * 32, "id": 1}
    values = [dict(base, kpi="ghg_scope1_ch4_mass", value=0.0000213, unit="t CH4", quality=["gwp:AR5"]),
              dict(base, kpi="ghg_scope1", value=2.6, unit="tCO2e", quality=["gwp:AR5", "factor_vintage"], id=2)]
    model.set_values(values, ["ghg_scope1_ch4_mass", "ghg_scope1"], "__all__")
    mass, total = model.index(0, 2), model.index(0, 3)
    assert model.data(mass) == "2.13e-05"  # a small mass keeps its digits, and no '*': a GWP set is no doubt
    assert model.data(mass, Qt.ItemDataRole.BackgroundRole) is None
    tip = model.data(mass, Qt.ItemDataRole.ToolTipRole)
    assert "GWP set AR5: CO2e by the 100-year GWPs of IPCC AR5 (CO2 1, CH4 28, N2O 265)" in tip and "⚠" not in tip
    assert model.data(total).endswith(" *") and "⚠ factor_vintage" in model.data(total, Qt.ItemDataRole.ToolTipRole)
