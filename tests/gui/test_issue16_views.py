"""The views of issue 16, driven like a user: the Schedules tab showing chains, waits and
the next runs, the schedule dialog's "Order and retries" (a cycle refused at Save), and
the Failed chunks tab (filter, ignore with a reason, retry a selection through the Sync
tab) after a real partial sync from PostgreSQL through a proxy that is cut."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from PySide6.QtCore import Qt

from esg_workbench.gui.failed_chunks_panel import IgnoreDialog
from esg_workbench.gui.schedule_dialog import ScheduleDialog
from esg_workbench.sync import operations, review, scheduler
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace.database import utcnow
from esg_workbench.workspace.schema import scheduled_jobs
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from fault_proxy import FaultProxy


def show(qtbot, window, panel):
    with qtbot.waitSignal(panel.loaded, timeout=20000):
        window.tabs.setCurrentWidget(panel)
    return panel


def test_schedules_tab_shows_chains_waits_and_the_dialog_refuses_a_cycle(qtbot, window, pg_database):
    ws = window.workspace
    operations.add_connector(ws, "erp", "postgres", {"host": PG_HOST, "port": PG_PORT, "database": pg_database,
                                                     "username": PG_USER})
    scheduler.add_job(ws, "sites", "0 2 * * *", "erp", timezone="UTC", enabled=False)
    meters = scheduler.add_job(ws, "meters", "0 2 * * *", "erp", timezone="UTC", depends_on=["sites"], priority=3,
                               enabled=False)
    with ws.transaction() as conn:  # meters is due; sites never ran: meters waits, and says for what
        conn.execute(sa.update(scheduled_jobs).where(scheduled_jobs.c.name == "meters")
                     .values(enabled=True, next_run_at=utcnow() - dt.timedelta(minutes=5)))
    window.scheduler.stop()  # the test looks at the wait; the in-app scheduler must not act on it
    panel = show(qtbot, window, window.schedules)
    row = panel.row_texts("meters")
    assert row["Runs after"] == "sites"
    assert row["Now"].startswith("waiting for 'sites' to finish")
    assert "Chains: sites → meters" in panel.plan.text() and "Limits: no limit" in panel.plan.text()

    panel.select("sites")
    qtbot.waitUntil(lambda: panel.edit_button.isEnabled(), timeout=5000)
    qtbot.mouseClick(panel.edit_button, Qt.MouseButton.LeftButton)
    [dialog] = [d for d in panel.findChildren(ScheduleDialog) if d.isVisible()]
    policy = dialog.policy
    assert [policy.after.item(i).text() for i in range(policy.after.count())] == ["meters"]
    assert not policy.window.isEnabled()
    policy.after.item(0).setCheckState(Qt.CheckState.Checked)
    assert policy.window.isEnabled()
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "cycle" in dialog.problems.text(), timeout=20000)
    assert "sites → meters → sites" in dialog.problems.text() and dialog.isVisible()
    assert scheduler.get_job(ws, "sites").depends_on == []
    policy.after.item(0).setCheckState(Qt.CheckState.Unchecked)
    policy.priority.setValue(7)
    policy.retries.setValue(2)
    with qtbot.waitSignal(dialog.finished, timeout=20000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    saved = scheduler.get_job(ws, "sites")
    assert (saved.priority, saved.retry_attempts, saved.depends_on) == (7, 2, [])
    assert meters.depends_on == ["sites"]


@pytest.fixture
def partial_sync(window, pg_conn, pg_database):
    pg_conn.execute("""
        CREATE TABLE readings (id bigint PRIMARY KEY, kwh numeric(10,2), updated_at timestamptz NOT NULL);
        INSERT INTO readings SELECT g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour'
        FROM generate_series(1, 300) g;
    """)
    with FaultProxy((PG_HOST, PG_PORT)) as proxy:
        ws = window.workspace
        operations.add_connector(ws, "erp", "postgres", {
            "host": PG_HOST, "port": proxy.port, "database": pg_database, "username": PG_USER,
            "cursor_field": "updated_at", "chunk_size": 50, "load_type": "delta"})

        def cut(event):
            if event.chunks_done >= 2 and not proxy.is_cut:
                proxy.cut()

        result = SyncEngine(ws, retry_delays=(0.01,), on_progress=cut).run(SyncRequest("erp"))
        assert result.status.value == "partial_success"
        proxy.restore()
        window.refresh_connectors(select="erp")
        yield proxy


def test_failed_chunks_tab_ignores_with_a_reason_and_retries_a_selection(qtbot, window, partial_sync):
    panel = show(qtbot, window, window.failed_chunks)
    chunks = panel.chunks
    assert len(chunks) >= 2 and panel.table.rowCount() == len(chunks)
    assert panel.status.text().startswith(f"{len(chunks)} failed chunks, {len(chunks)} unreviewed, 0 ignored")
    first, second = sorted(c.id for c in chunks)[:2]

    panel.select_ids([first])
    assert panel.retry_button.isEnabled() and not panel.reopen_button.isEnabled()
    qtbot.mouseClick(panel.ignore_button, Qt.MouseButton.LeftButton)
    [dialog] = [d for d in panel.findChildren(IgnoreDialog) if d.isVisible()]
    assert not dialog.ok_button.isEnabled()  # no reason, no ignore
    qtbot.keyClicks(dialog.reason, "meter offline that week")
    with qtbot.waitSignal(panel.loaded, timeout=20000):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    texts = {c.id: c for c in panel.chunks}
    assert texts[first].ignored and texts[first].review_reason == "meter offline that week"

    with qtbot.waitSignal(panel.loaded, timeout=20000):
        panel.unreviewed.setChecked(True)
    assert first not in [c.id for c in panel.chunks]

    panel.select_ids([second])
    with qtbot.waitSignal(window.jobs.ended, timeout=60000):
        qtbot.mouseClick(panel.retry_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: second not in [c.id for c in panel.chunks], timeout=20000)
    left = {c.id for c in review.list_failed(window.workspace)}
    assert second not in left and first in left


def test_the_in_app_scheduler_waits_for_a_free_slot_and_says_so(qtbot, window, source):
    from esg_workbench.workspace import schedule_slots
    from tests.gui.conftest import add_connector

    add_connector(qtbot, window, source, "erp")
    ws = window.workspace
    scheduler.add_job(ws, "nightly", "0 2 * * *", "erp", timezone="UTC")
    with ws.transaction() as conn:
        conn.execute(sa.update(scheduled_jobs).where(scheduled_jobs.c.name == "nightly")
                     .values(next_run_at=utcnow() - dt.timedelta(minutes=1)))
    scheduler.set_limits(ws, workspace=1, per_host=None)
    held = schedule_slots.take_for(ws, {})  # another sync holds the only slot
    try:
        panel = show(qtbot, window, window.schedules)
        with qtbot.waitSignal(window.scheduler.waiting_changed, timeout=20000) as blocker:
            window.scheduler.check_now()
        assert blocker.args[0] == {"nightly": "waiting for a free slot: 1 sync is already running in this "
                                              "workspace (its limit)"}
        assert panel.row_texts("nightly")["Now"].startswith("waiting for a free slot")
        assert scheduler.get_job(ws, "nightly").last_status is None  # not taken, not skipped
    finally:
        held.release()
    with qtbot.waitSignal(window.scheduler.outcome_recorded, timeout=60000) as ended:
        window.scheduler.check_now()
    assert ended.args[0].status == "success", ended.args[0].message


def test_history_names_the_run_a_retry_follows_up():
    from esg_workbench.gui.history_panel import _with_duration

    [retry, first] = _with_duration([{"mode": "retry_failed", "retry_of": 17, "attempt": 2},
                                     {"mode": "sync", "retry_of": None, "attempt": None}])
    assert retry["mode"] == "retry_failed, retry 2 of run 17" and first["mode"] == "sync"


def test_the_connector_editor_tries_a_new_password_before_it_replaces_the_old(qtbot, window, pg_database,
                                                                               keyring_ready):
    import psycopg

    from esg_workbench import credentials
    from esg_workbench.sync import rotation
    from tests.conftest import service_missing
    from tests.gui.conftest import ok_button, open_dialog

    right = "esg-test-pw"  # esg_pw_user's password (scripts/setup-test-servers.sh), checked by scram
    try:
        psycopg.connect(host=PG_HOST, port=PG_PORT, user="esg_pw_user", password=right, dbname=pg_database).close()
    except psycopg.OperationalError:
        service_missing("the esg_pw_user PostgreSQL role (run scripts/setup-test-servers.sh)")
    record = operations.add_connector(window.workspace, "secure", "postgres", {
        "host": PG_HOST, "port": PG_PORT, "database": pg_database, "username": "esg_pw_user"}, password=right)
    [before] = rotation.secret_ages(window.workspace)
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        window.refresh_connectors(select="secure")
    dialog = open_dialog(qtbot, window, window.act_edit)
    qtbot.keyClicks(dialog.password, "a-wrong-one")
    qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "did not accept the new password" in dialog.result.text(), timeout=30000)
    assert "old one is kept" in dialog.result.text() and "a-wrong-one" not in dialog.result.text()
    assert dialog.isVisible() and credentials.load_secret(record.id) == right
    dialog.password.clear()
    qtbot.keyClicks(dialog.password, right)
    with qtbot.waitSignal(window.connectors_loaded, timeout=30000):
        qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    [after] = rotation.secret_ages(window.workspace)
    assert credentials.load_secret(record.id) == right and after.set_at > before.set_at
