"""Sync through the GUI: start, cancel, resume; the history row and its chunk ledger;
Verify chain, intact and tampered; closing during a sync and resuming at the next start."""

from __future__ import annotations

import sqlalchemy as sa
from PySide6.QtCore import Qt

from esg_workbench.gui.sync_panel import Buttons, button_states
from tests.gui.conftest import SOURCE_ROWS, add_connector

CHUNK = 500


def buttons(panel) -> Buttons:
    return Buttons(panel.sync_button.isEnabled(), panel.resume_button.isEnabled(),
                   panel.cancel_button.isEnabled(), panel.retry_button.isEnabled())


def wait_status(qtbot, panel):
    with qtbot.waitSignal(panel.status_loaded, timeout=20000):
        panel.refresh_status()


def start_and_cancel(qtbot, window):
    """Click Sync, cancel once a few chunks have landed, wait for the end."""
    panel = window.sync
    window.tabs.setCurrentWidget(panel)
    wait_status(qtbot, panel)
    assert buttons(panel) == Buttons(sync=True, resume=False, cancel=False, retry=False)
    qtbot.mouseClick(panel.sync_button, Qt.MouseButton.LeftButton)
    job = window.jobs.job("erp")
    assert job is not None and job.running
    assert buttons(panel) == Buttons(sync=False, resume=False, cancel=True, retry=False)
    qtbot.waitUntil(lambda: job.figures.per_stream.get("public.energy_use", (0,))[0] >= 3, timeout=30000)
    with qtbot.waitSignal(window.jobs.ended, timeout=30000):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
        assert not panel.cancel_button.isEnabled()  # pressed once: cancelling
    return job


def test_sync_cancel_resume_history_and_audit(qtbot, window, source):
    add_connector(qtbot, window, source, "erp", chunk_size=CHUNK, chunk_strategy="id")
    panel = window.sync

    job = start_and_cancel(qtbot, window)
    assert job.result.status.value == "cancelled"
    done_before_resume = job.figures.per_stream["public.energy_use"][0]
    planned = job.figures.per_stream["public.energy_use"][1]
    assert planned == SOURCE_ROWS // CHUNK and 3 <= done_before_resume < planned
    assert "cancelled" in panel.progress.format()
    assert any("Cancelling" in line for line in job.log)
    # the panel learns from connector_status that the stream can be resumed
    qtbot.waitUntil(lambda: panel.resume_button.isEnabled(), timeout=20000)
    assert buttons(panel) == Buttons(sync=True, resume=True, cancel=False, retry=False)
    assert "Unfinished sync of public.energy_use" in panel.state.text()
    badge = window.connectors.list.item(0).data(Qt.ItemDataRole.UserRole + 2)
    assert badge == ("resumable", "warn")

    # resume: only the remaining chunks run, then the table the cancelled run had not
    # started (sites, 3 rows); the sync ends successfully
    with qtbot.waitSignal(window.jobs.ended, timeout=60000):
        qtbot.mouseClick(panel.resume_button, Qt.MouseButton.LeftButton)
    job = window.jobs.job("erp")
    assert job.result.status.value == "success", job.log
    assert job.figures.per_stream["public.energy_use"][:2] == (planned, planned)
    assert [s.stream for s in job.result.streams] == ["public.energy_use", "public.sites"]
    assert job.result.rows_written == SOURCE_ROWS - done_before_resume * CHUNK + 3
    assert panel.progress.value() == 100
    assert panel.figures["chunks"].text() == f"{planned + 1:,} / {planned + 1:,}"  # with sites' one chunk
    assert panel.figures["eta"].text() == "done"
    qtbot.waitUntil(lambda: not panel.resume_button.isEnabled() and panel.sync_button.isEnabled(), timeout=20000)
    with window.workspace.read() as conn:
        raw = job.result.streams[0].raw_table
        assert conn.execute(sa.text(f'SELECT count(*), count(DISTINCT id) FROM "{raw}"')).one() == (SOURCE_ROWS, SOURCE_ROWS)

    # history: the resume run on top, the cancelled one below, with its ledger
    history = window.history
    with qtbot.waitSignal(history.loaded, timeout=20000):
        window.tab_actions[2].trigger()
    model = history.runs_model
    assert model.rowCount() == 2
    assert [model.index(r, 2).data() for r in range(2)] == ["success", "cancelled"]
    assert [model.index(r, 3).data() for r in range(2)] == ["resume", "sync"]
    assert model.index(0, 1).data() == "erp"
    assert model.index(0, 9).data() == f"{SOURCE_ROWS - done_before_resume * CHUNK + 3:,}"
    with qtbot.waitSignal(history.chunks_loaded, timeout=20000) as blocker:
        history.runs_view.setCurrentIndex(model.index(1, 0))
    run_id, chunks = blocker.args
    assert chunks == planned  # sites comes after energy_use: cancelled before it began
    assert "Cancelled by the user" in history.error_box.toPlainText()
    qtbot.mouseClick(history.copy_button, Qt.MouseButton.LeftButton)
    from PySide6.QtGui import QGuiApplication

    assert "Cancelled by the user" in QGuiApplication.clipboard().text()

    # audit: intact; then a tampered entry is named and highlighted
    audit = window.audit
    window.tabs.setCurrentWidget(audit)
    with qtbot.waitSignal(audit.verified, timeout=20000) as blocker:
        qtbot.mouseClick(audit.verify_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0].ok
    assert audit.result.text().startswith("The audit chain is intact")
    with window.workspace.transaction() as conn:
        victim = conn.execute(sa.text(
            "SELECT id FROM esg_ingestion_audit WHERE action = 'sync.chunk' ORDER BY id LIMIT 1 OFFSET 2")).scalar()
        conn.execute(sa.text("UPDATE esg_ingestion_audit SET actor = 'mallory' WHERE id = :id"), {"id": victim})
    with qtbot.waitSignal(audit.loaded, timeout=20000):
        audit.refresh()
    with qtbot.waitSignal(audit.verified, timeout=20000) as blocker:
        qtbot.mouseClick(audit.verify_button, Qt.MouseButton.LeftButton)
    result = blocker.args[0]
    assert not result.ok and result.first_bad_id == victim
    assert f"broken at entry {victim}" in audit.result.text()
    current = audit.view.currentIndex()
    assert audit.model.raw(current.row(), 0) == victim
    assert current.data(Qt.ItemDataRole.BackgroundRole) is not None
    assert "THIS ENTRY BREAKS THE CHAIN" in audit.details.toPlainText()


def test_close_during_sync_asks_cancels_and_next_start_offers_resume(qtbot, make_window, source, answers):
    window = make_window()
    add_connector(qtbot, window, source, "erp", chunk_size=CHUNK, chunk_strategy="id")
    panel = window.sync
    window.tabs.setCurrentWidget(panel)
    wait_status(qtbot, panel)
    qtbot.mouseClick(panel.sync_button, Qt.MouseButton.LeftButton)
    job = window.jobs.job("erp")
    qtbot.waitUntil(lambda: job.figures.chunks_done >= 2, timeout=30000)

    answers["answers"] = [False]  # "Keep running"
    window.close()
    assert window.isVisible() and job.running
    assert "sync(s) are running (erp)" in answers["asked"][-1][1]

    answers["answers"] = [True]  # "Cancel syncs and quit"
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=30000)
    assert job.result.status.value == "cancelled"
    assert not window.pool.busy

    again = make_window()
    assert again.info.isVisible() and again.info.topic == "resume"
    assert "The last sync of erp did not finish" in again.info.label.text()
    with qtbot.waitSignal(again.jobs.ended, timeout=60000):
        qtbot.mouseClick(again.info.buttons[0], Qt.MouseButton.LeftButton)
    assert again.jobs.job("erp").result.status.value == "success"
    assert again.jobs.job("erp").request.resume


def test_button_states():
    idle = dict(connector=True, running=False, cancelling=False, resumable=False, failed_chunks=0)
    assert button_states(**idle) == Buttons(True, False, False, False)
    assert button_states(**{**idle, "resumable": True}) == Buttons(True, True, False, False)
    assert button_states(**{**idle, "resumable": True, "failed_chunks": 2}) == Buttons(True, True, False, True)
    assert button_states(**{**idle, "running": True, "resumable": True}) == Buttons(False, False, True, False)
    assert button_states(**{**idle, "running": True, "cancelling": True}) == Buttons(False, False, False, False)
    assert button_states(**{**idle, "connector": False}) == Buttons(False, False, False, False)
    assert button_states(**{**idle, "status_known": False}) == Buttons(False, False, False, False)


def test_failed_chunks_are_retried_alone(qtbot, window, source):
    """The source goes away mid-sync: the remaining chunks fail after their retries, the
    run ends partly synced, Retry failed chunks lights up and lands just those."""
    from tests.fault_proxy import FaultProxy

    with FaultProxy((source["host"], source["port"])) as proxy:
        add_connector(qtbot, window, {**source, "port": proxy.port}, "erp", chunk_size=CHUNK * 10,
                      chunk_strategy="id")
        panel = window.sync
        window.tabs.setCurrentWidget(panel)
        wait_status(qtbot, panel)
        qtbot.mouseClick(panel.sync_button, Qt.MouseButton.LeftButton)
        job = window.jobs.job("erp")
        qtbot.waitUntil(lambda: job.figures.per_stream.get("public.energy_use", (0,))[0] >= 2, timeout=30000)
        proxy.cut()
        qtbot.waitUntil(lambda: not job.running, timeout=90000)
        assert job.result.status.value in ("partial_success", "failed"), job.log
        failed = job.figures.chunks_failed
        assert failed >= 1
        qtbot.waitUntil(lambda: panel.retry_button.isEnabled(), timeout=20000)
        assert f"{failed} failed chunk(s)" in panel.state.text()
        assert window.connectors.list.item(0).data(Qt.ItemDataRole.UserRole + 2)[1] == "error"

        proxy.restore()
        with qtbot.waitSignal(window.jobs.ended, timeout=60000):
            qtbot.mouseClick(panel.retry_button, Qt.MouseButton.LeftButton)
        retry = window.jobs.job("erp")
        assert retry.request.retry_failed and retry.result.status.value == "success", retry.log
        qtbot.waitUntil(lambda: not panel.retry_button.isEnabled() and panel.sync_button.isEnabled(), timeout=20000)
        with window.workspace.read() as conn:
            raw = retry.result.streams[0].raw_table
            assert conn.execute(sa.text(f'SELECT count(DISTINCT id) FROM "{raw}"')).scalar() == SOURCE_ROWS
