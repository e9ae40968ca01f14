"""The mapping model (edits, validation, versions) and apply + aggregation on a workspace."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.mapping import aggregate as ag
from esg_workbench.mapping import apply, store
from esg_workbench.mapping.catalog import load_catalog
from esg_workbench.mapping.errors import (
    DuplicateMapping, IncompatibleType, IncompatibleUnit, MappedColumnMissing, RequiredFieldUnmapped,
)
from esg_workbench.mapping.model import (
    AddEdge, AddTable, Edge, Mapping, RemoveEdge, SetEdge, TableMapping, check_edge, compatible_fields,
    propose_edges, validate,
)
from esg_workbench.mapping.sql import DATE, NUMBER, TEXT
from esg_workbench.mapping.transforms import Cast, Constant, Unit
from tests.mapping.conftest import land

CATALOG = load_catalog()
ELEC_COLUMNS = {"id": NUMBER, "site_code": TEXT, "reading_date": DATE, "kwh": NUMBER, "kwh_text": TEXT}


def electricity_table() -> TableMapping:
    return TableMapping("readings", "purchased_electricity", edges=[
        Edge("activity_date", "reading_date", id="e-date"), Edge("site", "site_code", id="e-site"),
        Edge("energy", "kwh", [Unit("kWh", "MWh")], id="e-energy")], id="t1")


def kinds(problems):
    return sorted({p.kind for p in problems if p.severity == "error"})


def test_edit_operations_undo_redo_and_notify():
    mapping = Mapping("m", "erp")
    seen = []
    mapping.subscribe(seen.append)
    undo_table = mapping.apply(AddTable(TableMapping("readings", "purchased_electricity", id="t1")))
    undo_edge = mapping.apply(AddEdge("t1", Edge("energy", "kwh", id="e1")))
    undo_set = mapping.apply(SetEdge("t1", "e1", "transforms", [Unit("kWh", "MWh")]))
    assert mapping.table("t1").edge("e1").transforms == [Unit("kWh", "MWh")]
    redo = mapping.apply(undo_set)
    assert mapping.table("t1").edge("e1").transforms == []
    mapping.apply(redo)
    assert mapping.table("t1").edge("e1").transforms == [Unit("kWh", "MWh")]
    mapping.apply(undo_edge)
    assert mapping.table("t1").edges == []
    mapping.apply(undo_table)
    assert mapping.tables == []
    assert [c.kind for c in seen] == ["table_added", "edge_added", "edge_changed", "edge_changed", "edge_changed",
                                      "edge_removed", "table_removed"]
    again = Mapping.from_json(Mapping("m", "erp", [electricity_table()]).to_json())
    assert again.to_json() == Mapping("m", "erp", [electricity_table()]).to_json()


def test_validation_errors_are_typed():
    mapping = Mapping("m", "erp", [electricity_table()])
    assert kinds(validate(mapping, CATALOG, {"readings": ELEC_COLUMNS})) == []
    # required field unmapped
    mapping.apply(RemoveEdge("t1", "e-site"))
    problems = validate(mapping, CATALOG, {"readings": ELEC_COLUMNS})
    assert kinds(problems) == ["RequiredFieldUnmapped"]
    assert [p.field for p in problems if isinstance(p, RequiredFieldUnmapped)] == ["site"]
    mapping.apply(AddEdge("t1", Edge("site", "site_code", id="e-site")))
    # duplicate mapping onto one field
    mapping.apply(AddEdge("t1", Edge("site", "site_code", id="e-site2")))
    assert kinds(validate(mapping, CATALOG, {"readings": ELEC_COLUMNS})) == ["DuplicateMapping"]
    mapping.apply(RemoveEdge("t1", "e-site2"))
    # incompatible type: text onto a measure (fixed by a cast)
    mapping.apply(SetEdge("t1", "e-energy", "source", "kwh_text"))
    problems = validate(mapping, CATALOG, {"readings": ELEC_COLUMNS})
    assert kinds(problems) == ["IncompatibleType"] and problems[0].edge_id == "e-energy"
    mapping.apply(SetEdge("t1", "e-energy", "transforms", [Cast("number"), Unit("kWh", "MWh")]))
    assert kinds(validate(mapping, CATALOG, {"readings": ELEC_COLUMNS})) == []
    # incompatible unit: a mass onto energy
    mapping.apply(SetEdge("t1", "e-energy", "transforms", [Cast("number"), Unit("kg", "t")]))
    assert kinds(validate(mapping, CATALOG, {"readings": ELEC_COLUMNS})) == ["IncompatibleUnit"]
    mapping.apply(SetEdge("t1", "e-energy", "transforms", [Unit("kWh", "MWh")]))
    mapping.apply(SetEdge("t1", "e-energy", "source", "kwh"))
    # a mapped column gone after schema drift
    drifted = {k: v for k, v in ELEC_COLUMNS.items() if k != "kwh"}
    problems = validate(mapping, CATALOG, {"readings": drifted})
    assert kinds(problems) == ["MappedColumnMissing"] and problems[0].column == "kwh"


def test_check_edge_and_compatible_fields_for_dragging():
    table = electricity_table()
    with pytest.raises(DuplicateMapping):
        check_edge(table, Edge("energy", "kwh"), CATALOG, ELEC_COLUMNS)
    with pytest.raises(IncompatibleType):
        check_edge(table, Edge("supplier_renewable_energy", "kwh_text"), CATALOG, ELEC_COLUMNS)
    with pytest.raises(IncompatibleUnit):
        check_edge(table, Edge("supplier_renewable_energy", "kwh", [Unit("m3", "ML")]), CATALOG, ELEC_COLUMNS)
    with pytest.raises(MappedColumnMissing):
        check_edge(table, Edge("supplier_renewable_energy", "gone"), CATALOG, ELEC_COLUMNS)
    fields = compatible_fields(table, "kwh_text", CATALOG, ELEC_COLUMNS)
    assert "supplier_renewable_energy" not in fields and "supplier" in fields
    proposed = propose_edges(TableMapping("readings", "purchased_electricity"), CATALOG, ELEC_COLUMNS)
    assert {(e.source, e.target) for e in proposed} >= {("reading_date", "activity_date"), ("site_code", "site"),
                                                        ("kwh", "energy")}


def test_every_save_is_a_new_version_with_author_and_audit(ws):
    mapping = Mapping("elec", "erp", [electricity_table()])
    first = store.save_mapping(ws, mapping, author="ana", comment="first").version
    mapping.apply(SetEdge("t1", "e-energy", "transforms", [Unit("Wh", "MWh")]))
    second = store.save_mapping(ws, mapping, author="ben", comment="Wh, not kWh")
    assert (first, second.version) == (1, 2)
    history = store.history(ws, "elec")
    assert [(h["version"], h["author"], h["comment"]) for h in history] == [(2, "ben", "Wh, not kWh"), (1, "ana", "first")]
    assert store.load_mapping(ws, "elec", 1).tables[0].edge("e-energy").transforms == [Unit("kWh", "MWh")]
    assert store.load_mapping(ws, "elec").version == 2
    saves = [e for e in chain.entries(ws) if e["action"] == "mapping.save"]
    assert len(saves) == 2 and saves[0]["actor"] == "ben" and saves[0]["output_hash"] == second.definition_hash()
    assert chain.verify(ws).ok


def _readings():
    rows = [(1, "A", dt.date(2024, 1, 31), 1000.0), (2, "A", dt.date(2024, 2, 29), 2000.0),
            (3, "A", dt.date(2024, 3, 31), 3000.0), (4, "B", dt.date(2024, 1, 31), 500.0),
            (5, "B", dt.date(2024, 3, 31), 700.0)]
    return pa.table({"id": [r[0] for r in rows], "site_code": [r[1] for r in rows],
                     "reading_date": [r[2] for r in rows], "kwh": [r[3] for r in rows]})


def _setup(ws):
    from esg_workbench.mapping import sites

    # both sites in the UK: their 2024 activity takes the DESNZ 2023 factors (nearest earlier vintage)
    sites.set_location(ws, "A", "GB")
    sites.set_location(ws, "B", "GB")
    land(ws, "erp", "readings", _readings())
    land(ws, "erp", "staff", pa.table({
        "id": [1, 2, 3, 4], "site_code": ["A", "A", "A", "A"],
        "as_of": [dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1), dt.date(2024, 3, 20)],
        "employees": [10, 12, 9, 11]}))
    land(ws, "erp", "waste", pa.table({
        "id": [1, 2, 3], "site_code": ["A", "A", "A"],
        "day": [dt.date(2024, 1, 10), dt.date(2024, 1, 11), dt.date(2024, 2, 10)],
        "kg": [1000.0, 1000.0, 8000.0], "route": ["recycling", "landfill", "recycling"]}))
    mapping = Mapping("test", "erp", [
        electricity_table(),
        TableMapping("staff", "workforce", id="t2", edges=[
            Edge("activity_date", "as_of"), Edge("site", "site_code"), Edge("headcount", "employees")]),
        TableMapping("waste", "waste", id="t3", edges=[
            Edge("activity_date", "day"), Edge("site", "site_code"),
            Edge("material", None, [Constant("commercial_industrial")]), Edge("route", "route"),
            Edge("mass", "kg", [Unit("kg", "t")])]),
    ])
    return store.save_mapping(ws, mapping, author="test")


def test_apply_and_aggregation_rules(ws):
    mapping = _setup(ws)
    result = apply.apply_mapping(ws, mapping)
    assert result.source_rows == 5 + 4 + 3
    agg = ag.aggregate(ws)
    value = lambda kpi, period, site=None: ag.find_value(ws, kpi, period, site)["value"]  # noqa: E731
    # sums over the period, per site and for the organization
    assert value("energy_total", "2024-01", "A") == pytest.approx(1.0)
    assert value("energy_total", "2024-Q1", "A") == pytest.approx(6.0)
    assert value("energy_total", "2024-Q1") == pytest.approx(7.2)
    # (1 + 2 + 3 + 0.5 + 0.7) MWh x 0.20707 t/MWh (DESNZ 2023 UK electricity, the nearest earlier vintage)
    assert value("ghg_scope2_location", "2024-Q1") == pytest.approx(7.2 * 0.20707)
    assert "factor_vintage" in ag.find_value(ws, "ghg_scope2_location", "2024-Q1", None)["quality"]
    # site B has no February reading: a missing month, and a partial quarter
    feb_b = ag.find_value(ws, "energy_total", "2024-02", "B")
    assert feb_b["value"] is None and feb_b["quality"] == ["missing"]
    assert "partial" in ag.find_value(ws, "energy_total", "2024-Q1", "B")["quality"]
    # a stock: headcount at the period's end (the latest date in March), never summed
    assert value("headcount", "2024-01", "A") == 10
    assert value("headcount", "2024-03", "A") == 11
    assert value("headcount", "2024-Q1", "A") == 11
    assert value("headcount", "2024", "A") == 11
    # a ratio recomputed from summed parts: (1 + 8) / (2 + 8) = 90 %, not the mean of 50 % and 100 %
    assert value("waste_diversion_rate", "2024-01", "A") == pytest.approx(50)
    assert value("waste_diversion_rate", "2024-02", "A") == pytest.approx(100)
    assert value("waste_diversion_rate", "2024-Q1", "A") == pytest.approx(90)
    assert agg.lineage_rows > 0


def test_lineage_from_a_kpi_to_source_keys(ws):
    mapping = _setup(ws)
    apply.apply_mapping(ws, mapping)
    ag.aggregate(ws)
    year = ag.find_value(ws, "energy_total", "2024", "A")
    found = ag.drill_down(ws, year["id"])
    assert found["staging_row_count"] == 3
    keys = {(table, key) for _, table, key in found["source_keys"]}
    assert keys == {("readings", "1"), ("readings", "2"), ("readings", "3")}
    assert {r["mapping_version"] for r in found["staging_rows"]} == {mapping.version}
    stock = ag.drill_down(ws, ag.find_value(ws, "headcount", "2024-Q1", "A")["id"])
    assert [(r["source_key"], r["value"]) for r in stock["staging_rows"]] == [("4", "11")]
    ratio = ag.drill_down(ws, ag.find_value(ws, "waste_diversion_rate", "2024-Q1", "A")["id"])
    assert {r["source_key"] for r in ratio["staging_rows"]} == {"1", "2", "3"}
    scope2 = ag.drill_down(ws, ag.find_value(ws, "ghg_scope2_location", "2024-01", "A")["id"])
    assert scope2["staging_rows"][0]["factor_value"] == 0.20707
    assert scope2["staging_rows"][0]["factor_set"] == "DESNZ-2023@1.1"


def test_result_hashes_are_reproducible(ws):
    mapping = _setup(ws)
    apply.apply_mapping(ws, mapping)
    first = ag.aggregate(ws)
    hashes = {(r["kpi"], r["site"], r["period"]): r["result_hash"] for r in ag.kpi_rows(ws)}
    apply.apply_mapping(ws, mapping)  # new staging row ids, same content
    second = ag.aggregate(ws)
    again = {(r["kpi"], r["site"], r["period"]): r["result_hash"] for r in ag.kpi_rows(ws)}
    assert again == hashes and second.output_hash == first.output_hash
    # a changed input changes the hashes of the values it feeds, and only those
    land(ws, "erp", "readings", pa.table({"id": [6], "site_code": ["A"], "reading_date": [dt.date(2024, 3, 15)],
                                          "kwh": [1.0]}), sync_id=2)
    apply.apply_mapping(ws, mapping, incremental=True)
    ag.aggregate(ws)
    changed = {(r["kpi"], r["site"], r["period"]): r["result_hash"] for r in ag.kpi_rows(ws)}
    assert changed[("energy_total", "A", "2024-03")] != hashes[("energy_total", "A", "2024-03")]
    assert changed[("energy_total", "A", "2024-01")] == hashes[("energy_total", "A", "2024-01")]
    assert changed[("headcount", "A", "2024-Q1")] == hashes[("headcount", "A", "2024-Q1")]


def test_incremental_apply_maps_only_new_rows(ws):
    mapping = _setup(ws)
    apply.apply_mapping(ws, mapping)
    land(ws, "erp", "readings", pa.table({"id": [6], "site_code": ["B"], "reading_date": [dt.date(2024, 2, 29)],
                                          "kwh": [600.0]}), sync_id=2)
    result = apply.apply_mapping(ws, mapping, incremental=True)
    assert result.incremental and {t.stream: t.source_rows for t in result.tables}["readings"] == 1
    ag.aggregate(ws)
    assert ag.find_value(ws, "energy_total", "2024-02", "B")["value"] == pytest.approx(0.6)
    assert _staging_unorphaned(ws)
    # row 6 again, changed: its staging rows are replaced, and the kinds only they used go too
    land(ws, "erp", "readings", pa.table({"id": [6], "site_code": ["B"], "reading_date": [dt.date(2024, 2, 29)],
                                          "kwh": [700.0]}), sync_id=3)
    assert apply.apply_mapping(ws, mapping, incremental=True).incremental
    ag.aggregate(ws)
    assert ag.find_value(ws, "energy_total", "2024-02", "B")["value"] == pytest.approx(0.7)
    assert _staging_unorphaned(ws)


def _staging_unorphaned(ws) -> bool:
    """Every staging value has its record and kind, and every record and kind a value."""
    with ws.read() as conn:
        return conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM staging_values v WHERE NOT EXISTS (SELECT 1 FROM staging_records r "
            "WHERE r.id = v.record_id) OR NOT EXISTS (SELECT 1 FROM staging_kinds k WHERE k.id = v.kind_id)) "
            "+ (SELECT count(*) FROM staging_records r WHERE NOT EXISTS (SELECT 1 FROM staging_values v "
            "WHERE v.record_id = r.id)) + (SELECT count(*) FROM staging_kinds k WHERE NOT EXISTS "
            "(SELECT 1 FROM staging_values v WHERE v.kind_id = k.id))")).scalar() == 0


def test_preview_and_invalid_mapping_refused(ws):
    mapping = _setup(ws)
    rows = apply.preview(ws, mapping, "t1", limit=2)
    assert {r["field"] for r in rows} >= {"energy", "ghg_co2e"}
    assert [r["normalized_value"] for r in rows if r["field"] == "energy"] == [pytest.approx(1.0), pytest.approx(2.0)]
    with ws.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM staging_rows")).scalar() == 0  # nothing written
    mapping.apply(RemoveEdge("t1", "e-site"))
    broken = store.save_mapping(ws, mapping)
    with pytest.raises(apply.MappingInvalid) as info:
        apply.apply_mapping(ws, broken)
    assert any(isinstance(p, RequiredFieldUnmapped) for p in info.value.problems)
