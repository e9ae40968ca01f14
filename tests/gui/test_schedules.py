"""Schedules in the app: the dialog (presets, live preview, inline cron errors, save
errors), the Schedules tab (edit, disable, enable, remove), and the in-app scheduler
starting due syncs against a real PostgreSQL source: once for many missed slots, skipped
(and saying so) while the connector is busy here or in another process; a sync's load type
and tables chosen in the dialog, and what it does with an undiscovered connector."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from PySide6.QtCore import QTime, Qt

from esg_workbench.gui.schedule_dialog import ScheduleDialog, Timing, timing_of
from esg_workbench.sync import scheduler
from esg_workbench.workspace.database import utcnow
from esg_workbench.workspace.schema import scheduled_jobs
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.gui.conftest import SOURCE_ROWS, add_connector

FAST = 150  # ms between the scheduler's checks in tests


def open_schedule_dialog(qtbot, panel, button) -> ScheduleDialog:
    before = set(panel.findChildren(ScheduleDialog))
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    found = [d for d in panel.findChildren(ScheduleDialog) if d not in before]
    assert found, "the schedule dialog did not open"
    qtbot.waitExposed(found[0])
    return found[0]


def choose(combo, data) -> None:
    combo.setCurrentIndex(combo.findData(data))


def retype(qtbot, line_edit, text: str) -> None:
    line_edit.selectAll()
    qtbot.keyClick(line_edit, Qt.Key.Key_Delete)
    qtbot.keyClicks(line_edit, text)


def show_schedules(qtbot, window):
    panel = window.schedules
    with qtbot.waitSignal(panel.loaded, timeout=20000):
        window.tabs.setCurrentWidget(panel)
    return panel


def reload(qtbot, panel) -> None:
    with qtbot.waitSignal(panel.loaded, timeout=20000):
        panel.refresh()


def make_due(workspace, name: str, ago: dt.timedelta = dt.timedelta(minutes=1),
             last_run_ago: dt.timedelta | None = None):
    """As if the slot passed `ago` ago (the app was closed, or the machine off)."""
    now = utcnow()
    values = {"next_run_at": now - ago}
    if last_run_ago is not None:
        values["last_run_at"] = now - last_run_ago
    with workspace.transaction() as conn:
        conn.execute(sa.update(scheduled_jobs).where(scheduled_jobs.c.name == name).values(**values))


def sync_runs(workspace) -> list[tuple]:
    with workspace.read() as conn:
        return conn.execute(sa.text("SELECT id, status FROM connector_sync_logs ORDER BY id")).all()


def expected_daily(hour: int, minute: int, zone: str, count: int = 5) -> list[str]:
    """The next `count` daily run times, worked out here with zoneinfo alone."""
    tz = ZoneInfo(zone)
    now = dt.datetime.now(tz)
    first = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if first <= now:
        first += dt.timedelta(days=1)
    runs = [dt.datetime.combine(first.date() + dt.timedelta(days=i), dt.time(hour, minute), tz) for i in range(count)]
    return [f"{r:%a %d %b %Y, %H:%M} {r.tzname()}" for r in runs]


def test_create_a_schedule_by_clicking_and_typing(qtbot, window, source):
    add_connector(qtbot, window, source, "erp")
    panel = show_schedules(qtbot, window)
    assert panel.stack.currentWidget() is panel.empty  # explains schedules, offers New
    assert "No schedules yet" in panel.empty_text.text()

    dialog = open_schedule_dialog(qtbot, panel, panel.empty_new)
    assert dialog.connector.currentData() == "erp"
    assert dialog.timezone.currentText() == "UTC"  # the machine's zone
    assert not dialog.save_button.isEnabled() and "Give the schedule a name" in dialog.problems.text()
    qtbot.keyClicks(dialog.name, "morning")
    choose(dialog.frequency, "daily")
    dialog.at_time.setTime(QTime(6, 30))
    retype(qtbot, dialog.timezone.lineEdit(), "Europe/Paris")
    assert dialog.cron.text() == "30 6 * * *" and dialog.cron.isReadOnly()
    assert dialog.description.text() == "Every day at 06:30"
    assert dialog.preview_lines() == expected_daily(6, 30, "Europe/Paris")
    assert all(line.endswith(("CET", "CEST")) for line in dialog.preview_lines())
    assert dialog.save_button.isEnabled()

    # an unknown zone and a bad custom expression are explained; Save waits for a fix
    retype(qtbot, dialog.timezone.lineEdit(), "Mars/Olympus")
    assert "Unknown time zone 'Mars/Olympus'" in dialog.problems.text() and not dialog.save_button.isEnabled()
    retype(qtbot, dialog.timezone.lineEdit(), "Europe/Paris")
    choose(dialog.frequency, "custom")
    assert not dialog.cron.isReadOnly() and dialog.cron.text() == "30 6 * * *"  # starts from the preset
    retype(qtbot, dialog.cron, "30 25 * * 1-5")
    assert dialog.cron_error.isVisible()
    assert dialog.cron_error.text().startswith("Hour 25 is out of range 0-23.")
    assert "What to do:" in dialog.cron_error.text()
    assert dialog.preview_lines() == [] and not dialog.save_button.isEnabled()
    retype(qtbot, dialog.cron, "30 6 * * 1-5")
    assert not dialog.cron_error.isVisible() and dialog.save_button.isEnabled()
    assert dialog.description.text() == "At 06:30 on Monday to Friday"
    runs = dialog.preview_lines()
    assert len(runs) == 5 and all(r[:3] in ("Mon", "Tue", "Wed", "Thu", "Fri") and ", 06:30 " in r for r in runs)
    choose(dialog.action, "retry_failed")

    with qtbot.waitSignal(dialog.finished, timeout=20000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "morning" in panel.names(), timeout=20000)
    assert panel.stack.currentWidget() is panel.table
    row = panel.row_texts("morning")
    assert row["Connector"] == "erp" and row["Action"] == "Retry failed chunks" and row["Enabled"] == "yes"
    assert row["When"] == "At 06:30 on Monday to Friday"
    assert row["Next run"].endswith(("06:30 CET", "06:30 CEST")) and row["Last run"] == "never"
    job = scheduler.get_job(window.workspace, "morning")
    assert (job.cron, job.timezone, job.action, job.connector, job.enabled) == \
        ("30 6 * * 1-5", "Europe/Paris", "retry_failed", "erp", True)
    assert job.next_run_local.strftime("%H:%M") == "06:30" and job.next_run_local.weekday() < 5


def test_edit_disable_enable_remove(qtbot, window, source, answers):
    add_connector(qtbot, window, source, "erp")
    ws = window.workspace
    scheduler.add_job(ws, "nightly", "15 2 * * 3", "erp", timezone="America/New_York")
    scheduler.add_job(ws, "hourly", "5 * * * *", "erp", action="discover", timezone="UTC")
    panel = show_schedules(qtbot, window)
    assert panel.names() == ["hourly", "nightly"]
    assert panel.row_texts("hourly")["Action"] == "Rediscover tables"
    assert panel.row_texts("hourly")["When"] == "Every hour at 5 minutes past"

    # edit: the dialog reads the expression back into its preset
    panel.select("nightly")
    dialog = open_schedule_dialog(qtbot, panel, panel.edit_button)
    assert dialog.frequency.currentData() == "weekly" and dialog.weekday.currentText() == "on Wednesday"
    assert dialog.at_time.time() == QTime(2, 15) and dialog.timezone.currentText() == "America/New_York"
    assert all(line.startswith("Wed") and line.endswith(("EST", "EDT")) for line in dialog.preview_lines())
    retype(qtbot, dialog.name, "hourly")  # taken
    assert "A schedule named 'hourly' already exists." in dialog.problems.text()
    assert not dialog.save_button.isEnabled()
    retype(qtbot, dialog.name, "weekly")
    choose(dialog.weekday, 5)
    assert dialog.cron.text() == "15 2 * * 5" and dialog.description.text() == "At 02:15 on Friday"
    with qtbot.waitSignal(dialog.finished, timeout=20000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.names() == ["hourly", "weekly"], timeout=20000)
    assert scheduler.get_job(ws, "weekly").cron == "15 2 * * 5"

    # a save refused by the workspace (another window took the name meanwhile): shown, nothing lost
    dialog = open_schedule_dialog(qtbot, panel, panel.new_button)
    qtbot.keyClicks(dialog.name, "evening")
    choose(dialog.frequency, "monthly")
    dialog.month_day.setValue(15)
    scheduler.add_job(ws, "evening", "0 20 * * *", "erp")
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "already exists" in dialog.problems.text(), timeout=20000)
    assert dialog.isVisible() and dialog.name.text() == "evening" and dialog.cron.text() == "0 2 15 * *"
    assert dialog.save_button.isEnabled()  # fix the name and save again
    retype(qtbot, dialog.name, "mid-month")
    with qtbot.waitSignal(dialog.finished, timeout=20000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "mid-month" in panel.names(), timeout=20000)
    assert panel.row_texts("mid-month")["When"] == "At 02:00 on day 15 of every month"

    # disable with the button; enable with the checkbox
    panel.select("weekly")
    assert panel.toggle_button.text() == "&Disable"
    qtbot.mouseClick(panel.toggle_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.row_texts("weekly")["Enabled"] == "no", timeout=20000)
    assert panel.row_texts("weekly")["Next run"] == "— (disabled)" and panel.toggle_button.text() == "&Enable"
    job = scheduler.get_job(ws, "weekly")
    assert not job.enabled and job.next_run_at is None
    row = panel.names().index("weekly")
    panel.table.item(row, 0).setCheckState(Qt.CheckState.Checked)
    qtbot.waitUntil(lambda: scheduler.get_job(ws, "weekly").enabled, timeout=20000)
    qtbot.waitUntil(lambda: panel.row_texts("weekly")["Enabled"] == "yes", timeout=20000)
    assert scheduler.get_job(ws, "weekly").next_run_local.strftime("%a %H:%M") == "Fri 02:15"

    # remove asks first; "Keep" keeps it
    panel.select("hourly")
    answers["answers"] = [False]
    qtbot.mouseClick(panel.remove_button, Qt.MouseButton.LeftButton)
    assert answers["asked"][-1][0] == "Remove schedule" and "'hourly'" in answers["asked"][-1][1]
    assert "hourly" in [j.name for j in scheduler.list_jobs(ws)]
    answers["answers"] = [True]
    qtbot.mouseClick(panel.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "hourly" not in panel.names(), timeout=20000)
    assert [j.name for j in scheduler.list_jobs(ws)] == ["evening", "mid-month", "weekly"]


def test_a_due_schedule_starts_by_itself_and_is_recorded(qtbot, window, source):
    add_connector(qtbot, window, source, "erp", chunk_size=10_000)
    ws = window.workspace
    # 04:00: never skipped by a DST change (02:00-03:00 in Paris), whatever day the test runs
    scheduler.add_job(ws, "nightly", "0 4 * * *", "erp", timezone="Europe/Paris")
    make_due(ws, "nightly")
    notices: list[str] = []
    window.notice.connect(notices.append)

    with qtbot.waitSignal(window.scheduler.started, timeout=20000):
        window.scheduler.set_interval(FAST)  # the next tick finds it
    assert "Scheduled sync of 'erp' started (schedule 'nightly')." in notices
    sync = window.jobs.job("erp")
    assert sync is not None and any("Started by schedule 'nightly'" in line for line in sync.log)
    window.connectors.select("erp")
    assert window.sync.cancel_button.isEnabled()  # in the Sync tab like a Sync click, with Cancel

    with qtbot.waitSignal(window.scheduler.outcome_recorded, timeout=60000) as blocker:
        pass
    outcome = blocker.args[0]
    assert outcome.status == "success", outcome.message
    assert sync.result.rows_written == SOURCE_ROWS + 3
    job = scheduler.get_job(ws, "nightly")
    assert job.last_status == "success" and job.last_run_id == sync.result.run_id
    assert f"{SOURCE_ROWS + 3:,} rows" in job.last_message
    assert job.next_run_at > utcnow() and job.next_run_local.strftime("%H:%M") == "04:00"
    assert sync_runs(ws) == [(sync.result.run_id, "success")]
    qtbot.waitUntil(lambda: panel_shows(window, "nightly", "success"), timeout=20000)
    qtbot.wait(5 * FAST)  # later checks find nothing due
    assert len(sync_runs(ws)) == 1


def panel_shows(window, name: str, status: str) -> bool:
    try:
        return window.schedules.row_texts(name)["Result"].startswith(status)
    except KeyError:
        return False


def test_runs_missed_while_the_app_was_closed_run_once_at_the_next_start(qtbot, make_window, workspace_url, source):
    from esg_workbench.sync import operations
    from esg_workbench.workspace import open_workspace

    ws = open_workspace(workspace_url)
    try:
        options = {"host": source["host"], "port": source["port"], "database": source["database"],
                   "username": source["user"], "schema": "public", "chunk_size": 10_000}
        operations.add_connector(ws, "erp", "postgres", options)
        scheduler.add_job(ws, "hourly", "0 * * * *", "erp", timezone="UTC")
        make_due(ws, "hourly", ago=dt.timedelta(hours=5, minutes=10), last_run_ago=dt.timedelta(hours=6))
    finally:
        ws.close()

    window = make_window()  # the first check runs as soon as the workspace is open
    qtbot.waitUntil(lambda: (window.jobs.job("erp") is not None and not window.jobs.job("erp").running), timeout=60000)
    qtbot.waitUntil(lambda: scheduler.get_job(window.workspace, "hourly").last_status is not None, timeout=20000)
    window.scheduler.set_interval(FAST)
    qtbot.wait(6 * FAST)
    runs = sync_runs(window.workspace)
    assert [status for _, status in runs] == ["success"]  # five missed slots, one run
    job = scheduler.get_job(window.workspace, "hourly")
    assert job.last_status == "success" and job.last_run_id == runs[0][0]
    now = utcnow()
    assert now < job.next_run_at <= now + dt.timedelta(hours=1) and job.next_run_at.minute == 0


def test_a_schedule_whose_connector_is_syncing_is_skipped_and_says_so(qtbot, window, source):
    add_connector(qtbot, window, source, "erp", chunk_size=500, chunk_strategy="id")
    panel = window.sync
    window.tabs.setCurrentWidget(panel)
    with qtbot.waitSignal(panel.status_loaded, timeout=20000):
        panel.refresh_status()
    qtbot.mouseClick(panel.sync_button, Qt.MouseButton.LeftButton)  # the user's own sync
    running = window.jobs.job("erp")
    qtbot.waitUntil(lambda: running.figures.chunks_done >= 2, timeout=30000)

    ws = window.workspace
    scheduler.add_job(ws, "nightly", "0 2 * * *", "erp", timezone="UTC")
    make_due(ws, "nightly")
    notices: list[str] = []
    window.notice.connect(notices.append)
    with qtbot.waitSignal(window.scheduler.outcome_recorded, timeout=20000) as blocker:
        window.scheduler.check_now()
    outcome = blocker.args[0]
    assert outcome.status == "skipped"
    text = "Scheduled sync of 'erp' skipped (schedule 'nightly'): 'erp' is already syncing in this window."
    assert text in notices and outcome.message == text
    assert window.jobs.job("erp") is running and running.running  # the user's sync goes on
    job = scheduler.get_job(ws, "nightly")
    assert job.last_status == "skipped" and job.next_run_at > utcnow()  # not retried every tick
    with qtbot.waitSignal(window.jobs.ended, timeout=30000):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert [s for _, s in sync_runs(ws)] == ["cancelled"]  # the scheduled one never ran


@pytest.fixture
def pg_workspace_url():
    """A PostgreSQL workspace in its own database (the source has another)."""
    import psycopg

    name = f"esg_test_ws_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_a_schedule_whose_connector_syncs_in_another_process_is_skipped(qtbot, make_window, pg_workspace_url, source):
    """Another process holds the connector's sync lock (a row lock on a connection of
    its own): the engine refuses with SyncBusy and the schedule records `skipped`."""
    from esg_workbench.workspace import concurrency

    window = make_window(pg_workspace_url)
    add_connector(qtbot, window, source, "erp", chunk_size=10_000)
    ws = window.workspace
    scheduler.add_job(ws, "nightly", "0 2 * * *", "erp", timezone="UTC")
    make_due(ws, "nightly")
    connector_id = scheduler.get_job(ws, "nightly").connector_id
    other = concurrency.connector_sync_lock(ws, connector_id)
    try:
        assert other.__enter__()
        notices: list[str] = []
        window.notice.connect(notices.append)
        with qtbot.waitSignal(window.scheduler.outcome_recorded, timeout=30000) as blocker:
            window.scheduler.check_now()
        outcome = blocker.args[0]
    finally:
        other.__exit__(None, None, None)
    assert outcome.status == "skipped"
    assert "already syncing in another ESG Workbench process" in outcome.message
    assert any("skipped (schedule 'nightly')" in n and "another ESG Workbench process" in n for n in notices)
    assert not any("failed" in n for n in notices)  # a busy connector is no failed sync to alert on
    assert sync_runs(ws) == []
    assert scheduler.get_job(ws, "nightly").last_status == "skipped"


def test_presets_read_back_from_their_expressions():
    for timing in (Timing("hourly", minute=7), Timing("daily", 23, 59), Timing("weekdays", 6, 30),
                   Timing("weekly", 2, 0, weekday=0), Timing("monthly", 4, 5, month_day=31)):
        expr = timing.cron()
        back = timing_of(expr)
        assert back.cron() == expr and back.preset == timing.preset
    assert timing_of("0 2 * * 7").weekday == 0  # 7 is Sunday too
    for custom in ("*/15 * * * *", "0 2 * 1 *", "0 8-18 * * *", "@daily", "0 2 1 * 1", "bad"):
        assert timing_of(custom).preset == "custom"


def test_run_now_rediscovers_a_disabled_schedule_and_keeps_its_times(qtbot, window, source):
    add_connector(qtbot, window, source, "erp")
    ws = window.workspace
    scheduler.add_job(ws, "weekly-discovery", "0 6 * * 1", "erp", action="discover", timezone="UTC", enabled=False)
    panel = show_schedules(qtbot, window)
    panel.select("weekly-discovery")
    assert panel.details.text() == "'weekly-discovery' has not run yet."
    notices: list[str] = []
    window.notice.connect(notices.append)
    with qtbot.waitSignal(window.scheduler.outcome_recorded, timeout=30000) as blocker:
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    outcome = blocker.args[0]
    assert outcome.status == "success" and outcome.message == "Discovered 2 tables.", outcome.message
    assert "Scheduled rediscovery of 'erp' started (schedule 'weekly-discovery', run now)." in notices
    job = scheduler.get_job(ws, "weekly-discovery")
    assert job.last_status == "success" and not job.enabled and job.next_run_at is None
    qtbot.waitUntil(lambda: panel_shows(window, "weekly-discovery", "success"), timeout=20000)
    panel.select("weekly-discovery")
    assert panel.details.text().startswith("'weekly-discovery' last ran ")
    assert panel.details.text().endswith(f"{job.last_run_at:%H:%M} UTC: success. Discovered 2 tables.")
    with window.workspace.read() as conn:
        cached = conn.execute(sa.text("SELECT count(DISTINCT table_name) FROM source_schema_cache")).scalar()
    assert cached == 2 and sync_runs(ws) == []


# --- what a scheduled sync loads: load type and tables ----------------------------------------


def open_table_picker(qtbot, dialog):
    from esg_workbench.gui.schedule_dialog import TablePicker

    qtbot.mouseClick(dialog.choose_tables, Qt.MouseButton.LeftButton)
    pickers = [p for p in dialog.findChildren(TablePicker) if p.isVisible()]
    assert len(pickers) == 1, "the table checklist did not open"
    qtbot.waitExposed(pickers[0])
    return pickers[0]


def click_check(qtbot, picker, name: str) -> None:
    """Click the item's check box, as a user does."""
    from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

    view, item = picker.list, picker.item(name)
    option = QStyleOptionViewItem()
    view.initViewItemOption(option)
    option.rect = view.visualItemRect(item)
    option.features |= QStyleOptionViewItem.ViewItemFeature.HasCheckIndicator
    box = view.style().subElementRect(QStyle.SubElement.SE_ItemViewItemCheckIndicator, option, view)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=box.center())


def wait_connector_read(qtbot, dialog) -> None:
    qtbot.waitUntil(lambda: dialog._info is not None, timeout=20000)


def test_a_schedule_that_reloads_two_chosen_tables_lands_only_those_in_full(qtbot, window, source, pg_conn):
    from esg_workbench.sync import operations

    pg_conn.execute("CREATE TABLE waste (id int PRIMARY KEY, kg numeric, updated_at timestamptz);"
                    "INSERT INTO waste SELECT g, g * 2.5, now() FROM generate_series(1, 40) g;")
    add_connector(qtbot, window, source, "erp", chunk_size=10_000)
    ws = window.workspace
    # the connector itself loads deltas; the schedule asks for a full reload of two tables
    config = operations.get_connector(ws, "erp").config
    operations.update_connector(ws, "erp", {**config, "load_type": "delta", "cursor_field": "updated_at"})
    operations.discover_connector(ws, "erp")
    panel = show_schedules(qtbot, window)

    dialog = open_schedule_dialog(qtbot, panel, panel.new_button)
    wait_connector_read(qtbot, dialog)
    assert dialog.load_type.currentText() == "As the connector is set up (delta)"
    assert dialog.tables_label.text() == "All tables" and dialog.choose_tables.isEnabled()
    assert not dialog.tables_note.isVisible()
    qtbot.keyClicks(dialog.name, "reload-two")
    choose(dialog.load_type, "full")
    picker = open_table_picker(qtbot, dialog)
    assert [i.text() for i in picker.items()] == ["public.energy_use", "public.sites", "public.waste"]
    assert picker.count.text() == "All tables (also ones discovered later)"
    qtbot.mouseClick(picker.none_button, Qt.MouseButton.LeftButton)
    assert picker.count.text() == "Check at least one table."
    assert not picker.buttons.button(picker.buttons.StandardButton.Ok).isEnabled()
    click_check(qtbot, picker, "public.energy_use")
    click_check(qtbot, picker, "public.waste")
    assert picker.count.text() == "2 of 3 tables"
    qtbot.mouseClick(picker.buttons.button(picker.buttons.StandardButton.Ok), Qt.MouseButton.LeftButton)
    assert dialog.tables_label.text() == "2 of 3 tables: energy_use, waste"
    with qtbot.waitSignal(dialog.finished, timeout=20000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "reload-two" in panel.names(), timeout=20000)
    assert panel.row_texts("reload-two")["Action"] == "Sync new and changed data (full, 2 tables)"
    job = scheduler.get_job(ws, "reload-two")
    assert job.options == {"load_type": "full", "tables": ["public.energy_use", "public.waste"]}

    make_due(ws, "reload-two")
    with qtbot.waitSignal(window.scheduler.outcome_recorded, timeout=60000) as blocker:
        window.scheduler.check_now()
    outcome = blocker.args[0]
    assert outcome.status == "success", outcome.message
    assert sorted((s.stream, s.rows_written) for s in outcome.result.streams) == \
        [("public.energy_use", SOURCE_ROWS), ("public.waste", 40)]
    with ws.read() as conn:
        runs = conn.execute(sa.text("SELECT load_type, status FROM connector_sync_logs")).all()
    assert [tuple(r) for r in runs] == [("full", "success")]


def test_switching_a_job_with_sync_options_to_rediscover_saves_without_error(qtbot, window, source):
    from esg_workbench.sync import operations

    add_connector(qtbot, window, source, "erp")
    add_connector(qtbot, window, source, "crm")
    ws = window.workspace
    operations.discover_connector(ws, "erp")
    scheduler.add_job(ws, "nightly", "0 2 * * *", "erp", timezone="UTC",
                      options={"load_type": "full", "tables": ["energy_use"], "chunk_size": 500})
    panel = show_schedules(qtbot, window)
    assert panel.row_texts("nightly")["Action"] == "Sync new and changed data (full, 1 table)"

    panel.select("nightly")
    dialog = open_schedule_dialog(qtbot, panel, panel.edit_button)
    wait_connector_read(qtbot, dialog)
    assert dialog.load_type.currentText() == "Full reload"
    assert dialog.tables_label.text() == "1 of 2 tables: energy_use"  # as the CLI stored it, no schema
    picker = open_table_picker(qtbot, dialog)  # the stored name is checked in the list
    assert picker.checked() == ["public.energy_use"]
    qtbot.mouseClick(picker.buttons.button(picker.buttons.StandardButton.Cancel), Qt.MouseButton.LeftButton)

    # another connector: its tables are not these, so the choice goes back to all and says so
    choose(dialog.connector, "crm")
    assert dialog.tables_label.text() == "All tables"
    assert "The table choice was reset to all tables: it was made for 'erp'." in dialog.tables_note.text()
    wait_connector_read(qtbot, dialog)
    assert dialog.options() == {"load_type": "full", "chunk_size": 500}  # what the dialog does not show stays
    choose(dialog.connector, "erp")

    choose(dialog.action, "discover")
    assert not dialog.form.isRowVisible(dialog.load_type) and not dialog.form.isRowVisible(dialog.tables_widget)
    assert dialog.save_button.isEnabled()
    with qtbot.waitSignal(dialog.finished, timeout=20000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert dialog.saved_job is not None
    job = scheduler.get_job(ws, "nightly")
    assert (job.action, job.connector, job.options) == ("discover", "erp", {})
    qtbot.waitUntil(lambda: panel.row_texts("nightly")["Action"] == "Rediscover tables", timeout=20000)


def test_an_undiscovered_connector_offers_all_tables_only(qtbot, window, source):
    add_connector(qtbot, window, source, "erp")
    panel = show_schedules(qtbot, window)
    dialog = open_schedule_dialog(qtbot, panel, panel.empty_new)
    wait_connector_read(qtbot, dialog)
    assert dialog.tables_label.text() == "All tables" and not dialog.choose_tables.isEnabled()
    assert dialog.tables_note.text() == ("'erp' has not been discovered yet, so it syncs all its tables. "
                                         "Discover it (Connectors tab) to choose some.")
    assert dialog.load_type.currentText() == "As the connector is set up (full)"
    # a delta needs a cursor field the connector lacks: said before anything is stored
    qtbot.keyClicks(dialog.name, "deltas")
    choose(dialog.load_type, "delta")
    assert "A delta load needs 'erp' to have a cursor field" in dialog.problems.text()
    assert not dialog.save_button.isEnabled()
    choose(dialog.load_type, "")
    assert dialog.save_button.isEnabled()
    dialog.reject()
