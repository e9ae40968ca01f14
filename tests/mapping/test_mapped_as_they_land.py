"""New chunks from a sync are mapped as they land: no explicit apply after a delta sync."""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa

from esg_workbench import demo
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace


def staging_count(ws, table: str) -> int:
    with ws.read() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM staging_rows WHERE source_table LIKE :t"),
                            {"t": f"%{table}"}).scalar()


def test_a_delta_sync_maps_its_new_rows_and_refreshes_the_kpis(tmp_path):
    ws = open_workspace(str(tmp_path / "w.duckdb"))
    summary = demo.run_demo(ws)
    assert summary["status"] == "success"
    before = staging_count(ws, "electricity_readings")
    with ws.read() as conn:
        kpis_before = conn.execute(sa.text("SELECT max(computed_at) FROM kpi_values")).scalar()

    source = sqlite3.connect(summary["source"])
    source.execute("""INSERT INTO electricity_readings (id, meter_id, reading_date, kwh, tariff, supplier,
                      renewable_share, updated_at)
                      SELECT id + 100000, meter_id, '2024-12-31', 1000, tariff, supplier, renewable_share,
                             '2030-01-01 00:00:00.000000'
                      FROM electricity_readings ORDER BY id LIMIT 1""")
    source.commit()
    source.close()

    result = SyncEngine(ws).run(SyncRequest(connector=demo.DEMO_CONNECTOR, tables=["electricity_readings"]))
    assert result.status.value == "success" and result.rows_written >= 1
    assert result.mapped and "sample_erp" in result.mapped[0] and "not applied" not in result.mapped[0]
    assert staging_count(ws, "electricity_readings") > before
    with ws.read() as conn:
        assert conn.execute(sa.text("SELECT max(computed_at) FROM kpi_values")).scalar() > kpis_before
