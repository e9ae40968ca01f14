"""Mapping benchmark: apply a mapping to 1,000,000 landed rows and aggregate the KPIs.

Run with `scripts/bench.sh tests/benchmarks/test_bench_mapping.py` (or
`pytest -m benchmark tests/benchmarks/test_bench_mapping.py -s`). Figures are printed,
not asserted; the assertions are about correctness (every row mapped, totals right).

The landed table is made directly in a DuckDB workspace (1,000,000 electricity readings
over 50 sites and 24 months, with a site lookup table), the mapping is the sample's
electricity mapping: lookups, unit conversion, an expression, a value map, and per-gas
emissions for location- and market-based Scope 2 (7 staging rows per source row).

Printed per step (apply, aggregate, then a full re-apply and re-aggregate as after a
mapping change, then drill-downs): wall seconds, the CPU seconds of the process (DuckDB's
threads included; on a busy machine wall time mostly measures the other work), rows/s,
and the process's peak RSS so far; with the load average, since these 2-core machines
are shared. A DuckDB workspace has no ART indexes on staging_rows and kpi_lineage and
takes staging row ids in blocks (see workspace/schema.py and mapping/apply.py).
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from esg_workbench.mapping import aggregate as ag
from esg_workbench.mapping import apply, sites, store
from esg_workbench.workspace import open_workspace
from tests.mapping.conftest import land

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(1800)]
ROWS = 1_000_000


#: staging rows the sample electricity mapping makes per reading (measured: 4 since the
#: methodology changes of issue 13, 7 before)
STAGING_PER_ROW = 4


def test_apply_and_aggregate_one_million_rows(tmp_path):
    ws = open_workspace(str(tmp_path / "bench.duckdb"))
    ids = pa.array(range(1, ROWS + 1), pa.int64())
    site = pc.add(pc.divide(ids, pa.scalar(20_000, pa.int64())), pa.scalar(1, pa.int64()))  # 50 sites
    base = dt.date(2023, 1, 31)
    days = [base + dt.timedelta(days=30 * (i % 24)) for i in range(24)]
    land(ws, "erp", "sites", pa.table({"id": list(range(1, 52)), "site_code": [f"S{i:02d}" for i in range(1, 52)]}))
    for i in range(1, 52):  # UK sites: DESNZ's electricity factor, four gases (2024 rows take the 2023 vintage)
        sites.set_location(ws, f"S{i:02d}", "GB")
    land(ws, "erp", "readings", pa.table({
        "id": ids, "site_id": site, "reading_date": pa.array([days[i % 24] for i in range(ROWS)], pa.date32()),
        "kwh": pc.add(pc.cast(pc.multiply(pc.bit_wise_and(ids, pa.scalar(1023, pa.int64())), pa.scalar(3, pa.int64())), pa.float64()), pa.scalar(100.0)),
        "tariff": pa.array(["green" if i % 3 == 0 else "standard" for i in range(ROWS)]),
        "renewable_share": pa.array([0.4] * ROWS, pa.float64())}))
    expected_mwh = pc.sum(land_kwh := pc.add(pc.cast(pc.multiply(pc.bit_wise_and(ids, pa.scalar(1023, pa.int64())), pa.scalar(3, pa.int64())), pa.float64()), pa.scalar(100.0))).as_py() / 1000
    del land_kwh
    shipped = store.shipped_mapping("sample_erp")
    table = next(t for t in shipped.tables if t.id == "electricity")
    table.stream = "readings"
    table.edges = [e for e in table.edges if e.target not in ("meter", "supplier")]
    site_edge = next(e for e in table.edges if e.target == "site")
    site_edge.source, site_edge.transforms = "site_id", site_edge.transforms[1:]
    shipped.tables, shipped.connector, shipped.name = [table], "erp", "bench"
    mapping = store.save_mapping(ws, shipped, author="bench")

    def measure(step):
        cpu, wall = _cpu(), time.perf_counter()
        out = step()
        return out, time.perf_counter() - wall, _cpu() - cpu, _peak_mb()

    landed_rss = _peak_mb()
    (result, applied, applied_cpu, applied_rss) = measure(lambda: apply.apply_mapping(ws, mapping))
    (agg, aggregated, aggregated_cpu, aggregated_rss) = measure(lambda: ag.aggregate(ws))

    assert result.source_rows == ROWS and result.staging_rows == STAGING_PER_ROW * ROWS
    total = ag.find_value(ws, "energy_total", "2023", None)["value"] + ag.find_value(ws, "energy_total", "2024", None)["value"]
    assert total == pytest.approx(expected_mwh, rel=1e-9)
    with ws.read() as conn:
        assert conn.exec_driver_sql("SELECT count(DISTINCT id) FROM staging_rows").scalar() == STAGING_PER_ROW * ROWS

    # a mapping change: everything re-mapped (every staging row deleted and written again) and re-aggregated
    (again, reapplied, reapplied_cpu, reapplied_rss) = measure(lambda: apply.apply_mapping(ws, mapping))
    (agg2, reaggregated, reaggregated_cpu, reaggregated_rss) = measure(lambda: ag.aggregate(ws))
    assert again.staging_rows == STAGING_PER_ROW * ROWS and agg2.lineage_rows == agg.lineage_rows

    # drill-down: a site-month value (its staging rows via kpi_lineage) and an organization-year total
    drills = []
    for kpi, period, site in [("ghg_scope2_location", "2023-06", "S07"), ("energy_total", "2024", None)]:
        value = ag.find_value(ws, kpi, period, site)
        started = time.perf_counter()
        found = ag.drill_down(ws, value["id"])
        drills.append(f"{kpi} {period} {site or 'org'}: {found['staging_row_count']:,} rows in "
                      f"{(time.perf_counter() - started) * 1000:.0f} ms")
        assert found["staging_row_count"] == value["input_rows"]

    print(f"\n[bench mapping] load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{ROWS:,} landed rows -> {result.staging_rows:,} staging rows; peak RSS after landing {landed_rss:.0f} MB")
    for name, wall, cpu, rss, extra in [
            ("apply", applied, applied_cpu, applied_rss,
             f"{ROWS / applied:,.0f} source rows/s, {result.staging_rows / applied:,.0f} staging rows/s"),
            ("aggregate", aggregated, aggregated_cpu, aggregated_rss,
             f"{agg.values:,} KPI values, {agg.lineage_rows:,} lineage links"),
            ("re-apply", reapplied, reapplied_cpu, reapplied_rss, f"{ROWS / reapplied:,.0f} source rows/s"),
            ("re-aggregate", reaggregated, reaggregated_cpu, reaggregated_rss,
             "same output hash" if agg2.output_hash == agg.output_hash else "OUTPUT HASH DIFFERS")]:
        print(f"  {name:<13} {wall:6.2f} s (CPU {cpu:6.2f} s)  peak RSS {rss:5.0f} MB  {extra}")
    print(f"  apply + aggregate {applied + aggregated:.2f} s ({ROWS / (applied + aggregated):,.0f} rows/s)")
    print("  drill-down: " + "; ".join(drills))
    ws.close()


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
