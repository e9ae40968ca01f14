"""Fixtures: workspaces with landed tables made directly (no source needed), and one
real demo run shared by the tests that read its KPIs."""

from __future__ import annotations

import pyarrow as pa
import pytest

from esg_workbench.workspace import open_workspace
from esg_workbench.workspace import connectors_store, raw_tables, sync_records
from esg_workbench.workspace.sync_records import StreamState


def land(ws, connector: str, stream: str, table: pa.Table, sync_id: int = 1) -> str:
    """Put `table` into the workspace as if a sync of `connector` had landed it."""
    with ws.transaction() as conn:
        try:
            record = connectors_store.get(ws, conn, connector)
        except Exception:
            record = connectors_store.add(ws, conn, connector, "sqlite", {"path": "/nonexistent"})
        name = raw_tables.raw_table_name(record.id, stream)
        if raw_tables.existing_columns(ws, conn, name) is None:
            raw_tables.create_table(ws, conn, name, table.schema)
            sync_records.put_state(ws, conn, StreamState(record.id, stream, name, plan={"primary_key": ["id"]}))
        raw_tables.append(ws, conn, name, table, sync_id, 1)
    return name


@pytest.fixture
def ws(tmp_path):
    workspace = open_workspace(str(tmp_path / "ws.duckdb"))
    yield workspace
    workspace.close()


@pytest.fixture(scope="session")
def demo_ws(tmp_path_factory):
    """The real `esg-workbench demo` into a fresh workspace (run once)."""
    from esg_workbench import demo

    path = tmp_path_factory.mktemp("demo") / "ws.duckdb"
    workspace = open_workspace(str(path))
    summary = demo.run_demo(workspace)
    yield workspace, summary
    workspace.close()
