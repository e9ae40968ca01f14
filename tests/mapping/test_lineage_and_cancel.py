"""Derived lineage (a base KPI value's staging rows are those its selection picks for its
site and month, not stored links) and cancelling an apply or a recompute."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from esg_workbench import demo
from esg_workbench.core.specs import CancelToken
from esg_workbench.mapping import aggregate as ag
from esg_workbench.mapping import apply
from esg_workbench.mapping.cancel import MappingCancelled
from esg_workbench.mapping.catalog import load_catalog


def test_drill_down_finds_exactly_the_rows_each_value_was_computed_from(demo_ws):
    ws, _ = demo_ws
    catalog = load_catalog()
    values = [v for v in ag.kpi_rows(ws) if v["input_rows"]]
    # every site-month value of a summed KPI: its rows are those of its site, month and fields
    months = [v for v in values if v["period_type"] == "month" and v["site"] is not None
              and catalog.kpi(v["kpi"]).rule == "sum" and "field" in catalog.kpi(v["kpi"]).select]
    checked = recomputed = 0
    for v in months[::max(1, len(months) // 30)]:  # 30 of them, across KPIs and sites
        kpi = catalog.kpi(v["kpi"])
        found = ag.drill_down(ws, v["id"], limit=100_000)
        assert found["staging_row_count"] == v["input_rows"] == len(found["staging_rows"]), v
        fields = kpi.select["field"] if isinstance(kpi.select["field"], list) else [kpi.select["field"]]
        for row in found["staging_rows"]:
            if row["entity"] != "contractual_instrument":  # instruments allocated to the value (scope2.py)
                assert (row["site"], row["period"]) == (v["site"], v["period"]) and row["field"] in fields, row
        checked += 1
        # the value and its hash follow from these rows alone (README, Methodology: result hashes),
        # whatever the SQL computing them does; instruments and estimates change a value after it
        if v["kpi"] not in ("ghg_scope2_market", "energy_renewable") and "estimated" not in v["quality"]:
            assert (v["value"], v["result_hash"]) == _value_and_hash(v, kpi, catalog.version, found["staging_rows"]), v
            recomputed += 1
    assert checked >= 20 and recomputed >= 15
    # totals, quarters and years, including those whose months and sites are not a full grid
    # (a site without a month): the count is the sum of their base values' rows
    longer = [v for v in values if v["period_type"] in ("quarter", "year") and catalog.kpi(v["kpi"]).is_base]
    assert any(v["site"] is None for v in longer) and any(v["site"] for v in longer)
    for v in longer[::max(1, len(longer) // 40)]:
        assert ag.drill_down(ws, v["id"], limit=10)["staging_row_count"] == v["input_rows"], v
    with ws.read() as conn:  # no link per staging row is stored
        linked = conn.execute(sa.text("SELECT count(*) FROM kpi_lineage")).scalar()
        staged = conn.execute(sa.text("SELECT count(*) FROM staging_rows")).scalar()
    assert linked < staged / 10


def _value_and_hash(value: dict, kpi, catalog_version: str, rows: list[dict]) -> tuple:
    """A site-month value of a summed KPI and its result hash, computed in Python from its
    staging rows: the terms added in ascending order, and the rows' content digest (their
    count and the sums of two 60-bit slices of the md5 of each row's text)."""
    import functools
    import hashlib
    import math
    import operator

    from esg_workbench.audit import chain
    from esg_workbench.mapping import units

    def source_text(text):  # '12.50' -> '12.5', '3.0' -> '3'
        return text.rstrip("0").rstrip(".") if text and "." in text and not {"e", "E"} & set(text) else text or ""

    def number_text(number):  # micro-units
        assert number is None or abs(number) < 1e12
        return "" if number is None else str(int(math.floor(number * 1000000 + 0.5)))

    terms, n, h1, h2 = [], 0, 0, 0
    for r in rows:
        text = "|".join([r["source_table"], r["source_key"], r["field"], source_text(r["value"]), r["unit"] or "",
                         r["factor_set"] or "", r["factor_id"] or "", number_text(r["normalized_value"]),
                         r["quality"] or ""])
        digest = hashlib.md5(text.encode()).hexdigest()
        n, h1, h2 = n + 1, h1 + int(digest[0:15], 16), h2 + int(digest[15:30], 16)
        if r["normalized_value"] is not None and r["normalized_unit"] is not None:
            try:
                terms.append(r["normalized_value"] * units.factor(r["normalized_unit"], kpi.unit))
            except Exception:
                pass  # a unit that cannot be converted: the row counts, its value does not (unit_mismatch)
    total = functools.reduce(operator.add, sorted(terms)) if terms else None
    inputs = hashlib.sha256(f"{n}:{h1}:{h2}".encode()).hexdigest()
    return total, chain.sha256_json({
        "kpi": kpi.id, "site": value["site"], "period": value["period"], "value": ag._fmt(total), "unit": kpi.unit,
        "rule": kpi.rule, "catalog": catalog_version, "inputs": inputs})


def _state(ws):
    with ws.read() as conn:
        staging = conn.execute(sa.text("SELECT count(*), min(id), max(id) FROM staging_rows")).one()
    return tuple(staging), sorted((r["kpi"], r["site"] or "", r["period"], r["result_hash"]) for r in ag.kpi_rows(ws))


def test_a_cancelled_apply_or_recompute_changes_nothing(demo_ws):
    ws, _ = demo_ws
    before = _state(ws)
    messages = []
    cancel = CancelToken()

    def progress(text):  # cancelled once the first staging rows are written: mid-apply
        messages.append(text)
        if "staging rows written" in text:
            cancel.cancel()

    with pytest.raises(MappingCancelled) as raised:
        apply.apply_mapping(ws, demo.SAMPLE_MAPPING, progress=progress, cancel=cancel)
    assert "cancelled" in raised.value.describe() and "Nothing was changed" in raised.value.describe()
    assert any("staging rows written" in m for m in messages)
    assert _state(ws) == before
    with pytest.raises(MappingCancelled):
        ag.aggregate(ws, cancel=cancel)  # already cancelled: stops before its first statement
    assert _state(ws) == before
    ag.aggregate(ws)  # and the workspace works on: the same KPIs again
    assert _state(ws)[1] == before[1]
