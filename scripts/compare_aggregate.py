"""Do two versions of the code compute the same KPIs? An identity check for changes to
mapping/aggregate.py (and what it calls) that should change nothing but speed.

    python scripts/compare_aggregate.py prepare demo|methodology|bench PATH   # a workspace to compare on
    python scripts/compare_aggregate.py compare --baseline CHECKOUT [--seed N] PATH [PATH ...]

`prepare` builds a DuckDB workspace with staging rows: `demo` (the `esg-workbench demo`
data through the shipped sample mapping), `methodology` (tests/mapping/test_methodology.py's
dataset: several regions, gases, factor vintages, mapped contractual instruments, plus
one entered by hand) or `bench` (tests/benchmarks/test_bench_mapping.py's readings, 1,000,000
by default, ESG_COMPARE_ROWS=N for another size).

`compare` recomputes the KPIs of a copy of each workspace with the baseline checkout's
code and with this checkout's code, each in a process of its own, once per variant
(VARIANTS: no estimation, each gap estimation method, a fiscal year starting in April),
one after the other on the same copy, and compares what each recompute wrote: every
kpi_values row (ids, values to the last bit, units, parts, flags in their order,
result hashes), the kpi_lineage rows, the audit entry's output hash and metadata, and
the recompute's result. Only the run id and the times may differ. Exit status 1 when
anything else does.

Both processes run with the same PYTHONHASHSEED (`--seed N`, default 0): until the
sites were sorted (aggregate._fill_missing), the order in which aggregate.py made the
empty values of missing months (and so their ids, the order of ids in `parts`, of flags
passed up to totals, and of the terms of a total with estimated months) followed the
iteration order of a set of site names, which differs from one process to the next; a
baseline from before then needs the same seed to be comparable at all (and gives rows in
another order than the code after it, with the same output hash).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: (name, keyword arguments of aggregate.aggregate)
VARIANTS = [
    ("as set", {}),
    ("previous_year", {"estimate": "previous_year"}),
    ("neighbours", {"estimate": "neighbours"}),
    ("per_headcount", {"estimate": "per_headcount"}),
    ("fiscal April", {"fiscal_start": 4}),
]


def prepare(kind: str, path: str) -> None:
    from esg_workbench.workspace import open_workspace

    if Path(path).exists():
        raise SystemExit(f"{path} exists already")
    if kind == "bench":
        from tests.benchmarks import test_bench_mapping as bench

        bench._land(path, int(os.environ.get("ESG_COMPARE_ROWS", "1000000")))
    ws = open_workspace(path)
    try:
        if kind == "demo":
            from esg_workbench import demo

            demo.run_demo(ws)
        elif kind == "methodology":
            from esg_workbench.mapping import apply, instruments, store
            from tests.mapping import test_instruments, test_methodology

            test_methodology._land_all(ws)
            apply.apply_mapping(ws, store.save_mapping(ws, test_methodology._mapping(), author="compare"))
            instruments.add(ws, **test_instruments.REGO)
        elif kind == "bench":
            from esg_workbench.mapping import apply
            from tests.benchmarks import test_bench_mapping as bench

            apply.apply_mapping(ws, bench.bench_mapping(ws))
        else:
            raise SystemExit(f"unknown kind {kind!r}: demo, methodology or bench")
    finally:
        ws.close()


def recompute(path: str, out: str) -> None:
    """(child) Every variant's recompute on the workspace at `path`, and what it wrote, into `out`."""
    from esg_workbench.mapping import aggregate
    from esg_workbench.workspace import open_workspace

    ws = open_workspace(path)
    runs = []
    for name, options in VARIANTS:
        result = aggregate.aggregate(ws, **options)
        with ws.read() as conn:
            values = conn.exec_driver_sql(
                "SELECT id, organization_id, site, period, period_type, kpi, value, unit, rule, input_rows, parts, "
                "quality, result_hash, catalog_version FROM kpi_values ORDER BY id").all()
            lineage = conn.exec_driver_sql("SELECT kpi_value_id, staging_row_id FROM kpi_lineage "
                                           "ORDER BY kpi_value_id, staging_row_id").all()
            entry = conn.exec_driver_sql("SELECT output_hash, metadata FROM esg_ingestion_audit "
                                         "WHERE action = 'kpi.aggregate' ORDER BY id DESC LIMIT 1").one()
        metadata = json.loads(entry[1])
        metadata.pop("run_id")
        runs.append({
            "variant": name,
            # a float as its repr: equal texts, equal bits
            "values": [[repr(v) if isinstance(v, float) else v for v in row] for row in values],
            "lineage": [list(r) for r in lineage],
            "output_hash": entry[0], "metadata": metadata,
            "result": {k: v for k, v in vars(result).items() if k not in ("run_id", "seconds")},
        })
    ws.close()
    Path(out).write_text(json.dumps(runs))


def _run(tree: Path, workspace: str, scratch: Path, seed: str) -> list[dict]:
    copy, out = scratch / "ws.duckdb", scratch / "out.json"
    shutil.copyfile(workspace, copy)
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": seed}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "recompute", str(copy), str(out)],
                          cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the recompute with {tree} failed:\n{done.stderr[-3000:]}")
    runs = json.loads(out.read_text())
    copy.unlink()
    out.unlink()
    return runs


def _differences(old: dict, new: dict, limit: int = 5) -> list[str]:
    found = []
    for part in ("output_hash", "metadata", "result", "lineage"):
        if old[part] != new[part]:
            found.append(f"{part}: {str(old[part])[:300]} != {str(new[part])[:300]}")
    if len(old["values"]) != len(new["values"]):
        found.append(f"{len(old['values'])} KPI values != {len(new['values'])}")
    for a, b in zip(old["values"], new["values"]):
        if a != b and len(found) < limit:
            found.append(f"row {a[0]}: {a} != {b}")
    return found


def compare(baseline: str, workspaces: list[str], seed: str = "0") -> int:
    failed = 0
    with tempfile.TemporaryDirectory(prefix="compare-aggregate-") as scratch:
        for workspace in workspaces:
            old = _run(Path(baseline).resolve(), workspace, Path(scratch), seed)
            new = _run(REPO, workspace, Path(scratch), seed)
            for a, b in zip(old, new):
                problems = _differences(a, b)
                failed += bool(problems)
                status = "DIFFERENT" if problems else "identical"
                print(f"{Path(workspace).name} [{a['variant']}]: {len(b['values']):,} KPI values, "
                      f"{len(b['lineage']):,} lineage rows, output hash {b['output_hash'][:16]}: {status}")
                for p in problems:
                    print(f"    {p}")
    return 1 if failed else 0


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "prepare":
        prepare(*args)
    elif command == "recompute":
        recompute(*args)
    elif command == "compare" and args[:1] == ["--baseline"]:
        seed = "0"
        if args[2:3] == ["--seed"]:
            seed, args = args[3], args[:2] + args[4:]
        sys.exit(compare(args[1], args[2:], seed))
    else:
        raise SystemExit(__doc__)
