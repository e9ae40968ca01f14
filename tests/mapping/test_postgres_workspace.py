"""The mapping engine on a PostgreSQL workspace: the demo's sync, apply and aggregation
against a fresh database on the local server, compared with the same run into DuckDB.

The DuckDB path takes its staging row ids in blocks and has no ART indexes on the bulk
tables; PostgreSQL keeps `nextval` per row and the specification's B-tree indexes. This
checks that both give the same staging rows and KPIs.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from esg_workbench import demo
from esg_workbench.mapping import aggregate as ag
from esg_workbench.mapping import apply
from esg_workbench.workspace import open_workspace
from esg_workbench.workspace.schema import POSTGRES_ONLY_INDEXES
from tests.conftest import PG_HOST, PG_PORT, PG_USER

# not `value`: the source value as text, which each database spells its own way (913 / 913.0)
_CONTENT = ("source_table, source_key, field, period, site, category, subcategory, scope, method, unit, "
            "normalized_unit, factor_id, quality")


def _staging(ws) -> list[tuple]:
    with ws.read() as conn:
        rows = conn.execute(sa.text(f"SELECT {_CONTENT}, normalized_value FROM staging_rows")).all()
    return sorted((tuple("" if v is None else v for v in r[:-1]) + (None if r[-1] is None else round(r[-1], 9),)
                   for r in rows))


def _kpis(ws) -> dict[tuple, tuple]:
    return {(r["kpi"], r["site"] or "", r["period"]): (None if r["value"] is None else round(r["value"], 6),
                                                      tuple(sorted(r["quality"])), r["input_rows"])
            for r in ag.kpi_rows(ws)}


@pytest.fixture
def pg_ws(pg_database, tmp_path, monkeypatch):
    # the sample ERP file goes next to the test, not into the user's data directory
    monkeypatch.setattr(demo, "sample_directory", lambda workspace: tmp_path)
    ws = open_workspace(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}")
    yield ws
    ws.close()


def test_demo_apply_and_aggregate_on_postgres(pg_ws, demo_ws):
    summary = demo.run_demo(pg_ws)
    assert summary["status"] == "success", summary
    kpis = summary["kpis"]
    assert kpis["staging_rows"] > 0 and kpis["kpi_values"] > 0
    duck, duck_summary = demo_ws
    assert kpis["staging_rows"] == duck_summary["kpis"]["staging_rows"]

    # the same staging rows and KPIs as the DuckDB workspace computes from the same sample
    assert _staging(pg_ws) == _staging(duck)
    pg_values, duck_values = _kpis(pg_ws), _kpis(duck)
    assert pg_values.keys() == duck_values.keys()
    for key, (value, quality, rows) in pg_values.items():
        d_value, d_quality, d_rows = duck_values[key]
        assert quality == d_quality and rows == d_rows, key
        assert (value is None) == (d_value is None), key
        assert value is None or value == pytest.approx(d_value, rel=1e-9, abs=1e-9), key
    # and the same result hashes: they depend on the content only, not on the backend or ids
    pg_hashes = {(r["kpi"], r["site"], r["period"]): r["result_hash"] for r in ag.kpi_rows(pg_ws)}
    duck_hashes = {(r["kpi"], r["site"], r["period"]): r["result_hash"] for r in ag.kpi_rows(duck)}
    differing = [k for k in pg_hashes if pg_hashes[k] != duck_hashes.get(k)]
    assert not differing, f"{len(differing)} of {len(pg_hashes)} hashes differ, e.g. {differing[:3]}"

    with pg_ws.read() as conn:
        ids = conn.execute(sa.text("SELECT count(*), count(DISTINCT id) FROM staging_rows")).one()
        links = conn.execute(sa.text("SELECT count(*) FROM kpi_lineage")).scalar()
        indexes = set(conn.execute(sa.text(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")).scalars())
    assert ids[0] == ids[1] == kpis["staging_rows"]
    assert links > 0
    # the specification's indexes stay B-trees on PostgreSQL
    assert set(POSTGRES_ONLY_INDEXES) <= indexes

    # drill-down from a roll-up to source keys, through kpi_lineage
    value = next(r for r in ag.kpi_rows(pg_ws, period_type="quarter", kpis=["energy_total"])
                 if r["site"] and r["input_rows"])
    found = ag.drill_down(pg_ws, value["id"])
    assert found["staging_row_count"] == value["input_rows"] and found["source_keys"]

    # re-applying replaces the rows (new ids from the sequence) and the KPIs come out the same
    before = _kpis(pg_ws)
    again = apply.apply_mapping(pg_ws, demo.SAMPLE_MAPPING)
    assert again.staging_rows == kpis["staging_rows"]
    ag.aggregate(pg_ws)
    assert _kpis(pg_ws) == before
    with pg_ws.read() as conn:
        assert conn.execute(sa.text("SELECT min(id) FROM staging_rows")).scalar() > ids[0]
