"""The KPIs tab: the aggregated KPI values by period and site as a table and a chart,
drill-down from a value to the values it was computed from, its staging rows and their
source keys, and export to CSV and XLSX.

Reading values, drilling down and writing files run in the WorkerPool; a value with
data-quality flags is tinted and says why in its tooltip."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QAction, QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QLabel,
    QMenu,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableView,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import icons
from esg_workbench.gui.column_fit import fit_columns
from esg_workbench.gui.kpi_chart import BARS, LINES, ChartWidget, Series
from esg_workbench.gui.drill_down import FLAG_TEXT, ORG, DrillDownDialog, drill, format_value
from esg_workbench.mapping import flags as quality_flags
from esg_workbench.mapping.catalog import Catalog, load_catalog
from esg_workbench.mapping.report import ANCHOR_COLUMN, audit_anchor

HEADLINE = ["energy_total", "ghg_scope1", "ghg_scope2_location", "ghg_scope2_market", "water_withdrawal",
            "waste_total", "headcount"]
SHORT = {"energy_total": "Energy", "ghg_scope1": "Scope 1", "ghg_scope2_location": "Scope 2 location",
         "ghg_scope2_market": "Scope 2 market", "water_withdrawal": "Water withdrawal", "waste_total": "Waste",
         "headcount": "Headcount", "ghg_total_location": "GHG total location", "ghg_total_market": "GHG total market",
         "energy_renewable_share": "Renewable share"}
PERIOD_TYPES = [("month", "Months"), ("quarter", "Quarters"), ("year", "Years")]
ALL, TOTAL_ONLY = "__all__", "__total__"


def short_label(catalog: Catalog, kpi: str) -> str:
    k = catalog.kpi(kpi)
    if kpi in SHORT:
        return SHORT[kpi]
    label = k.label if k else kpi
    return label.split(" (")[0].split(",")[0]


# --- background work (no Qt) -------------------------------------------------------------------

def load_values(workspace, period_type: str) -> IndexedValues:
    from esg_workbench.mapping.aggregate import kpi_rows

    return IndexedValues(kpi_rows(workspace, period_type=period_type))


class IndexedValues:
    """KPI values (kpi_rows) indexed in the worker that read them, so that showing them on
    the GUI thread, for every site, one site or other KPIs, is lookups rather than passes
    over every value: after an apply there are tens of thousands, and each pass on the GUI
    thread froze the window (tests/benchmarks/test_bench_gui_lag.py)."""

    def __init__(self, values: list[dict[str, Any]]):
        self.values = values
        self.cells: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kpi, site label, period) -> value row
        self.by_site: dict[str, list[dict[str, Any]]] = {}  # site label -> its value rows
        self.periods: dict[tuple[str, str], set[str]] = {}  # (site label, kpi) -> its periods
        self.extremes: dict[tuple[str, str], tuple[dict, dict]] = {}  # (site label, kpi) -> least, greatest value
        self.doubtful: dict[str, int] = {}  # kpi -> values with data-quality doubts
        for v in values:
            site, kpi = v["site"] or ORG, v["kpi"]
            self.cells[(kpi, site, v["period"])] = v
            self.by_site.setdefault(site, []).append(v)
            self.periods.setdefault((site, kpi), set()).add(v["period"])
            if v["value"] is not None:
                low, high = self.extremes.get((site, kpi), (v, v))
                self.extremes[(site, kpi)] = (v if v["value"] < low["value"] else low,
                                              v if v["value"] > high["value"] else high)
            if quality_flags.doubts(v["quality"]):
                self.doubtful[kpi] = self.doubtful.get(kpi, 0) + 1
        self.computed_at = max((v["computed_at"] for v in values if v.get("computed_at")), default=None)
        self.runs = {v["run_id"] for v in values if v.get("run_id")}

    def __len__(self) -> int:
        return len(self.values)


def export_with_anchor(workspace, path: str, kind: str, table: dict[str, Any]) -> str:
    """export_rows() with the audit chain's head (read in the worker): the file is a witness."""
    return export_rows(path, kind, {**table, ANCHOR_COLUMN: audit_anchor(workspace)})


def export_rows(path: str, kind: str, table: dict[str, Any]) -> str:
    """Write the KPI table (as shown) to CSV or XLSX; returns the path."""
    target = Path(path)
    header, rows = table["header"], table["rows"]
    if kind == "csv":
        with target.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header + [ANCHOR_COLUMN, "flags"])
            for r in rows:
                writer.writerow([r["period"], r["site"]] + ["" if v is None else repr(round(v, 6)) for v in r["values"]]
                                + [table.get(ANCHOR_COLUMN, ""),
                                   json.dumps(r["flags"], sort_keys=True) if r["flags"] else ""])
        return str(target)
    from openpyxl import Workbook
    from openpyxl.comments import Comment
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    ws = wb.active
    ws.title = "KPIs"
    bold = Font(bold=True)
    flagged = PatternFill("solid", fgColor="FFF3E0")
    ws.append(table["labels"])
    ws.append(["", ""] + table["units"])
    for cell in ws[1] + ws[2]:
        cell.font = bold
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    for r in rows:
        ws.append([r["period"], r["site"]] + list(r["values"]))
        line = ws.max_row
        for i, (kpi, v) in enumerate(zip(table["kpis"], r["values"])):
            cell = ws.cell(line, 3 + i)
            cell.number_format = "#,##0" if table["units"][i] in ("persons", "count") else "#,##0.00"
            if kpi in r["flags"]:
                cell.fill = flagged
                cell.comment = Comment(", ".join(r["flags"][kpi]), "ESG Workbench")
    ws.freeze_panes = "C3"
    ws.column_dimensions["A"].width = 10
    ws.column_dimensions["B"].width = 14
    for i in range(len(table["kpis"])):
        ws.column_dimensions[get_column_letter(3 + i)].width = 16
    values = wb.create_sheet("Values")
    columns = ["kpi", "label", "unit", "rule", "standards", "site", "period", "period_type", "value", "quality",
               "input_rows", "result_hash", "catalog_version", "computed_at", "id"]
    values.append(columns)
    for cell in values[1]:
        cell.font = bold
    for v in table["values"]:
        values.append([v.get(c) if not isinstance(v.get(c), (list, dict)) else ", ".join(v.get(c)) for c in columns])
    values.freeze_panes = "A2"
    about = wb.create_sheet("About")
    for line in (["Exported by", "ESG Workbench"], ["Exported at (UTC)", dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)],
                 ["Workspace", table.get("workspace", "")], ["Catalog version", table.get("catalog_version", "")],
                 ["Periods", table.get("period_type", "")],
                 ["GWP sets of the emissions", ", ".join(sorted({f[4:] for v in table["values"]
                                                                 for f in (v.get("quality") or [])
                                                                 if quality_flags.is_statement(f)})) or "–"],
                 ["Audit chain head", table.get(ANCHOR_COLUMN, "")],
                 ["Check later with", f"esg-workbench audit verify --anchor {table.get(ANCHOR_COLUMN, '')}"],
                 ["Note", "Every value traces to its staging rows and source keys (KPIs tab → Drill down); "
                          "result_hash is the same whenever the same inputs are recomputed."]):
        about.append(line)
    about.column_dimensions["A"].width = 20
    about.column_dimensions["B"].width = 80
    wb.save(target)
    return str(target)


# --- the table -----------------------------------------------------------------------------------

class KpiTableModel(QAbstractTableModel):
    """One row per period and site, one column per KPI."""

    def __init__(self, catalog: Catalog, parent=None):
        super().__init__(parent)
        self.catalog = catalog
        self.kpis: list[str] = list(HEADLINE)
        self.keys: list[tuple[str, str]] = []  # (period, site label)
        self.cells: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kpi, site label, period) -> value row
        self.extremes: dict[str, list[dict]] = {}  # kpi -> its shown values of least and greatest value, by site

    def set_values(self, values: IndexedValues | list[dict[str, Any]], kpis: list[str], site_filter: str) -> None:
        indexed = values if isinstance(values, IndexedValues) else IndexedValues(values)
        self.beginResetModel()
        self.kpis = list(kpis)
        if site_filter == ALL:
            sites = list(indexed.by_site)
            self.cells = indexed.cells
        else:
            sites = [ORG if site_filter == TOTAL_ONLY else site_filter]
            self.cells = {(v["kpi"], site, v["period"]): v for site in sites for v in indexed.by_site.get(site, ())}
        keys: set[tuple[str, str]] = set()
        self.extremes = {}
        for site in sites:
            for kpi in self.kpis:
                keys.update((period, site) for period in indexed.periods.get((site, kpi), ()))
                self.extremes.setdefault(kpi, []).extend(indexed.extremes.get((site, kpi), ()))
        self.keys = sorted(keys, key=lambda k: (k[0], k[1] == ORG, k[1]))
        self.endResetModel()

    def widest(self) -> list[tuple[int, str]]:
        """(column, text) of the texts that may be the widest of each column, wherever
        their rows are: every period and site, each KPI's least and greatest value, flagged."""
        texts = [(0, period) for period in {period for period, _ in self.keys}]
        texts += [(1, site) for site in {site for _, site in self.keys}]
        for i, kpi in enumerate(self.kpis):
            shown = [v["value"] for v in self.extremes.get(kpi, ())]
            if shown:
                unit = self.catalog.kpi(kpi).unit
                texts += [(2 + i, format_value(value, unit) + " *") for value in {min(shown), max(shown)}]
        return texts

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.keys)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else 2 + len(self.kpis)

    def kpi_at(self, column: int) -> str | None:
        return self.kpis[column - 2] if column >= 2 else None

    def cell(self, index: QModelIndex) -> dict[str, Any] | None:
        if not index.isValid() or index.column() < 2:
            return None
        period, site = self.keys[index.row()]
        return self.cells.get((self.kpis[index.column() - 2], site, period))

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if section < 2:
            return ("Period", "Site")[section] if role == Qt.ItemDataRole.DisplayRole else None
        kpi = self.catalog.kpi(self.kpis[section - 2])
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{short_label(self.catalog, kpi.id)}\n{kpi.unit}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{kpi.label} ({kpi.unit})\n{kpi.standard_ids()}\nRule: {kpi.rule}. {kpi.description}".strip()
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        period, site = self.keys[index.row()]
        if index.column() < 2:
            if role == Qt.ItemDataRole.DisplayRole:
                return period if index.column() == 0 else site
            if role == Qt.ItemDataRole.FontRole and site == ORG:
                font = QFont()
                font.setBold(True)
                return font
            return None
        v = self.cell(index)
        if v is None:
            return "" if role == Qt.ItemDataRole.DisplayRole else None
        flags = quality_flags.doubts(v["quality"])  # a GWP set is stated in the tooltip, not tinted
        if role == Qt.ItemDataRole.DisplayRole:
            return format_value(v["value"], v["unit"]) + (" *" if flags else "")
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.BackgroundRole:
            if "missing" in flags or v["value"] is None:
                return QBrush(QColor("#ffebee"))
            if flags:
                return QBrush(QColor("#fff3e0"))
            return QBrush(QColor("#f3f6f8")) if site == ORG else None
        if role == Qt.ItemDataRole.FontRole and site == ORG:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ToolTipRole:
            kpi = self.catalog.kpi(v["kpi"])
            lines = [f"{kpi.label}: {format_value(v['value'], v['unit'])} {v['unit']}",
                     f"{site}, {period} · rule {v['rule']} · {v['input_rows'] or 0:,} staging rows"]
            lines += [f"⚠ {f}: {FLAG_TEXT.get(f, f)}" for f in flags]
            lines += [f"GWP set {f[4:]}: {quality_flags.describe(f)}" for f in v["quality"] if quality_flags.is_statement(f)]
            lines.append(f"result hash {v['result_hash'][:16]}…  (double-click to drill down)")
            return "\n".join(lines)
        if role == Qt.ItemDataRole.UserRole:
            return v["id"]
        return None

    def export_table(self) -> dict[str, Any]:
        """The table as shown, for export."""
        rows = []
        for period, site in self.keys:
            values, flags = [], {}
            for kpi in self.kpis:
                v = self.cells.get((kpi, site, period))
                values.append(v["value"] if v else None)
                if v and v["quality"]:
                    flags[kpi] = v["quality"]
            rows.append({"period": period, "site": site, "values": values, "flags": flags})
        units = [self.catalog.kpi(k).unit for k in self.kpis]
        shown = {(p, s) for p, s in self.keys}
        return {
            "kpis": list(self.kpis),
            "header": ["period", "site"] + [f"{k} [{u}]" for k, u in zip(self.kpis, units)],
            "labels": ["Period", "Site"] + [f"{self.catalog.kpi(k).label} ({self.catalog.kpi(k).standard_ids()})"
                                            for k in self.kpis],
            "units": units,
            "rows": rows,
            "values": [dict(v, standards=self.catalog.kpi(v["kpi"]).standard_ids(), label=self.catalog.kpi(v["kpi"]).label,
                            site=v["site"] or ORG)
                       for (kpi, site, period), v in sorted(self.cells.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1]))
                       if kpi in self.kpis and (period, site) in shown],
        }


# --- the panel ---------------------------------------------------------------------------------------

class KpiPanel(QWidget):
    loaded = Signal(int)  # values shown
    drilled = Signal(dict)  # a drill-down result
    source_shown = Signal(object)  # the landed row of a chosen source key, or None (tests)
    exported = Signal(str)  # the file written
    failed = Signal(str)
    message = Signal(str)

    def __init__(self, pool, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("kpiPanel")
        self.pool = pool
        self.workspace = None
        self.settings = None  # the window's QSettings (remembered export folder), set by install_mapping_tabs
        self.catalog = load_catalog()
        self.values: list[dict[str, Any]] = []
        self.indexed = IndexedValues([])  # the values as the worker indexed them
        self.chosen_kpis: list[str] = list(HEADLINE)
        self.drill_dialog: DrillDownDialog | None = None

        self.period_type = QComboBox()
        self.period_type.setObjectName("kpiPeriodType")
        for key, text in PERIOD_TYPES:
            self.period_type.addItem(text, key)
        self.site = QComboBox()
        self.site.setObjectName("kpiSite")
        self.site.addItem("Every site and the total", ALL)
        self.site.addItem("Organization total only", TOTAL_ONLY)
        self.columns_button = QToolButton()
        self.columns_button.setText("KPIs")
        self.columns_button.setIcon(icons.standard("SP_FileDialogListView"))
        self.columns_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.columns_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.columns_button.setToolTip("Choose the KPIs shown as columns")
        self.columns_menu = QMenu(self)
        self.kpi_actions: dict[str, QAction] = {}
        topic = None
        for k in self.catalog.kpis.values():
            if k.topic != topic:
                topic = k.topic
                self.columns_menu.addSection(topic or "Other")
            act = self.columns_menu.addAction(f"{k.label} ({k.unit})")
            act.setCheckable(True)
            act.setChecked(k.id in self.chosen_kpis)
            act.setToolTip(k.standard_ids())
            act.toggled.connect(lambda on, kid=k.id: self._toggle_kpi(kid, on))
            self.kpi_actions[k.id] = act
        self.columns_button.setMenu(self.columns_menu)
        self.chart_kpi = QComboBox()
        self.chart_kpi.setObjectName("kpiChartChoice")
        for k in self.catalog.kpis_in_order():
            self.chart_kpi.addItem(f"{k.label} ({k.unit})", k.id)
        self.chart_kpi.setCurrentIndex(self.chart_kpi.findData("energy_total"))
        self.chart_kpi.setMaximumWidth(320)
        self.refresh_button = QPushButton(icons.standard("SP_BrowserReload"), "Refresh")
        self.drill_button = QPushButton(icons.standard("SP_FileDialogContentsView"), "Drill down…")
        self.drill_button.setObjectName("kpiDrill")
        self.drill_button.setToolTip("The staging rows and source keys behind the selected value (or double-click it)")
        self.csv_button = QPushButton(icons.standard("SP_DialogSaveButton"), "CSV…")
        self.csv_button.setObjectName("kpiExportCsv")
        self.csv_button.setToolTip("Export the table as shown to a CSV file")
        self.xlsx_button = QPushButton(icons.standard("SP_DialogSaveButton"), "XLSX…")
        self.xlsx_button.setObjectName("kpiExportXlsx")
        self.xlsx_button.setToolTip("Export to an Excel workbook: the table, every value with its standard ids, "
                                    "flags and result hash")
        self.status = QLabel("Apply a mapping to compute KPIs.")
        self.status.setObjectName("kpiStatus")
        self.status.setWordWrap(True)
        self.model = KpiTableModel(self.catalog, self)
        self.table = QTableView()
        self.table.setObjectName("kpiTable")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(21)
        self.table.horizontalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignCenter)
        self.chart = ChartWidget()

        head = QToolBar("KPIs")  # a narrow window folds the rest into the toolbar's » menu
        head.setObjectName("kpiToolbar")
        head.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for widget in (QLabel(" Periods "), self.period_type, QLabel("  Sites "), self.site, self.columns_button,
                       QLabel("  Chart "), self.chart_kpi, None, self.refresh_button, self.drill_button,
                       self.csv_button, self.xlsx_button):
            if widget is None:
                spacer = QWidget()
                spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
                head.addWidget(spacer)
            else:
                head.addWidget(widget)
        for combo in (self.site, self.chart_kpi):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        # narrow enough that Refresh, Drill down, CSV and XLSX keep their labels at 1280 px
        self.site.setMinimumContentsLength(12)
        self.chart_kpi.setMinimumContentsLength(16)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("kpiSplitter")
        self.splitter.addWidget(self.table)
        self.splitter.addWidget(self.chart)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(head)
        layout.addWidget(self.status)
        layout.addWidget(self.splitter, 1)

        self.period_type.currentIndexChanged.connect(lambda _: self.refresh())
        self.site.currentIndexChanged.connect(lambda _: self._show())
        self.chart_kpi.currentIndexChanged.connect(lambda _: self._show_chart())
        self.refresh_button.clicked.connect(self.refresh)
        self.drill_button.clicked.connect(lambda: self.drill_down_index(self.table.currentIndex()))
        self.table.doubleClicked.connect(self.drill_down_index)
        self.table.selectionModel().currentChanged.connect(self._current_changed)
        self.chart.clicked.connect(self._chart_clicked)
        self.csv_button.clicked.connect(lambda: self._ask_export("csv"))
        self.xlsx_button.clicked.connect(lambda: self._ask_export("xlsx"))
        self._update_buttons()

    # --- data ----------------------------------------------------------------------------------

    def set_workspace(self, workspace) -> None:
        self.workspace = workspace
        self.indexed, self.values = IndexedValues([]), []
        self.model.set_values(self.indexed, self.chosen_kpis, ALL)
        self.refresh()

    def refresh(self) -> None:
        if self.workspace is None:
            return
        period_type = self.period_type.currentData()
        self.status.setText("Loading KPI values…")

        def done(indexed: IndexedValues) -> None:
            if period_type != self.period_type.currentData():
                return
            self.indexed, self.values = indexed, indexed.values
            sites = sorted(site for site in indexed.by_site if site != ORG)  # (ORG: the totals)
            current = self.site.currentData()
            self.site.blockSignals(True)
            while self.site.count() > 2:
                self.site.removeItem(2)
            for s in sites:
                self.site.addItem(s, s)
            self.site.setCurrentIndex(max(0, self.site.findData(current)))
            self.site.blockSignals(False)
            self._show()
            self.loaded.emit(len(indexed))

        self.pool.run(load_values, self.workspace, period_type, on_done=done, on_error=self._error, owner=self)

    def _show(self) -> None:
        self.model.set_values(self.indexed, self.chosen_kpis, self.site.currentData())
        self.status.setStyleSheet("")
        self._fit_columns()
        if self.values:
            runs, computed = self.indexed.runs, self.indexed.computed_at
            flagged = sum(self.indexed.doubtful.get(kpi, 0) for kpi in self.chosen_kpis)
            self.status.setText(
                f"{len(self.model.keys):,} rows × {len(self.chosen_kpis)} KPIs, computed {computed:%Y-%m-%d %H:%M} UTC "
                f"(catalog {self.values[0]['catalog_version']}{', run ' + next(iter(runs)) if len(runs) == 1 else ''}). "
                f"{flagged:,} values carry data-quality flags (* tinted; hover for why). "
                "Double-click a value to trace it to its source rows.")
        else:
            self.status.setText("No KPI values yet: apply a mapping (Mapping tab → Apply) to compute them.")
        self._show_chart()
        self._update_buttons()

    def _fit_columns(self) -> None:
        fit_columns(self.table, self.model.widest(), bold=True)  # (the organization's rows are bold)
        widths = [max(self.table.columnWidth(i), 90 if i >= 2 else 0) for i in range(self.model.columnCount())]
        room = self.table.viewport().width() - sum(widths)
        for i, w in enumerate(widths):  # KPI columns share the spare room; many KPIs scroll instead
            extra = room // max(1, len(widths) - 2) if room > 0 and i >= 2 else 0
            self.table.setColumnWidth(i, w + extra)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.model.keys:
            self._fit_columns()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.model.keys:
            self._fit_columns()

    def _toggle_kpi(self, kpi: str, on: bool) -> None:
        if on and kpi not in self.chosen_kpis:
            self.chosen_kpis.append(kpi)
        elif not on and kpi in self.chosen_kpis:
            self.chosen_kpis.remove(kpi)
        order = [k.id for k in self.catalog.kpis.values()]
        self.chosen_kpis.sort(key=order.index)
        self._show()

    def set_kpis(self, kpis: list[str]) -> None:
        for kid, act in self.kpi_actions.items():
            act.blockSignals(True)
            act.setChecked(kid in kpis)
            act.blockSignals(False)
        self.chosen_kpis = list(kpis)
        self._show()

    def _show_chart(self) -> None:
        kpi_id = self.chart_kpi.currentData()
        kpi = self.catalog.kpi(kpi_id)
        site_filter = self.site.currentData()
        mine = [v for v in self.values if v["kpi"] == kpi_id]
        if not mine:
            self.chart.clear("No values of this KPI yet." if self.values else "No KPI values yet.")
            return
        periods = sorted({v["period"] for v in mine})
        ratio = kpi.rule == "ratio"
        if site_filter == TOTAL_ONLY:
            names = [ORG]
        elif site_filter == ALL:
            names = sorted({v["site"] for v in mine if v["site"]}) + ([ORG] if ratio else [])
            names = names or [ORG]
        else:
            names = [site_filter]
        series = []
        for name in names:
            by_period = {v["period"]: v["value"] for v in mine if (v["site"] or ORG) == name}
            series.append(Series(name, [by_period.get(p) for p in periods], "#263238" if name == ORG and ratio else ""))
        self.chart.set_data(kpi.label, kpi.unit, periods, series, LINES if ratio else BARS)

    def _current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        kpi = self.model.kpi_at(current.column()) if current.isValid() else None
        if kpi is not None and kpi != self.chart_kpi.currentData():
            self.chart_kpi.setCurrentIndex(self.chart_kpi.findData(kpi))
        self.chart.set_highlight(self.model.keys[current.row()][0] if current.isValid() else None)
        self._update_buttons()

    def _update_buttons(self) -> None:
        has = bool(self.model.keys)
        self.csv_button.setEnabled(has)
        self.xlsx_button.setEnabled(has)
        self.drill_button.setEnabled(self.model.cell(self.table.currentIndex()) is not None)

    def _error(self, message: str) -> None:
        self.status.setText(message.replace("\nWhat to do:", "  What to do:"))
        self.status.setStyleSheet("color: #c62828;")
        self.failed.emit(message)
        self.message.emit(message)

    # --- drill-down ----------------------------------------------------------------------------------

    def index_of(self, kpi: str, period: str, site: str | None) -> QModelIndex:
        site = site or ORG
        if kpi not in self.model.kpis or (period, site) not in self.model.keys:
            return QModelIndex()
        return self.model.index(self.model.keys.index((period, site)), 2 + self.model.kpis.index(kpi))

    def drill_down_index(self, index: QModelIndex) -> None:
        v = self.model.cell(index)
        if v is not None:
            self.drill_down(v["id"])

    def _chart_clicked(self, period: str, site: str) -> None:
        kpi = self.chart_kpi.currentData()
        v = self.indexed.cells.get((kpi, site or ORG, period))
        if v is not None:
            index = self.index_of(kpi, period, v["site"])
            if index.isValid():
                self.table.setCurrentIndex(index)
                self.table.scrollTo(index)
            self.drill_down(v["id"])

    def drill_down(self, value_id: int, mode: str = "new", limit: int | None = None) -> None:
        """Open the drill-down of a KPI value (in a worker); `drilled(result)` when shown."""
        if self.workspace is None:
            return
        if self.drill_dialog is None:
            self.drill_dialog = DrillDownDialog(self.catalog, self)
            self.drill_dialog.navigate.connect(self._navigate)
            self.drill_dialog.more.connect(lambda vid, n: self.drill_down(vid, "more", n))
            self.drill_dialog.source_wanted.connect(self._source_row)
            self.drill_dialog.finished.connect(self._drill_closed)

        def done(found: dict[str, Any]) -> None:
            if self.drill_dialog is None:
                return
            self.drill_dialog.show_result(found, mode)
            self.drill_dialog.show()
            self.drill_dialog.raise_()
            self.drilled.emit(found)

        self.pool.run(drill, self.workspace, value_id, *([limit] if limit else []),
                      on_done=done, on_error=self._error, owner=self)

    def _source_row(self, connector_id: str, table: str, key: str) -> None:
        from esg_workbench.gui.drill_down import source_row

        def done(row: dict[str, Any]) -> None:
            if self.drill_dialog is not None:
                self.drill_dialog.show_source_row(key, row)
                self.source_shown.emit(row)

        def failed(message: str) -> None:
            if self.drill_dialog is not None:
                self.drill_dialog.show_source_row(key, None, message)
                self.source_shown.emit(None)

        self.pool.run(source_row, self.workspace, connector_id, table, key, on_done=done, on_error=failed, owner=self)

    def _navigate(self, value_id: int, deeper: bool) -> None:
        self.drill_down(value_id, "into" if deeper else "back")

    def _drill_closed(self, _code: int = 0) -> None:
        dialog, self.drill_dialog = self.drill_dialog, None
        if dialog is not None:
            dialog.deleteLater()

    # --- export ----------------------------------------------------------------------------------------

    def _ask_export(self, kind: str) -> None:
        from esg_workbench.gui.dialogs import last_folder, remember_folder

        stamp = dt.date.today().isoformat()
        folder = last_folder(self.settings, "kpi_export")
        suggested = str(Path(folder) / f"esg-kpis-{self.period_type.currentData()}-{stamp}.{kind}")
        path, _ = QFileDialog.getSaveFileName(self, f"Export KPIs to {kind.upper()}", suggested,
                                              "CSV (*.csv)" if kind == "csv" else "Excel workbook (*.xlsx)")
        if path:
            remember_folder(self.settings, "kpi_export", path)
            if not path.lower().endswith(f".{kind}"):
                path += f".{kind}"
            self.export(path, kind)

    def export(self, path: str, kind: str | None = None) -> None:
        """Write the table as shown (in a worker); `exported(path)` when done."""
        kind = kind or ("xlsx" if str(path).lower().endswith(".xlsx") else "csv")
        table = self.model.export_table()
        table["workspace"] = getattr(self.workspace, "display_url", "")
        table["catalog_version"] = self.values[0]["catalog_version"] if self.values else ""
        table["period_type"] = self.period_type.currentData()

        def done(written: str) -> None:
            text = f"Exported {len(table['rows']):,} rows × {len(table['kpis'])} KPIs to {written}."
            self.status.setText(text)
            self.status.setStyleSheet("")
            self.message.emit(text)
            self.exported.emit(written)

        self.pool.run(export_with_anchor, self.workspace, str(path), kind, table, on_done=done, on_error=self._error,
                      owner=self)
