"""The Health tab and sync notifications, driven like a user: real syncs against
PostgreSQL that fail (a dropped table) or partly fail (a cut connection), the
notification with the connector and the error, the webhook JSON received by a local
HTTP server, the health table and chart, and Retry failed chunks from the Health tab."""

from __future__ import annotations

import datetime as dt

import pytest
from PySide6.QtCore import QPoint, Qt

from esg_workbench.gui.health_panel import ALERT_BG, COLUMNS, RowsPerSyncChart
from esg_workbench.sync.health import SyncPoint
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.gui.conftest import add_connector
from tests.webhook_receiver import WebhookReceiver

ROWS = 3000


@pytest.fixture
def small_source(pg_conn, pg_database):
    pg_conn.execute("CREATE TABLE readings (id bigint PRIMARY KEY, kwh numeric(10,2), updated_at timestamptz NOT NULL)")
    pg_conn.execute(f"INSERT INTO readings SELECT g, g * 0.5, timestamptz '2024-01-01+00' + g * interval '1 h' "
                    f"FROM generate_series(1, {ROWS}) g")
    return {"database": pg_database, "host": PG_HOST, "port": PG_PORT, "user": PG_USER}


def click_sync(qtbot, window, timeout: int = 60000):
    panel = window.sync
    window.tabs.setCurrentWidget(panel)
    qtbot.waitUntil(lambda: panel.sync_button.isEnabled(), timeout=20000)
    with qtbot.waitSignal(window.jobs.ended, timeout=timeout):
        qtbot.mouseClick(panel.sync_button, Qt.MouseButton.LeftButton)
    return window.jobs.job(panel.connector)


def show_health(qtbot, window):
    with qtbot.waitSignal(window.health.loaded, timeout=20000):
        window.tab_actions[6].trigger()
    assert window.tabs.currentWidget() is window.health
    return window.health


def cell(panel, row: int, column: str, role=Qt.ItemDataRole.DisplayRole):
    return panel.model.data(panel.model.index(row, COLUMNS.index(column)), role)


def test_failed_sync_notifies_posts_the_webhook_and_shows_in_health(qtbot, window, small_source, pg_conn,
                                                                    keyring_ready):
    from esg_workbench import alerts

    add_connector(qtbot, window, small_source, "erp")
    first = click_sync(qtbot, window)
    assert first.result.status.value == "success", first.log

    with WebhookReceiver() as hook:
        alerts.set_webhook_url(window.workspace, hook.url)
        pg_conn.execute("DROP TABLE readings")
        with qtbot.waitSignal(window.notifier.notified, timeout=30000) as shown, \
                qtbot.waitSignal(window.notifier.alert_dispatched, timeout=30000) as dispatched:
            job = click_sync(qtbot, window)
        assert job.result.status.value == "failed", job.log
        title, text, where = shown.args
        assert title == "Sync of 'erp' failed"
        assert f"Run {job.result.run_id}" in text and "readings" in text
        assert where == "window"  # no system tray offscreen: the notice is in the window
        assert window.info.isVisible() and "Sync of 'erp' failed" in window.info.label.text()
        assert "readings" in window.statusBar().currentMessage()
        assert dispatched.args[1] is None  # delivered
        [body] = hook.bodies
    assert body["event"] == "sync.failed" and body["connector"] == "erp"
    assert body["run_id"] == job.result.run_id and "readings" in body["error"]
    assert "T0KEN" not in str(body)

    panel = show_health(qtbot, window)
    assert panel.model.rowCount() == 1 and panel.selected_name() == "erp"
    assert cell(panel, 0, "Failure streak") == "1 failed in a row"
    assert cell(panel, 0, "Failure streak", Qt.ItemDataRole.BackgroundRole).color() == ALERT_BG
    assert cell(panel, 0, "Last run") == "failed"
    assert cell(panel, 0, "Data lag").endswith(" s") or "min" in cell(panel, 0, "Data lag")
    assert cell(panel, 0, "Failed chunks waiting") == "0" and not panel.retry_button.isEnabled()
    assert [(p.rows_written, p.status) for p in panel.chart.points] == [(ROWS, "success"), (0, "failed")]
    assert "readings" in panel.error_label.text()
    assert "1 needs attention" in panel.summary.text()
    window.resize(1200, 760)
    panel.grab().save("/tmp/esg-health-panel.png")


def test_partial_sync_is_retried_from_the_health_tab(qtbot, window, small_source):
    from tests.fault_proxy import FaultProxy

    with FaultProxy((small_source["host"], small_source["port"])) as proxy:
        add_connector(qtbot, window, {**small_source, "port": proxy.port}, "erp", chunk_size=500,
                      chunk_strategy="id")
        panel = window.sync
        window.tabs.setCurrentWidget(panel)
        qtbot.waitUntil(lambda: panel.sync_button.isEnabled(), timeout=20000)
        with qtbot.waitSignal(window.notifier.notified, timeout=90000) as shown:
            qtbot.mouseClick(panel.sync_button, Qt.MouseButton.LeftButton)
            job = window.jobs.job("erp")
            qtbot.waitUntil(lambda: job.figures.per_stream.get("public.readings", (0,))[0] >= 2, timeout=30000)
            proxy.cut()
            qtbot.waitUntil(lambda: not job.running, timeout=90000)
        assert job.result.status.value == "partial_success", job.log
        failed = job.figures.chunks_failed
        assert shown.args[0] == "Sync of 'erp' partially failed"
        assert f"{failed} failed chunk(s) wait for a retry" in shown.args[1]

        health = show_health(qtbot, window)
        assert cell(health, 0, "Failed chunks waiting") == f"{failed:,}"
        assert cell(health, 0, "Data lag") == "never synced"
        assert health.chart.points[-1].status == "partial_success"
        assert health.retry_button.isEnabled()

        proxy.restore()
        with qtbot.waitSignal(window.jobs.ended, timeout=60000):
            qtbot.mouseClick(health.retry_button, Qt.MouseButton.LeftButton)
        retry = window.jobs.job("erp")
        assert retry.request.retry_failed and retry.result.status.value == "success", retry.log
        assert retry.result.rows_written == failed * 500
    window.tabs.setCurrentWidget(health)
    qtbot.waitUntil(lambda: health.model.rowCount() == 1 and cell(health, 0, "Failed chunks waiting") == "0",
                    timeout=20000)
    assert cell(health, 0, "Failure streak") == "0" and cell(health, 0, "Last run") == "success"
    assert not health.retry_button.isEnabled()
    assert [p.status for p in health.chart.points] == ["partial_success", "success"]


def test_chart_draws_a_bar_per_run_and_names_it(qtbot):
    chart = RowsPerSyncChart()
    qtbot.addWidget(chart)
    chart.resize(600, 260)
    start = dt.datetime(2026, 1, 5, 8, 0)
    points = [SyncPoint(i + 1, start + dt.timedelta(hours=i), rows, status)
              for i, (rows, status) in enumerate([(1200, "success"), (0, "failed"), (300, "partial_success"),
                                                  (900, "success")])]
    chart.set_points("Rows per sync — erp", points)
    image = chart.grab().toImage()
    assert len(chart._bars) == 4
    colours = set()
    for rect, point in chart._bars:
        x = int(rect.center().x())
        y = int(chart._plot.bottom()) - 2  # just above the axis: inside every bar, even the empty failed run
        colours.add((point.status, image.pixelColor(x, y).name()))
    assert colours == {("success", "#2e7d32"), ("failed", "#c62828"), ("partial_success", "#ef6c00")}
    assert chart.point_at(chart._bars[2][0].center()).run_id == 3
    assert chart.point_at(QPoint(1, 1).toPointF()) is None
    chart.set_points("", [], "erp has not synced yet.")
    assert chart._bars == [] or chart.grab() is not None


def test_webhook_dialog_saves_tests_and_removes(qtbot, window, keyring_ready, monkeypatch):
    from esg_workbench import alerts

    monkeypatch.setenv("ESG_WORKBENCH_ALERT_RETRY_DELAYS", "0.01,0.01,0.01")
    health = show_health(qtbot, window)
    qtbot.mouseClick(health.webhook_button, Qt.MouseButton.LeftButton)
    dialog = health.webhook_dialog
    qtbot.waitUntil(lambda: dialog.save_button.isEnabled(), timeout=10000)
    assert "No webhook set" in dialog.state.text()

    qtbot.keyClicks(dialog.url, "ftp://example.com/hook")
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert "http:// or https://" in dialog.state.text()
    assert alerts.webhook_url(window.workspace) is None  # nothing stored

    with WebhookReceiver() as hook:
        dialog.url.clear()
        qtbot.keyClicks(dialog.url, hook.url)
        with qtbot.waitSignal(dialog.finished_work, timeout=10000):
            qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        assert f"alerts go to http://127.0.0.1:{hook.port}" in dialog.state.text()
        assert "T0KEN" not in dialog.state.text()
        assert alerts.webhook_url(window.workspace) == hook.url
        with qtbot.waitSignal(dialog.finished_work, timeout=10000):
            qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
        assert dialog.state.text() == "Test alert delivered."
        assert hook.bodies[0]["event"] == "sync.test"
    with qtbot.waitSignal(dialog.finished_work, timeout=10000):
        qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)  # the receiver is gone
    assert "Not delivered" in dialog.state.text() and "connection refused" in dialog.state.text()
    with qtbot.waitSignal(dialog.finished_work, timeout=10000):
        qtbot.mouseClick(dialog.remove_button, Qt.MouseButton.LeftButton)
    assert alerts.webhook_url(window.workspace) is None and dialog.url.text() == ""
    dialog.grab().save("/tmp/esg-webhook-dialog.png")
    dialog.close()


def test_health_shows_secret_ages_and_warns_when_rotation_is_due(qtbot, window, pg_database, keyring_ready):
    import sqlalchemy as sa

    from esg_workbench.sync import operations, rotation
    from esg_workbench.workspace.database import utcnow
    from esg_workbench.workspace.schema import connector_secrets

    ws = window.workspace
    options = {"host": PG_HOST, "port": PG_PORT, "database": pg_database, "username": "esg_pw_user"}
    record = operations.add_connector(ws, "keyed", "postgres", options, password="not-checked-here")
    operations.add_connector(ws, "open", "postgres", {**options, "username": PG_USER})
    rotation.set_rotation_period(ws, "keyed", 30)
    window.refresh_connectors(select="keyed")
    panel = show_health(qtbot, window)
    assert cell(panel, 0, "Secret").startswith("set ") and cell(panel, 0, "Secret").endswith("rotate every 30 d")
    assert cell(panel, 1, "Secret") == "no secret"
    with ws.transaction() as conn:  # as if it had been set 40 days ago
        conn.execute(sa.update(connector_secrets).where(connector_secrets.c.connector_id == record.id)
                     .values(set_at=utcnow() - dt.timedelta(days=40)))
    with qtbot.waitSignal(panel.loaded, timeout=20000):
        panel.refresh()
    assert cell(panel, 0, "Secret") == "set 40 d ago, rotate every 30 d: overdue"
    assert cell(panel, 0, "Secret", Qt.ItemDataRole.BackgroundRole) is not None
    assert "Due for rotation" in cell(panel, 0, "Secret", Qt.ItemDataRole.ToolTipRole)
