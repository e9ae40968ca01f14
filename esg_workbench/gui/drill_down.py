"""The KPI drill-down: a value, what it was computed from, its staging rows and their
source keys, down to the landed source row of a key. Every grid sorts and filters
(gui/data_grid.py); staging rows can be cut to the flagged ones; source keys sort
naturally (row 9 before row 10); staging rows page on past the first 1,000."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, Signal
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QSplitter, QTabWidget, QVBoxLayout, QWidget

from esg_workbench.gui import icons
from esg_workbench.gui.data_grid import DataGrid, natural_key
from esg_workbench.gui.sample_model import RecordsModel
from esg_workbench.mapping import flags as quality_flags
from esg_workbench.mapping.catalog import Catalog

ORG = "(all sites)"
PAGE = 1000  # staging rows per "Load more"
FLAG_TEXT = quality_flags.DESCRIPTIONS  # one text per flag for the app, the CLI and the README


def format_value(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit in ("persons", "count"):
        return f"{value:,.0f}"
    if 0 < abs(value) < 0.01:  # a gas mass in t (CH4, N2O): three significant digits, not 0.00
        return f"{value:.3g}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.2f}"


# --- background work (no Qt) -------------------------------------------------------------------

def drill(workspace, value_id: int, limit: int = PAGE) -> dict[str, Any]:
    """drill_down() with the connectors' names next to their ids and the keys in natural order."""
    from esg_workbench.mapping.aggregate import drill_down
    from esg_workbench.workspace import connectors_store

    found = drill_down(workspace, value_id, limit=limit)
    with workspace.read() as conn:
        names = {r.id: r.name for r in connectors_store.list_all(workspace, conn)}
    found["connectors"] = names
    keys = sorted(found["source_keys"], key=lambda k: (names.get(k[0], k[0]), k[1], natural_key(str(k[2]))))
    found["source_keys"] = [{"connector": names.get(c, c), "source_table": t, "source_key": k, "connector_id": c}
                            for c, t, k in keys]
    if found["value"]["kpi"] in ("ghg_scope2_market", "energy_renewable"):  # instruments are no staging rows
        from esg_workbench.mapping import instruments

        found["instruments"] = instruments.allocated_to(workspace, found["value"]["site"], found["value"]["period"])
    return found


def source_row(workspace, connector_id: str, source_table: str, source_key: str) -> dict[str, Any]:
    """The landed row behind a source key (its raw table, found by the table's key
    columns); raises NotFound when the table has no key or the row is gone."""
    import sqlalchemy as sa

    from esg_workbench.core.errors import NotFound
    from esg_workbench.workspace import schema_cache, sync_records

    with workspace.read() as conn:
        tables = schema_cache.load(workspace, conn, connector_id)
        table = next((t for t in tables if source_table in (t.stream.qualified, t.stream.table)), None)
        if table is None or not table.primary_key:
            raise NotFound(f"{source_table} has no key columns, so a key cannot be traced to one landed row.")
        state = next((s for s in sync_records.states(workspace, conn, connector_id)
                      if s.stream in (table.stream.qualified, source_table)), None)
        from esg_workbench.workspace.raw_tables import raw_table_name

        raw = state.raw_table if state is not None else raw_table_name(connector_id, table.stream.qualified)
        values = json.loads(source_key) if len(table.primary_key) > 1 else [source_key]
        quote = workspace.engine.dialect.identifier_preparer.quote
        where = " AND ".join(f"CAST({quote(k)} AS VARCHAR) = :k{i}" for i, k in enumerate(table.primary_key))
        row = conn.execute(sa.text(f"SELECT * FROM {quote(raw)} WHERE {where} LIMIT 1"),
                           {f"k{i}": str(v) for i, v in enumerate(values)}).first()
    if row is None:
        raise NotFound(f"The row {source_key} of {source_table} is no longer in the workspace "
                       "(a later full load may have removed it at the source).")
    return dict(row._mapping)


# --- the dialog ----------------------------------------------------------------------------------

class NumbersModel(RecordsModel):
    """Records with floats shown to 9 significant digits (the exact value in the tooltip)."""

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if index.isValid() and role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            value = self.raw(index.row(), index.column())
            if isinstance(value, float):
                return f"{value:,.9g}" if role == Qt.ItemDataRole.DisplayRole else repr(value)
        return super().data(index, role)


class DrillDownDialog(QDialog):
    """A KPI value, what it was computed from, its staging rows and their source keys.
    Double-click a part to drill into it; Back returns. `more(value id, limit)` asks the
    panel for more staging rows; `source_wanted(connector id, table, key)` for a landed row."""

    navigate = Signal(int, bool)  # a kpi_values id to show; True: deeper (Back returns), False: back
    more = Signal(int, int)
    source_wanted = Signal(str, str, str)

    STAGING = ["id", "source_table", "source_key", "period", "site", "field", "category", "method", "normalized_value",
               "normalized_unit", "factor_id", "factor_value", "factor_unit", "scope", "subcategory",
               "value", "unit", "activity_date", "entity", "mapping_name", "mapping_version", "sync_id", "quality"]
    PARTS = ["id", "kpi", "site", "period", "value", "unit", "rule", "input_rows", "quality"]
    KEYS = ["connector", "source_table", "source_key"]

    def __init__(self, catalog: Catalog, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("drillDownDialog")
        self.setWindowTitle("Drill down")
        self.catalog = catalog
        self.history: list[int] = []
        self.current: dict[str, Any] | None = None
        self.summary = QLabel()
        self.summary.setObjectName("drillSummary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.back = QPushButton(icons.standard("SP_ArrowBack"), "Back")
        self.back.setEnabled(False)
        self.parts_model = NumbersModel([], self.PARTS, parent=self)
        self.staging_model = NumbersModel([], self.STAGING, parent=self)
        self.keys_model = NumbersModel([], self.KEYS, parent=self)
        self.source_model = NumbersModel([], ["column", "value"], parent=self)
        self.tabs = QTabWidget()
        self.grids: dict[str, DataGrid] = {}
        for name, model in (("parts", self.parts_model), ("staging", self.staging_model), ("keys", self.keys_model)):
            grid = DataGrid(model, f"drill_{name}")
            grid.view.horizontalHeader().setStretchLastSection(True)
            self.grids[name] = grid
        self.views = {name: grid.view for name, grid in self.grids.items()}
        self.flagged_only = self.grids["staging"].add_toggle(
            "Only flagged rows", lambda row: bool(self.staging_model.raw(row, self.STAGING.index("quality"))),
            "flaggedOnly")
        self.load_more = QPushButton("Load 1,000 more")
        self.load_more.setObjectName("loadMore")
        self.load_more.clicked.connect(self._load_more)
        self.grids["staging"].controls.addWidget(self.load_more)
        self.source_title = QLabel("Select a key to see its landed source row.")
        self.source_title.setObjectName("sourceTitle")
        self.source_title.setWordWrap(True)
        source_grid = DataGrid(self.source_model, "drill_source")
        source_grid.view.horizontalHeader().setStretchLastSection(True)
        keys_page = QSplitter(Qt.Orientation.Horizontal)
        keys_page.addWidget(self.grids["keys"])
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.source_title)
        rl.addWidget(source_grid, 1)
        keys_page.addWidget(right)
        self.tabs.addTab(self.grids["parts"], "Computed from")
        self.tabs.addTab(self.grids["staging"], "Staging rows")
        self.tabs.addTab(keys_page, "Source keys")
        self.views["parts"].doubleClicked.connect(self._part_chosen)
        self.views["keys"].selectionModel().currentRowChanged.connect(self._key_chosen)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        self.back.clicked.connect(self._back)
        buttons = QHBoxLayout()
        buttons.addWidget(self.back)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(buttons)
        self.resize(980, 520)

    def show_result(self, found: dict[str, Any], mode: str = "new") -> None:
        """mode: "new" (a value chosen in the table or chart: a new trail), "into" (a part
        of the value shown), "back", "more" (the same value with more staging rows)."""
        v = found["value"]
        if mode == "new":
            self.history = []
        elif mode == "into" and self.current is not None:
            self.history.append(self.current["value"]["id"])
        self.back.setEnabled(bool(self.history))
        self.current = found
        kpi = self.catalog.kpi(v["kpi"])
        flags = json.loads(v["quality"]) if isinstance(v["quality"], str) and v["quality"] else (v["quality"] or [])
        site = v["site"] or ORG
        self.setWindowTitle(f"Drill down: {v['kpi']} {v['period']} {site}")
        shown = len(found["staging_rows"])
        text = (f"<b>{kpi.label if kpi else v['kpi']}</b> — {site}, {v['period']} ({v['period_type']}): "
                f"<b>{format_value(v['value'], v['unit'])} {v['unit']}</b><br>"
                f"Rule: {v['rule']} · {kpi.standard_ids() if kpi else ''}<br>"
                + (f"Computed from {len(found['parts'])} value{'s' if len(found['parts']) != 1 else ''}, down to "
                   if found["parts"] else "Computed directly from ")
                + f"{found['staging_row_count']:,} staging rows and {len(found['source_keys']):,} source keys"
                + (f" (first {shown:,} shown)" if found['staging_row_count'] > shown else "")
                + f"<br>Result hash <code>{v['result_hash']}</code>")
        from esg_workbench.mapping import flags as quality_flags

        stated = [f for f in flags if quality_flags.is_statement(f)]  # the GWP set: stated, not a doubt
        flags = quality_flags.doubts(flags)
        if stated:
            text += "<br>GWP set: " + "; ".join(f"{f[4:]} ({quality_flags.describe(f)})" for f in stated)
        if found.get("instruments"):
            text += "<br>Contractual instruments: " + "; ".join(
                f"{i['tracking_id']} ({'entered by hand' if i['origin'] == 'entered' else 'mapped'}) "
                f"{i['allocated_mwh']:,.3f} MWh" for i in found["instruments"])
        if flags:
            text += "<br><span style='color:#ef6c00'>⚠ " + "; ".join(f"{f}: {FLAG_TEXT.get(f, f)}" for f in flags) + "</span>"
        self.summary.setText(text)
        parts = [dict(p, site=p["site"] or ORG) for p in found["parts"]]
        self.parts_model.set_rows(parts, self.PARTS)
        self.staging_model.set_rows(found["staging_rows"], self.STAGING)
        self.keys_model.set_rows(found["source_keys"], self.KEYS)
        self.source_model.clear_rows()
        self.source_title.setText("Select a key to see its landed source row.")
        self.load_more.setVisible(found["staging_row_count"] > shown)
        self.load_more.setText(f"Load {min(PAGE, found['staging_row_count'] - shown):,} more")
        if self.flagged_only.isChecked():  # keep the cut across values
            self.grids["staging"].proxy.set_row_test(self.grids["staging"].proxy.row_test)
        self.tabs.setTabText(0, f"Computed from ({len(parts)})")
        self.tabs.setTabText(1, f"Staging rows ({found['staging_row_count']:,})")
        self.tabs.setTabText(2, f"Source keys ({len(found['source_keys']):,})")
        self.tabs.setTabEnabled(0, bool(parts))
        if not parts and self.tabs.currentIndex() == 0:
            self.tabs.setCurrentIndex(1)
        for view in self.views.values():
            view.resizeColumnsToContents()

    def show_source_row(self, key: str, row: dict[str, Any] | None, message: str = "") -> None:
        self.source_model.set_rows([{"column": k, "value": v} for k, v in (row or {}).items()], ["column", "value"])
        self.source_title.setText(f"Landed row of key {key}:" if row is not None else message)

    def _load_more(self) -> None:
        if self.current is not None:
            self.more.emit(int(self.current["value"]["id"]), len(self.current["staging_rows"]) + PAGE)

    def _part_chosen(self, index: QModelIndex) -> None:
        row = self.grids["parts"].source_row(index.row())
        value_id = self.parts_model.raw(row, self.PARTS.index("id"))
        if value_id is not None:
            self.navigate.emit(int(value_id), True)

    def _key_chosen(self, current: QModelIndex, previous: QModelIndex) -> None:
        if not current.isValid():
            return
        record = self.keys_model._rows[self.grids["keys"].source_row(current.row())]
        self.source_title.setText(f"Loading the landed row of key {record['source_key']}…")
        self.source_wanted.emit(record["connector_id"], record["source_table"], str(record["source_key"]))

    def _back(self) -> None:
        if self.history:
            self.navigate.emit(self.history.pop(), False)
