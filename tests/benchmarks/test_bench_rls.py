"""What row-level security costs on a shared PostgreSQL workspace.

Run with `scripts/bench.sh` (marker `benchmark`). 1,000,000 rows land in 100,000-row
chunks through raw_tables.append into a raw table twice: on an unshared workspace as a
superuser (plain COPY; the policies do not apply) and on a shared one as an analyst
(COPY into a temporary table, then one INSERT: PostgreSQL refuses COPY FROM under
row-level security). Then `count(*), sum(kwh)` over each table, best of five, and the
plan under the policy, which must show the session's organization as an InitPlan
(evaluated once) with the scan still parallel. Prints the figures; asserts only that
every row landed and the plan's shape.
"""

from __future__ import annotations

import time

import pytest

from tests.pg_shared import shared_database

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(1800)]

ROWS, CHUNK = 1_000_000, 100_000


def _batch(i: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = pa.array(range(i * CHUNK, (i + 1) * CHUNK), pa.int64())
    return pa.table({"id": ids, "site": pc.binary_join_element_wise("S", pc.cast(pc.bit_wise_and(ids, 7), pa.string()), ""),
                     "kwh": pc.multiply(pc.cast(ids, pa.float64()), 1.25), "ts": pc.cast(ids, pa.timestamp("s"))})


def _land_and_scan(ws) -> tuple[float, float, str]:
    from esg_workbench.workspace import raw_tables

    table = raw_tables.raw_table_name("bench", "rls")  # a raw table's name (the shared workspace checks it)
    with ws.transaction() as conn:
        raw_tables.create_table(ws, conn, table, _batch(0).schema)
    start = time.perf_counter()
    for i in range(ROWS // CHUNK):
        with ws.transaction() as conn:
            raw_tables.append(ws, conn, table, _batch(i), 1, i)
    landed = time.perf_counter() - start
    with ws.read() as conn:
        conn.exec_driver_sql(f"ANALYZE {table}")
        scans = []
        for _ in range(5):
            start = time.perf_counter()
            count = conn.exec_driver_sql(f"SELECT count(*), sum(kwh) FROM {table}").one()[0]
            scans.append(time.perf_counter() - start)
        plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN SELECT count(*), sum(kwh) FROM {table}").scalars())
    assert count == ROWS
    return landed, min(scans), plan


def test_row_level_security_cost():
    from esg_workbench.workspace import open_workspace, organizations

    with shared_database() as plain, shared_database() as shared:
        ws = open_workspace(plain.admin_url)
        try:
            plain_land, plain_scan, _ = _land_and_scan(ws)
        finally:
            ws.close()
        alice = shared.role("alice")
        organizations.init_postgres(shared.url(alice), shared.admin_url, organization="bench")
        ws = open_workspace(shared.url(alice))
        try:
            rls_land, rls_scan, plan = _land_and_scan(ws)
        finally:
            ws.close()
    print(f"\nlanding {ROWS:,} rows in {CHUNK:,}-row chunks: superuser without policies {plain_land:.2f} s, "
          f"analyst under row-level security {rls_land:.2f} s ({rls_land / plain_land:.2f}x)")
    print(f"count(*), sum(kwh) best of 5: {plain_scan * 1000:.0f} ms without, {rls_scan * 1000:.0f} ms under the policy")
    print(plan)
    assert "InitPlan" in plan and "Gather" in plan, plan
