"""The Resume button is enabled exactly when something can be resumed: not for a new
connector, not after a finished sync; yes after a run that died before it planned (the
whole request is left) and after a cancelled one. Clicking it lands every table."""

from __future__ import annotations

import sqlalchemy as sa
from PySide6.QtCore import Qt

from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import sync_records
from tests.gui.conftest import SOURCE_ROWS, add_connector


def wait_status(qtbot, panel):
    with qtbot.waitSignal(panel.status_loaded, timeout=20000):
        panel.refresh_status()


class Killed(BaseException):
    """Stands for the process dying: nothing in the engine catches it."""


def test_resume_button_follows_what_can_be_resumed(qtbot, window, source):
    add_connector(qtbot, window, source, "erp", chunk_size=20_000, chunk_strategy="id")
    panel = window.sync
    window.tabs.setCurrentWidget(panel)
    wait_status(qtbot, panel)
    assert panel.sync_button.isEnabled() and not panel.resume_button.isEnabled()  # never synced

    def die(spec):
        raise Killed()

    try:  # a run that died right after it started: nothing planned, nothing landed
        SyncEngine(window.workspace, connector_factory=die).run(SyncRequest("erp", tables=["energy_use", "sites"]))
    except Killed:
        pass
    sync_records.mark_dead_runs(window.workspace)
    wait_status(qtbot, panel)
    assert panel.resume_button.isEnabled()
    assert "Unfinished sync of energy_use, sites" in panel.state.text()

    with qtbot.waitSignal(window.jobs.ended, timeout=60000):
        qtbot.mouseClick(panel.resume_button, Qt.MouseButton.LeftButton)
    job = window.jobs.job("erp")
    assert job.request.resume and job.result.status.value == "success", job.log
    assert [s.stream for s in job.result.streams] == ["public.energy_use", "public.sites"]
    assert job.result.rows_written == SOURCE_ROWS + 3
    qtbot.waitUntil(lambda: panel.status is not None and not panel.status["resumable"], timeout=20000)
    assert not panel.resume_button.isEnabled() and panel.sync_button.isEnabled()
    with window.workspace.read() as conn:
        raw = job.result.streams[0].raw_table
        assert conn.execute(sa.text(f'SELECT count(*), count(DISTINCT id) FROM "{raw}"')).one() == (SOURCE_ROWS, SOURCE_ROWS)
