"""Mapping benchmark: apply a mapping to 1,000,000 (and 10,000,000) landed rows and aggregate.

Run with `scripts/bench.sh -k bench_mapping` (or `pytest -m benchmark
tests/benchmarks/test_bench_mapping.py -s`). Figures are printed, not asserted; the
assertions are about correctness (every row mapped, totals right, drill-down complete).

One process per code tree lands the readings into a DuckDB workspace file (N electricity
readings over 50 sites and 24 months, with a site lookup table; generated columnar, no
Python rows; per tree, since each writes its own schema version); each measured run is a
fresh process on a copy of that file, so its peak RSS is the mapping's own. The mapping is the sample's electricity mapping (lookups, unit conversion,
an expression, a value map, location- and market-based Scope 2 with per-gas rows).

Printed per step, in this order in one process: apply, the single-SQL limit (one DuckDB
statement computing the same site-month energy and location-based CO2e sums from the raw
rows with the same factors), aggregate, the limit again, re-apply (a mapping change:
every staging row deleted and written again), re-aggregate, the limit again, then two
drill-downs: wall seconds, CPU seconds of the process (DuckDB's threads included), and
the peak RSS so far; with the load average, since these 2-core machines are shared.

ESG_BENCH_BASELINE=/path/to/another/checkout runs the same measurement on that code too,
interleaved with this one (baseline, branch, baseline, branch: ESG_BENCH_ROUNDS rounds,
default 2), for before/after figures. ESG_BENCH_10M=1 adds the 10,000,000-row run.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(7200)]
REPO = Path(__file__).resolve().parents[2]
SITES = 50


def test_apply_and_aggregate_one_million_rows(tmp_path):
    _compare(tmp_path, 1_000_000)


@pytest.mark.skipif(os.environ.get("ESG_BENCH_10M") != "1", reason="ESG_BENCH_10M=1 runs the 10M-row benchmark")
def test_apply_and_aggregate_ten_million_rows(tmp_path):
    _compare(tmp_path, 10_000_000, rounds=1)


def _compare(tmp_path: Path, rows: int, rounds: int | None = None) -> None:
    baseline = os.environ.get("ESG_BENCH_BASELINE")
    rounds = rounds or int(os.environ.get("ESG_BENCH_ROUNDS", "2" if baseline else "1"))
    trees = [("baseline", Path(baseline)), ("this", REPO)] if baseline else [("this", REPO)]
    # each tree lands its own file: a workspace of a newer schema version is refused by older
    # code, and upgrading a copy would time the upgrade with the apply
    landed = {name: tmp_path / f"landed-{name}.duckdb" for name, _ in trees}
    for name, tree in trees:
        run_child(tree, ["land", str(landed[name]), str(rows)])
    results: dict[str, list[dict]] = {name: [] for name, _ in trees}
    for _ in range(rounds):
        for name, tree in trees:
            copy = tmp_path / f"{name}.duckdb"
            shutil.copyfile(landed[name], copy)
            results[name].append(run_child(tree, ["measure", str(copy), str(rows)]))
            copy.unlink()
    print(f"\n[bench mapping] {rows:,} landed rows; load average at the end {_load()}")
    for name, runs in results.items():
        for i, r in enumerate(runs, 1):
            print(f"  {name} (round {i}, load at start {r['load']}): {rows:,} -> {r['staging_rows']:,} staging rows, "
                  f"{r['lineage_rows']:,} lineage rows")
            for step in r["steps"]:
                print(f"    {step['name']:<13} {step['wall']:7.2f} s (CPU {step['cpu']:7.2f} s)  "
                      f"peak RSS {step['rss']:6.0f} MB  {step.get('extra', '')}")
            a, g = (next(s for s in r["steps"] if s["name"] == n) for n in ("apply", "aggregate"))
            print(f"    apply + aggregate {a['wall'] + g['wall']:.2f} s ({rows / (a['wall'] + g['wall']):,.0f} rows/s); "
                  f"limit (median) {sorted(s['wall'] for s in r['steps'] if s['name'] == 'single SQL')[1]:.3f} s; "
                  f"same output hash after re-aggregation: {r['same_hash']}")
            print("    drill-down: " + "; ".join(r["drills"]))


def run_child(tree: Path, args: list[str], script: str = __file__, timeout: int = 7000) -> dict:
    """Run `script` (this module by default) with `args` as a fresh process on the code of
    `tree`; the JSON its last line prints."""
    env = {**os.environ, "PYTHONPATH": str(tree), "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, str(Path(script).resolve()), *args], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the child processes ------------------------------------------------------------------------

def _land(path: str, rows: int) -> dict:
    """A workspace with `rows` readings and the sites lookup, landed as Arrow tables."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from esg_workbench.mapping import sites
    from esg_workbench.workspace import open_workspace
    from tests.mapping.conftest import land

    ws = open_workspace(path)
    ids = pa.array(range(1, rows + 1), pa.int64())
    site = pc.add(pc.divide(ids, pa.scalar(rows // SITES, pa.int64())), pa.scalar(1, pa.int64()))
    day = pc.add(pc.multiply(pc.remainder(ids, pa.scalar(24, pa.int64())), pa.scalar(30, pa.int64())),
                 pa.scalar(19387, pa.int64()))  # 2023-01-31 + 30 days x (id mod 24)
    land(ws, "erp", "sites", pa.table({"id": list(range(1, SITES + 2)),
                                       "site_code": [f"S{i:02d}" for i in range(1, SITES + 2)]}))
    for i in range(1, SITES + 2):  # UK sites: DESNZ's electricity factor, four gases (2024 rows take the 2023 vintage)
        sites.set_location(ws, f"S{i:02d}", "GB")
    kwh = pc.add(pc.cast(pc.multiply(pc.bit_wise_and(ids, pa.scalar(1023, pa.int64())), pa.scalar(3, pa.int64())),
                         pa.float64()), pa.scalar(100.0))
    step = 1_000_000  # landed in slices, as a sync lands chunks
    for lo in range(0, rows, step):
        n = min(step, rows - lo)
        land(ws, "erp", "readings", pa.table({
            "id": ids.slice(lo, n), "site_id": site.slice(lo, n),
            "reading_date": pc.cast(pc.cast(day.slice(lo, n), pa.int32()), pa.date32()),
            "kwh": kwh.slice(lo, n),
            "tariff": pc.if_else(pc.equal(pc.remainder(ids.slice(lo, n), pa.scalar(3, pa.int64())), 0), "green", "standard"),
            "renewable_share": pa.array([0.4] * n, pa.float64())}))
    ws.close()
    return {"rows": rows, "expected_mwh": pc.sum(kwh).as_py() / 1000}


def bench_mapping(ws):
    """The sample's electricity mapping, reading the landed `readings` and `sites`, saved as 'bench'."""
    from esg_workbench.mapping import store

    shipped = store.shipped_mapping("sample_erp")
    table = next(t for t in shipped.tables if t.id == "electricity")
    table.stream = "readings"
    table.edges = [e for e in table.edges if e.target not in ("meter", "supplier")]
    site_edge = next(e for e in table.edges if e.target == "site")
    site_edge.source, site_edge.transforms = "site_id", site_edge.transforms[1:]
    shipped.tables, shipped.connector, shipped.name = [table], "erp", "bench"
    return store.save_mapping(ws, shipped, author="bench")


def _measure(path: str, rows: int) -> dict:
    from esg_workbench.mapping import aggregate as ag
    from esg_workbench.mapping import apply
    from esg_workbench.workspace import open_workspace

    load = _load()
    ws = open_workspace(path)
    mapping = bench_mapping(ws)
    steps = []

    def measure(name, step, extra=lambda out: ""):
        cpu, wall = _cpu(), time.perf_counter()
        out = step()
        steps.append({"name": name, "wall": time.perf_counter() - wall, "cpu": _cpu() - cpu, "rss": _peak_mb(),
                      "extra": extra(out)})
        return out

    result = measure("apply", lambda: apply.apply_mapping(ws, mapping))
    steps[-1]["extra"] = f"{rows / steps[-1]['wall']:,.0f} source rows/s"
    limit_sql = _limit_sql(ws)
    limit = lambda: measure("single SQL", lambda: _single_sql(ws, limit_sql), lambda out: f"{len(out):,} site-months")  # noqa: E731
    sums = limit()
    agg = measure("aggregate", lambda: ag.aggregate(ws), lambda a: f"{a.values:,} KPI values")
    limit()
    with ws.read() as conn:
        staged = conn.exec_driver_sql("SELECT count(*), count(DISTINCT id) FROM staging_rows").one()
    assert result.source_rows == rows and result.staging_rows == staged[0] == staged[1]
    # the KPIs equal the single statement's sums
    kpis = {(r["kpi"], r["site"], r["period"]): r["value"] for r in ag.kpi_rows(ws, period_type="month") if r["site"]}
    for (site, period), (mwh, tco2e) in sums.items():
        assert kpis[("energy_total", site, period)] == pytest.approx(mwh, rel=1e-9)
        assert kpis[("ghg_scope2_location", site, period)] == pytest.approx(tco2e, rel=1e-9)
    agg2 = agg
    if rows <= 1_000_000:  # (10M: apply and aggregate only, to keep the run under an hour here)
        again = measure("re-apply", lambda: apply.apply_mapping(ws, mapping))
        steps[-1]["extra"] = f"{rows / steps[-1]['wall']:,.0f} source rows/s"
        agg2 = measure("re-aggregate", lambda: ag.aggregate(ws), lambda a: f"{a.values:,} KPI values")
        limit()
        assert again.staging_rows == result.staging_rows and agg2.lineage_rows == agg.lineage_rows
    drills = []
    for kpi, period, site in [("ghg_scope2_location", "2023-06", "S07"), ("energy_total", "2024", None)]:
        value = ag.find_value(ws, kpi, period, site)
        started = time.perf_counter()
        found = ag.drill_down(ws, value["id"])
        drills.append(f"{kpi} {period} {site or 'org'}: {found['staging_row_count']:,} rows in "
                      f"{(time.perf_counter() - started) * 1000:.0f} ms")
        assert found["staging_row_count"] == value["input_rows"]
    ws.close()
    return {"load": load, "staging_rows": result.staging_rows, "lineage_rows": agg.lineage_rows, "steps": steps,
            "drills": drills, "same_hash": agg2.output_hash == agg.output_hash}


def _limit_sql(ws) -> str:
    """One statement over the raw tables: energy (MWh) and location-based CO2e (t) per site
    and month, with the factor the apply chose for each year (DESNZ's UK electricity
    factor; 2024 readings take the 2023 vintage)."""
    with ws.read() as conn:
        raw = dict(conn.exec_driver_sql("SELECT stream, raw_table FROM connector_sync_state").all())
        factors = dict(conn.exec_driver_sql(
            "SELECT year(activity_date), min(factor_value) FROM staging_rows WHERE field = 'ghg_co2e' "
            "AND method = 'location' GROUP BY 1").all())
    readings = next(v for k, v in raw.items() if k.endswith("readings"))
    sites = next(v for k, v in raw.items() if k.endswith("sites"))
    per_year = " ".join(f"WHEN {int(y)} THEN {f!r}" for y, f in sorted(factors.items()))
    return (f"SELECT s.site_code, strftime(r.reading_date, '%Y-%m') AS period, sum(r.kwh) / 1000 AS mwh, "
            f"sum(r.kwh * CASE year(r.reading_date) {per_year} END) / 1000 AS tco2e "
            f'FROM "{readings}" r JOIN "{sites}" s ON s.id = r.site_id GROUP BY 1, 2')


def _single_sql(ws, sql: str) -> dict:
    with ws.read() as conn:
        return {(r[0], r[1]): (r[2], r[3]) for r in conn.exec_driver_sql(sql).all()}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    command, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(_land(path, count) if command == "land" else _measure(path, count)))
