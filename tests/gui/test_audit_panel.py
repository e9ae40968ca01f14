"""The Audit panel: Verify chain says in plain words whether the chain is whole, what its
head is (and copies it), and names the entry where a changed chain breaks."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.workspace import open_workspace


@pytest.fixture
def panel(qtbot, tmp_path):
    from esg_workbench.gui.audit_panel import AuditPanel
    from esg_workbench.gui.workers import WorkerPool

    ws = open_workspace(str(tmp_path / "w.duckdb"))
    for i in range(3):
        with ws.transaction() as conn:
            chain.append(ws, conn, "test.step", metadata={"i": i})
    pool = WorkerPool()
    widget = AuditPanel(pool)
    qtbot.addWidget(widget)
    with qtbot.waitSignal(widget.loaded, timeout=30000):
        widget.set_workspace(ws)
    yield widget, ws
    qtbot.waitUntil(lambda: not pool.busy, timeout=30000)
    assert pool.shutdown(10000)
    ws.close()


def test_verify_shows_the_head_in_plain_words_and_copies_it(qtbot, panel):
    from PySide6.QtWidgets import QApplication

    widget, ws = panel
    assert not widget.copy_head_button.isEnabled()
    with qtbot.waitSignal(widget.verified, timeout=30000) as blocker:
        widget.verify_button.click()
    assert blocker.args[0].ok
    anchor = chain.anchor(ws)
    assert widget.result.text() == "The audit chain is intact (3 entries verified, matching its recorded head)."
    assert widget.head.text().startswith(f"Chain head: 3 entries, last hash {anchor.last_hash[:12]}")
    assert "audit verify --anchor 3:" in widget.head.text()
    widget.copy_head_button.click()
    assert QApplication.clipboard().text() == str(anchor)


def test_verify_names_the_removed_tail(qtbot, panel):
    widget, ws = panel
    with ws.transaction() as conn:
        conn.execute(sa.text("DELETE FROM esg_ingestion_audit WHERE id = (SELECT max(id) FROM esg_ingestion_audit)"))
    with qtbot.waitSignal(widget.verified, timeout=30000) as blocker:
        widget.verify_button.click()
    assert not blocker.args[0].ok
    assert widget.result.text() == ("The audit chain is broken at its end: the recorded head says 3 entries, "
                                    "the chain has 2: entries were removed")


def test_entries_name_their_connector(qtbot, panel):
    """Audit metadata holds connector ids; the panel shows the connector's name beside them."""
    from esg_workbench.gui.audit_panel import COLUMNS
    from esg_workbench.sync import operations

    widget, ws = panel
    record = operations.add_connector(ws, "plant-erp", "sqlite", {"path": "/nonexistent/erp.sqlite"})
    with ws.transaction() as conn:
        chain.append(ws, conn, "test.named", metadata={"connector_id": record.id})
        chain.append(ws, conn, "test.gone", metadata={"connector_id": "c0ffee"})
    with qtbot.waitSignal(widget.loaded, timeout=30000):
        widget.refresh()
    shown = {widget.model.raw(r, COLUMNS.index("action")): widget.model.raw(r, COLUMNS.index("connector"))
             for r in range(widget.model.rowCount())}
    assert shown["test.named"] == "plant-erp" and shown["test.gone"] == "c0ffee" and shown["test.step"] == ""
