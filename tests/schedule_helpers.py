"""What the scheduler tests share (tests/test_scheduler.py, tests/test_schedule_chains.py):
a workspace of each kind, a PostgreSQL connector on the test database's schema `src`,
and a way to set a job's columns by hand. Import `ws` as a fixture."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.conftest import PG_HOST, PG_PORT, PG_USER

FAST = (0.01, 0.02, 0.04)  # retry delays for the engine: a failing chunk gives up at once


@pytest.fixture(params=["duckdb", "postgres"])
def ws(request, tmp_path, pg_database):
    """A workspace of each kind. The PostgreSQL one lives in the test database's public
    schema; the source tables are in its schema 'src'."""
    from esg_workbench.workspace import open_workspace

    if request.param == "duckdb":
        url = str(tmp_path / "ws.duckdb")
    else:
        url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}"
    workspace = open_workspace(url)
    yield workspace
    workspace.close()


def add_source(ws, pg_database, name="erp", port=PG_PORT, **options):
    """A PostgreSQL connector on the test database's schema src (through `port`: a proxy)."""
    from esg_workbench.sync import operations

    return operations.add_connector(ws, name, "postgres", {
        "host": PG_HOST, "port": port, "database": pg_database, "username": PG_USER, "schema": "src", **options})


def set_job(ws, name, **values):
    """Write a job's columns directly (a slot come, a row as an old version left it)."""
    from esg_workbench.workspace.schema import scheduled_jobs

    with ws.transaction() as conn:
        conn.execute(sa.update(scheduled_jobs).where(scheduled_jobs.c.name == name).values(**values))
