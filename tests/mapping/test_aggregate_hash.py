"""The recompute's faster spellings give what the plain ones gave: a value's hash text is
chain.canonical() of its fields, the kpi_values texts are json.dumps(), and the order of
values (hence of ids) is the depth-first order from the sorted keys. Byte for byte, on
odd texts too (scripts/compare_aggregate.py compares whole recomputes)."""

from __future__ import annotations

import json
import random

import pytest

from esg_workbench.audit import chain
from esg_workbench.mapping import aggregate as ag
from esg_workbench.mapping.aggregate import Cell

ODD_TEXTS = ["S07", "Zürich – Süd", 'a "quoted" \\ site', "tab\tnew\nline\x01", "日本", ""]


@pytest.mark.parametrize("site", [None, *ODD_TEXTS])
@pytest.mark.parametrize("value", [None, 0.0, -1.5, 1234.123456789123, 1e-12, 3.0e15, 7])
@pytest.mark.parametrize("inputs", [None, "ab" * 32, ["0" * 64, "f" * 64], ['x"y', "ü"]])
def test_result_text_is_the_canonical_json_of_the_fields(site, value, inputs):
    for unit in ("MWh", "m³", None):
        cell = Cell("energy_total", site, "2023-06", "month", value, unit, "sum", inputs=inputs)
        fields = {"kpi": cell.kpi, "site": cell.site, "period": cell.period, "value": ag._fmt(cell.value),
                  "unit": cell.unit, "rule": cell.rule, "catalog": "2026.1", "inputs": inputs}
        assert ag._result_text(cell, inputs, chain.canonical("2026.1")) == chain.canonical(fields)


def test_kpi_columns_are_the_json_dumps_of_parts_and_flags():
    a = Cell("k", "A", "2023-01", "month", 1.0, "MWh", "sum", quality=["outlier", "gwp:AR5", "Ü\"x"])
    b = Cell("k", "B", "2023-01", "month", None, "MWh", "sum", quality=["missing"])
    total = Cell("k", None, "2023-01", "month", 1.0, "MWh", "sum", parts=[b.key, a.key], quality=["partial"])
    cells = {c.key: c for c in (a, b, total)}
    for c, new_id in zip(cells.values(), (12, 3, 100)):
        c.id = new_id
    columns = ag._kpi_columns(list(cells.values()), cells)
    assert columns["parts"] == [None, None, json.dumps([3, 12])]
    assert columns["quality"] == [json.dumps(c.quality) if c.quality else None for c in cells.values()]


def _old_dependency_order(cells):
    """The order before (aggregate.py up to issue 14), kept here as the definition."""
    done = {}

    def visit(cell):
        if cell.key in done:
            return
        for p in cell.parts:
            visit(cells[p])
        done[cell.key] = cell

    for key in sorted(cells, key=ag._sort_key):
        visit(cells[key])
    return list(done.values())


def test_dependency_order_and_part_order_are_those_of_the_sort_key():
    rng = random.Random(14)
    sites = [None, "", "A", "B", "Z", "Ä"]  # None and '' sort alike: their order in `cells` decides
    base = [Cell(k, s, m, "month", 1.0, "u", "sum") for k in ("y", "x") for s in sites for m in ("2023-02", "2023-01")]
    rng.shuffle(base)
    cells = {c.key: c for c in base}
    for kpi in ("w", "z"):  # values made of others, some of values made of others
        for i in range(12):
            parts = rng.sample(list(cells), rng.randint(1, 6))
            whole = Cell(kpi, rng.choice(sites), f"2023-Q{i}", "quarter", None, "u", "sum", parts=parts)
            cells[whole.key] = whole
    places = ag._places(cells)
    assert ag._dependency_order(cells, places) == _old_dependency_order(cells)
    for c in cells.values():
        assert sorted(c.parts, key=places.__getitem__) == sorted(c.parts, key=ag._sort_key)


def test_flags_passed_up_keep_their_first_order():
    parts = [Cell("k", "A", "m", "month", 1.0, "u", "sum", quality=["gap", "missing", "outlier"]),
             Cell("k", "B", "m", "month", 1.0, "u", "sum", quality=["outlier", "negative", "gap"])]
    cell = Cell("k", None, "m", "month", 2.0, "u", "sum", quality=["partial"])
    ag._pass_up(cell, parts, ag._passed_up)
    assert cell.quality == ["partial", "gap", "outlier", "negative"]


def test_missing_months_are_made_in_the_order_of_the_sites():
    """The empty values of missing months were made in the order of a set of site names,
    which changes from one process to the next (the hash seed): so did their ids, the order
    of ids in `parts` and of the terms of a total. Twenty sites: a set's order is then
    never the sorted one by chance."""
    from esg_workbench.mapping.catalog import load_catalog

    kpi = load_catalog().kpi("energy_total")
    sites = [f"site-{i:02d}" for i in random.Random(7).sample(range(20), 20)]
    cells = {}
    for site in sites:  # every site reports January and March, none February
        for month in ("2023-01", "2023-03"):
            cell = Cell(kpi.id, site, month, "month", 1.0, kpi.unit, kpi.rule)
            cells[cell.key] = cell
    ag._fill_missing(cells, kpi, ["2023-01", "2023-02", "2023-03"], ag._site_cells_by_kpi(cells)[kpi.id])
    made = [key[1] for key, cell in cells.items() if cell.quality == ["missing"]]
    assert made == sorted(sites)


@pytest.mark.parametrize("backend", ["duckdb", "postgresql"])
def test_a_recompute_in_batches_of_sites_gives_the_same_values(backend, tmp_path, monkeypatch, request):
    """Many staging records are read in batches of sites (_site_batches), so that the
    statement's memory is bounded: every value, id, part, flag and hash is what one
    statement gives."""
    from esg_workbench import demo
    from esg_workbench.mapping.sql import dialect_of
    from esg_workbench.workspace import open_workspace
    from tests.conftest import PG_HOST, PG_PORT, PG_USER

    ws = open_workspace(str(tmp_path / "ws.duckdb") if backend == "duckdb" else
                        f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{request.getfixturevalue('pg_database')}")
    demo.run_demo(ws)
    columns = "id, kpi, site, period, period_type, value, unit, input_rows, parts, quality, result_hash"

    def recompute() -> tuple:
        """The output hash and the rows, their ids (and those in parts) counted from the first."""
        result = ag.aggregate(ws)
        with ws.read() as conn:
            rows = conn.exec_driver_sql(f"SELECT {columns} FROM kpi_values ORDER BY id").all()
        first = rows[0][0]
        return result.output_hash, [(row[0] - first, *row[1:8], json.dumps([i - first for i in json.loads(row[8])])
                                     if row[8] else None, *row[9:]) for row in rows]

    whole = recompute()
    monkeypatch.setattr(ag, "SCAN_BATCH_RECORDS", 500)
    with ws.read() as conn:
        batches = ag._site_batches(conn, dialect_of(ws), ws)
    sites = [site for batch in batches for site in batch]
    assert len(batches) > 3 and sites == sorted(sites, key=lambda site: (site is None, site or ""))
    try:
        assert recompute() == whole
    finally:
        ws.close()
