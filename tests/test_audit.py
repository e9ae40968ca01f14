"""The audit chain: appends link up; any change, removal or reordering is found."""

from __future__ import annotations

import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.workspace import open_workspace
from esg_workbench.workspace.schema import esg_ingestion_audit as audit


def make_chain(tmp_path, n=5):
    ws = open_workspace(str(tmp_path / "w.duckdb"))
    for i in range(n):
        with ws.transaction() as conn:
            chain.append(ws, conn, "test.step", metadata={"i": i, "text": "ünï"}, input_hash=f"{i:064x}")
    return ws


def ids(ws):
    with ws.read() as conn:
        return conn.execute(sa.select(audit.c.id).order_by(audit.c.id)).scalars().all()


def test_intact_chain_verifies(tmp_path):
    ws = make_chain(tmp_path)
    result = chain.verify(ws)
    assert result.ok and result.entries == 5
    with ws.read() as conn:
        rows = conn.execute(sa.select(audit).order_by(audit.c.id)).all()
    assert rows[0].previous_hash == chain.GENESIS
    assert all(b.previous_hash == a.entry_hash for a, b in zip(rows, rows[1:]))


def test_changed_metadata_names_the_entry(tmp_path):
    ws = make_chain(tmp_path)
    third = ids(ws)[2]
    with ws.transaction() as conn:
        conn.execute(sa.update(audit).where(audit.c.id == third).values(metadata='{"i":99}'))
    result = chain.verify(ws)
    assert not result.ok and result.first_bad_id == third
    assert f"entry {third}" in result.describe() and "changed" in result.reason


def test_removed_entry_is_found(tmp_path):
    ws = make_chain(tmp_path)
    second, third = ids(ws)[1:3]
    with ws.transaction() as conn:
        conn.execute(sa.delete(audit).where(audit.c.id == second))
    result = chain.verify(ws)
    assert not result.ok and result.first_bad_id == third and "removed" in result.reason


def test_changed_actor_is_found(tmp_path):
    ws = make_chain(tmp_path)
    last = ids(ws)[-1]
    with ws.transaction() as conn:
        conn.execute(sa.update(audit).where(audit.c.id == last).values(actor="mallory"))
    assert chain.verify(ws).first_bad_id == last
