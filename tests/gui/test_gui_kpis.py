"""The KPIs screen on the demo's aggregated values: the table by period and site, the
chart, drill-down from a value to its staging rows and source keys, CSV and XLSX export
read back; and the Mapping and KPIs tabs in the main window, from Apply to the table."""

from __future__ import annotations

import csv
import json

import pytest
from PySide6.QtCore import Qt

from tests.gui.mapping_demo import copy_demo, show_loaded, wait_idle, ws  # noqa: F401  (ws: a fixture)

LEFT = Qt.MouseButton.LeftButton
NOMOD = Qt.KeyboardModifier.NoModifier


@pytest.fixture
def kpis(qtbot, ws):
    from esg_workbench.gui.kpi_panel import KpiPanel
    from esg_workbench.gui.workers import WorkerPool

    pool = WorkerPool()
    panel = KpiPanel(pool)
    show_loaded(qtbot, panel, ws)
    yield panel
    if panel.drill_dialog is not None:
        panel.drill_dialog.close()
    wait_idle(qtbot, pool)
    assert pool.shutdown(10000)


def shown(kpis, kpi: str, period: str, site: str | None):
    index = kpis.index_of(kpi, period, site)
    assert index.isValid(), (kpi, period, site)
    return index


def test_the_table_and_chart_show_the_kpis_by_period_and_site(qtbot, kpis, ws):
    from esg_workbench.mapping import aggregate

    model = kpis.model
    assert model.kpis[:3] == ["energy_total", "ghg_scope1", "ghg_scope2_location"]
    sites = {s for _, s in model.keys}
    assert sites == {"DE-MUC", "DE-BER", "NL-RTM", "SE-GOT", "ES-VLC", "(all sites)"}
    periods = sorted({p for p, _ in model.keys})
    assert periods[0] == "2023-01" and periods[-1] == "2024-12" and len(model.keys) == 24 * 6
    expected = aggregate.find_value(ws, "energy_total", "2023-01", None)
    index = shown(kpis, "energy_total", "2023-01", None)
    assert model.cell(index)["value"] == pytest.approx(expected["value"])
    assert index.data() == f"{expected['value']:,.1f}" + (" *" if expected["quality"] else "")
    assert "Total energy consumption" in model.headerData(2, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
    assert "ESRS E1-5" in model.headerData(2, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
    # a flagged value: tinted, and its tooltip says why
    flagged = next(kpis.index_of("ghg_scope2_market", p, s) for p, s in model.keys
                   if kpis.model.cells.get(("ghg_scope2_market", s, p), {}).get("quality"))
    assert flagged.data().endswith(" *") and "⚠" in flagged.data(Qt.ItemDataRole.ToolTipRole)
    assert flagged.data(Qt.ItemDataRole.BackgroundRole) is not None
    # every text fits its column, in the rows past the first screenful too (the widths come
    # from each column's widest texts, not from measuring every cell)
    from PySide6.QtGui import QFont, QFontMetrics

    bold = QFont(kpis.table.font())
    bold.setBold(True)
    for column in range(model.columnCount()):
        texts = [model.index(row, column).data() or "" for row in range(model.rowCount())]
        assert kpis.table.columnWidth(column) >= max(QFontMetrics(bold).horizontalAdvance(t) for t in texts), column

    chart = kpis.chart
    assert chart.title == "Total energy consumption" and chart.unit == "MWh" and chart.mode == "bars"
    assert len(chart.categories) == 24 and {s.name for s in chart.series} == sites - {"(all sites)"}
    jan = sum(s.values[0] or 0 for s in chart.series)
    assert jan == pytest.approx(expected["value"], rel=1e-6)  # the stacked sites add up to the total
    chart.grab()  # paints without error

    # selecting a cell charts its KPI; a ratio is drawn as lines
    kpis.table.setCurrentIndex(shown(kpis, "water_withdrawal", "2023-02", "DE-MUC"))
    assert chart.title == "Water withdrawal"
    kpis.chart_kpi.setCurrentIndex(kpis.chart_kpi.findData("energy_renewable_share"))
    assert chart.mode == "lines" and "(all sites)" in {s.name for s in chart.series}

    with qtbot.waitSignal(kpis.loaded, timeout=30000):
        kpis.period_type.setCurrentIndex(kpis.period_type.findData("year"))
    assert sorted({p for p, _ in model.keys}) == ["2023", "2024"]
    year = aggregate.find_value(ws, "headcount", "2024", "DE-MUC")
    assert model.cell(shown(kpis, "headcount", "2024", "DE-MUC"))["value"] == year["value"]
    kpis.site.setCurrentIndex(kpis.site.findData("__total__"))
    assert {s for _, s in model.keys} == {"(all sites)"} and [s.name for s in chart.series] == ["(all sites)"]
    kpis.site.setCurrentIndex(kpis.site.findData("DE-MUC"))
    assert {s for _, s in model.keys} == {"DE-MUC"} and len(model.keys) == 2
    assert model.cell(shown(kpis, "headcount", "2024", "DE-MUC"))["value"] == year["value"]


def test_drill_down_from_a_value_to_its_staging_rows_and_source_keys(qtbot, kpis, ws):
    from esg_workbench.mapping import aggregate

    index = shown(kpis, "energy_total", "2023-03", "DE-MUC")
    value = kpis.model.cell(index)
    rect = kpis.table.visualRect(index)
    qtbot.mouseClick(kpis.table.viewport(), LEFT, NOMOD, rect.center())
    assert kpis.table.currentIndex() == index and kpis.drill_button.isEnabled()
    with qtbot.waitSignal(kpis.drilled, timeout=30000) as drilled:
        qtbot.mouseDClick(kpis.table.viewport(), LEFT, NOMOD, rect.center())
    found = drilled.args[0]
    expected = aggregate.drill_down(ws, value["id"])
    assert found["value"]["id"] == value["id"] and found["staging_row_count"] == expected["staging_row_count"] > 0
    assert {(k["source_table"], k["source_key"]) for k in found["source_keys"]} == \
        {(t, k) for _, t, k in expected["source_keys"]}
    assert {k["connector"] for k in found["source_keys"]} == {"sample-erp"}  # names, not ids
    dialog = kpis.drill_dialog
    assert dialog.isVisible() and "energy_total 2023-03 DE-MUC" in dialog.windowTitle()
    assert dialog.staging_model.total_rows == len(expected["staging_rows"])
    assert dialog.keys_model.total_rows == len(found["source_keys"])
    tables = {dialog.keys_model.raw(r, 1) for r in range(dialog.keys_model.rowCount())}
    assert tables <= {"electricity_readings", "gas_readings", "fuel_purchases"}
    assert value["result_hash"] in dialog.summary.text()

    # a year's value is computed from its months: drill into one, then back
    with qtbot.waitSignal(kpis.loaded, timeout=30000):
        kpis.period_type.setCurrentIndex(kpis.period_type.findData("year"))
    year = kpis.model.cell(shown(kpis, "energy_total", "2023", "DE-MUC"))
    with qtbot.waitSignal(kpis.drilled, timeout=30000) as drilled:
        kpis.table.setCurrentIndex(shown(kpis, "energy_total", "2023", "DE-MUC"))
        kpis.drill_button.click()
    assert [p["period"] for p in drilled.args[0]["parts"]] == [f"2023-{m:02d}" for m in range(1, 13)]
    assert dialog.parts_model.total_rows == 12 and dialog.tabs.isTabEnabled(0)
    march = dialog.grids["parts"].proxy.mapFromSource(dialog.parts_model.index(2, 0))
    at = dialog.views["parts"].visualRect(march).center()
    qtbot.mouseClick(dialog.views["parts"].viewport(), LEFT, NOMOD, at)
    with qtbot.waitSignal(kpis.drilled, timeout=30000) as part:
        qtbot.mouseDClick(dialog.views["parts"].viewport(), LEFT, NOMOD, at)
    assert part.args[0]["value"]["period"] == "2023-03" and dialog.back.isEnabled()
    with qtbot.waitSignal(kpis.drilled, timeout=30000) as back:
        dialog.back.click()
    assert back.args[0]["value"]["id"] == year["id"] and not dialog.back.isEnabled()


def test_a_click_on_the_chart_drills_down(qtbot, kpis):
    chart = kpis.chart
    chart.grab()
    rect, period, site = next((r, c, s) for r, c, s in chart._hits if c == "2024-06" and s == "SE-GOT")
    with qtbot.waitSignal(kpis.drilled, timeout=30000) as drilled:
        qtbot.mouseClick(chart, LEFT, NOMOD, rect.center().toPoint())
    v = drilled.args[0]["value"]
    assert (v["kpi"], v["period"], v["site"]) == ("energy_total", "2024-06", "SE-GOT")
    assert kpis.model.cell(kpis.table.currentIndex())["id"] == v["id"]


def test_export_csv_and_xlsx_and_read_them_back(qtbot, kpis, tmp_path):
    from openpyxl import load_workbook

    model = kpis.model
    with qtbot.waitSignal(kpis.exported, timeout=30000):
        kpis.export(str(tmp_path / "kpis.csv"))
    with open(tmp_path / "kpis.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["period", "site", "energy_total [MWh]", "ghg_scope1 [tCO2e]"] and rows[0][-1] == "flags"
    assert len(rows) == 1 + len(model.keys)
    line = next(r for r in rows if r[:2] == ["2023-01", "(all sites)"])
    cell = model.cell(shown(kpis, "energy_total", "2023-01", None))
    assert float(line[2]) == pytest.approx(cell["value"])
    flagged = [r for r in rows[1:] if r[-1]]
    assert flagged and all(isinstance(json.loads(r[-1]), dict) for r in flagged)
    from esg_workbench.audit import chain

    anchor = str(chain.anchor(kpis.workspace))  # the file is a witness of the audit chain
    assert rows[0][-2] == "audit_chain_head" and {r[-2] for r in rows[1:]} == {anchor}
    assert chain.verify(kpis.workspace, anchor=chain.Head.parse(anchor)).ok

    with qtbot.waitSignal(kpis.exported, timeout=30000):
        kpis.export(str(tmp_path / "kpis.xlsx"))
    book = load_workbook(tmp_path / "kpis.xlsx")
    assert book.sheetnames == ["KPIs", "Values", "About"]
    sheet = book["KPIs"]
    assert "ESRS E1-5" in sheet.cell(1, 3).value and sheet.cell(2, 3).value == "MWh"
    found = next(r for r in sheet.iter_rows(min_row=3, values_only=True) if r[:2] == ("2023-01", "(all sites)"))
    assert found[2] == pytest.approx(cell["value"])  # numbers stay numbers
    assert sheet.max_row == 2 + len(model.keys)
    values = list(book["Values"].iter_rows(values_only=True))
    header = values[0]
    assert {"kpi", "standards", "value", "quality", "result_hash"} <= set(header)
    mine = next(r for r in values[1:] if r[header.index("id")] == cell["id"])
    assert mine[header.index("result_hash")] == cell["result_hash"]
    assert mine[header.index("site")] == "(all sites)"
    about = dict(book["About"].iter_rows(values_only=True))
    assert about["Audit chain head"] == anchor and about["Check later with"].endswith(f"--anchor {anchor}")
    # the GWP set of the emissions is stated: in the About sheet, and per value among the flags
    assert about["GWP sets of the emissions"] == "AR5, not stated"  # DESNZ fuels; the grid intensities
    assert any("gwp:AR5" in json.loads(r[-1]).get("ghg_scope1", []) for r in flagged)


def test_main_window_mapping_and_kpi_tabs_from_apply_to_the_table(qtbot, make_window, tmp_path_factory, tmp_path,
                                                                 answers):
    from esg_workbench.gui.kpi_panel import KpiPanel
    from esg_workbench.gui.mapping.panel import MappingPanel

    copy_demo(tmp_path_factory, tmp_path / "workspace.duckdb")  # the window's workspace_url
    window = make_window()
    assert isinstance(window.mapping, MappingPanel) and isinstance(window.kpis, KpiPanel)
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles[4:6] == ["Mapping", "KPIs"]  # after them: Health
    qtbot.waitUntil(lambda: window.mapping.document.mapping is not None and bool(window.kpis.values), timeout=30000)
    window.tab_actions[4].trigger()  # Ctrl+5
    assert window.tabs.currentWidget() is window.mapping
    panel = window.mapping
    before = window.kpis.model.cell(window.kpis.index_of("headcount", "2024-12", None))["value"]

    # drop the headcount table mapping (one undo step), apply: the KPI table follows
    workforce = panel.scene.rows["workforce"]
    panel.scene.select_item(workforce.entity)
    panel.act_delete.trigger()
    assert "workforce" not in panel.scene.rows
    answers["answers"] = [True]
    with qtbot.waitSignal(window.kpis.loaded, timeout=60000):
        panel.act_apply.trigger()
    assert before > 0 and window.kpis.model.cell(window.kpis.index_of("energy_total", "2024-12", None)) is not None
    assert window.kpis.model.cell(window.kpis.index_of("headcount", "2024-12", None)) is None
    assert "Applied sample_erp v2" in window.statusBar().currentMessage()
    panel.info.buttons[0].click()  # "Show KPIs"
    assert window.tabs.currentWidget() is window.kpis
    window.save_state()
    assert window.settings.value("window/tab") == "kpis"


def test_a_sync_that_recomputes_the_kpis_refreshes_the_kpi_table(qtbot, make_window, tmp_path_factory, tmp_path):
    from esg_workbench.sync.engine import SyncRequest

    copy_demo(tmp_path_factory, tmp_path / "workspace.duckdb")  # the window's workspace_url
    window = make_window()
    kpis = window.kpis
    qtbot.waitUntil(lambda: bool(kpis.values), timeout=30000)
    shown_before = kpis.model.cell(kpis.index_of("energy_total", "2023-01", "DE-MUC"))["id"]

    # a full reload maps the landed rows again and recomputes every KPI under new ids
    with qtbot.waitSignal(kpis.loaded, timeout=120000):
        window.jobs.start(window.workspace, SyncRequest("sample-erp", tables=["business_travel"], load_type="full"))
    cell = kpis.model.cell(kpis.index_of("energy_total", "2023-01", "DE-MUC"))
    assert cell["id"] != shown_before
    with qtbot.waitSignal(kpis.drilled, timeout=30000) as drilled:
        kpis.drill_down(cell["id"])
    assert drilled.args[0]["value"]["id"] == cell["id"]
    kpis.drill_dialog.close()


def test_drill_down_grids_sort_filter_page_and_trace_a_key(qtbot, kpis, ws):
    from esg_workbench.gui.data_grid import sort_key
    from esg_workbench.gui.sample_model import RIGHT

    with qtbot.waitSignal(kpis.loaded, timeout=30000):
        kpis.period_type.setCurrentIndex(kpis.period_type.findData("year"))
    value = next(v for v in kpis.values  # (a total over every site: some 1,800 staging rows)
                 if v["kpi"] == "ghg_total_location" and v["period"] == "2023" and v["site"] is None)
    with qtbot.waitSignal(kpis.drilled, timeout=30000) as drilled:
        kpis.drill_down(value["id"])
    found = drilled.args[0]
    assert found["staging_row_count"] > 1000
    dialog = kpis.drill_dialog
    model, grid = dialog.staging_model, dialog.grids["staging"]
    assert model.total_rows == 1000 and not dialog.load_more.isHidden()
    # pages on past the first 1,000 rows
    with qtbot.waitSignal(kpis.drilled, timeout=30000) as more:
        dialog.load_more.click()
    assert model.total_rows == found["staging_row_count"] == len(more.args[0]["staging_rows"])
    assert dialog.load_more.isHidden() and dialog.back.isEnabled() is False

    # only the flagged rows, and back
    quality = dialog.STAGING.index("quality")
    flagged = sum(1 for r in range(model.total_rows) if model.raw(r, quality))
    # (every emission row of the demo carries a flag: lifecycle grid factors, UK factors for
    # other countries' fuels; the filter must still keep exactly the flagged ones)
    assert 0 < flagged <= model.total_rows
    dialog.flagged_only.setChecked(True)
    assert grid.proxy.rowCount() == flagged
    dialog.flagged_only.setChecked(False)
    assert grid.proxy.rowCount() == model.total_rows

    # sort by a number column: numerically, not as text; numbers right-aligned
    column = dialog.STAGING.index("normalized_value")
    grid.view.sortByColumn(column, Qt.SortOrder.DescendingOrder)
    values = [model.raw(grid.source_row(r), column) for r in range(grid.proxy.rowCount())]
    assert values == sorted(values, key=sort_key, reverse=True) and values[0] > values[-1]
    assert grid.proxy.index(0, column).data(Qt.ItemDataRole.TextAlignmentRole) == RIGHT
    assert grid.proxy.index(0, dialog.STAGING.index("site")).data(Qt.ItemDataRole.TextAlignmentRole) is None

    # the filter keeps rows with the text in any column
    qtbot.keyClicks(grid.filter, "de-muc")
    qtbot.waitUntil(lambda: 0 < grid.proxy.rowCount() < model.total_rows)
    for r in range(grid.proxy.rowCount()):
        assert any("de-muc" in str(grid.proxy.index(r, c).data()).lower() for c in range(len(dialog.STAGING)))
    assert "of" in grid.count.text()

    # source keys in natural order (row 9 before row 10), and a key's landed row
    keys = [(k["connector"], k["source_table"], k["source_key"]) for k in found["source_keys"]]
    for table in {t for _, t, _ in keys}:
        numbers = [int(k) for _, t, k in keys if t == table]
        assert numbers == sorted(numbers), table
    dialog.tabs.setCurrentIndex(2)
    key_view = dialog.views["keys"]
    with qtbot.waitSignal(kpis.source_shown, timeout=30000) as source:
        key_view.setCurrentIndex(key_view.model().index(3, 0))
    row = source.args[0]
    chosen = dialog.keys_model._rows[dialog.grids["keys"].source_row(3)]
    assert row is not None and str(row["id"]) == str(chosen["source_key"])
    assert f"Landed row of key {chosen['source_key']}" in dialog.source_title.text()
    assert dialog.source_model.total_rows == len(row)
