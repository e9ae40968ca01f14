#!/usr/bin/env python
"""Regenerate the README screenshots: python scripts/screenshots.py [OUTPUT_DIR]

Builds a throw-away workspace from the bundled sample ERP database (no server needed),
drives the real main window offscreen and saves each screen with QWidget.grab() into
docs/screenshots/*.png:

    first-start.png      an empty workspace offering the sample data
    connectors.png       the main window with the setup dialog after Test connection
    connector-dialog.png the setup dialog alone
    schema.png           the schema browser: a table's columns, key icons and sample rows
    schema-drift.png     Refresh after the source changed: the drifted table highlighted
    sync.png             a sync under way: progress, figures, current chunk, live log
    history.png          sync runs and the chunk ledger of one run
    audit.png            the audit chain after Verify chain
    mapping.png          the mapping canvas while a column is dragged (see mapping_screens)
    kpis.png             the KPI table by month and site, with the chart
    kpi-drill-down.png   a KPI value traced to its staging rows and source keys
    about.png            Help > About: version, licences, where workspace, logs and settings live
    schedules.png        the Schedules tab: three schedules, one of them just run by the app
    schedule-dialog.png  editing a schedule: load, tables, preset, time zone, the next five runs
    health.png           the Health tab after syncs that partly failed, with the notice they raised
    failed-chunks.png    the Failed chunks tab: chunks of a sync whose source dropped mid-read, one ignored
    schedule-chains.png  the Schedules tab with a chain waiting for its first schedule, and the next runs
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QEventLoop, QSettings, QTimer  # noqa: E402

from esg_workbench.gui.app import create_app  # noqa: E402

SIZE = (1280, 800)


def wait_for(signal, timeout_ms: int = 120000, until=None):
    """Run the event loop until `signal` fires (and `until(args)` holds)."""
    loop = QEventLoop()
    got: list = []

    def fired(*args):
        if until is None or until(*args):
            got.append(args)
            loop.quit()

    signal.connect(fired)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()
    signal.disconnect(fired)
    if not got:
        raise TimeoutError(f"no {signal} within {timeout_ms} ms")
    return got[0]


def settle(ms: int = 150) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def shot_over_window(window, dialog, path: Path):
    """A dialog is a window of its own: draw it over the dimmed main window, as a user
    sees it, save that as `path` and return the dialog's own picture."""
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QColor, QPainter

    picture = window.grab()
    pane = dialog.grab()
    painter = QPainter(picture)
    at = QPoint((picture.width() - pane.width()) // 2, (picture.height() - pane.height()) // 2)
    painter.fillRect(picture.rect(), QColor(0, 0, 0, 60))
    painter.fillRect(at.x() - 1, at.y() - 1, pane.width() + 2, pane.height() + 2, QColor("#555"))
    painter.drawPixmap(at, pane)
    painter.end()
    picture.save(str(path))
    print(f"wrote {path}")
    return pane


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    app = create_app()
    app.setStyle("Fusion")
    from esg_workbench.gui.main_window import MainWindow

    with tempfile.TemporaryDirectory(prefix="esg-shots-") as tmp:
        tmp = Path(tmp)
        settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(str(tmp / "workspace.duckdb"), settings=settings)
        window.resize(*SIZE)
        window.show()
        wait_for(window.connectors_loaded)
        settle()

        def shot(name: str, widget=None) -> None:
            settle()
            path = out / name
            (widget or window).grab().save(str(path))
            print(f"wrote {path}")

        shot("first-start.png")

        window.info.buttons[0].click()  # Load sample data
        wait_for(window.sample_loaded)
        wait_for(window.connectors_loaded)
        window.info.dismiss()

        # the setup dialog of the sample connector, tested
        dialog = window.edit_connector()
        dialog.resize(560, dialog.sizeHint().height())
        dialog.test_button.click()
        wait_for(dialog.tested)
        settle()
        pane = shot_over_window(window, dialog, out / "connectors.png")
        dialog_path = out / "connector-dialog.png"
        pane.save(str(dialog_path))
        print(f"wrote {dialog_path}")
        dialog.reject()

        # the schema browser: expand the connector, open a table, show its samples
        browser = window.schema
        window.tabs.setCurrentWidget(browser)
        top = browser.proxy.index(0, 0)
        browser.tree.expand(top)
        wait_for(browser.level_loaded, until=lambda kind: kind == "schema")
        top = browser.proxy.index(0, 0)  # indexes go stale when rows arrive: take fresh ones
        schema = browser.proxy.index(0, 0, top)
        table = next(browser.proxy.index(r, 0, schema) for r in range(browser.proxy.rowCount(schema))
                     if browser.proxy.index(r, 0, schema).data() == "electricity_readings")
        browser.tree.expand(table)
        wait_for(browser.level_loaded, until=lambda kind: kind == "table")
        table = browser.proxy.index(table.row(), 0, browser.proxy.index(0, 0, browser.proxy.index(0, 0)))
        browser.tree.setCurrentIndex(table)
        wait_for(browser.samples_loaded)
        browser.sample_view.resizeColumnsToContents()
        shot("schema.png")

        # drift: the source gains a column and loses none; Refresh highlights it
        source = Path(window.connectors.overview("sample-erp").config["path"])
        with sqlite3.connect(source) as con:
            con.execute("ALTER TABLE electricity_readings ADD COLUMN co2_kg REAL")
        browser.tree.setCurrentIndex(browser.proxy.index(0, 0))
        browser.refresh_button.click()
        wait_for(browser.refreshed)  # (merged into the open tree: what was open stays open)
        schema = browser.proxy.index(0, 0, browser.proxy.index(0, 0))
        table = next(browser.proxy.index(r, 0, schema) for r in range(browser.proxy.rowCount(schema))
                     if browser.proxy.index(r, 0, schema).data() == "electricity_readings")
        if not browser.tree.isExpanded(table):
            browser.tree.expand(table)
            wait_for(browser.level_loaded, until=lambda kind: kind == "table")
        table = browser.proxy.index(table.row(), 0, browser.proxy.index(0, 0, browser.proxy.index(0, 0)))
        browser.tree.setCurrentIndex(table)
        wait_for(browser.samples_loaded)
        shot("schema-drift.png")

        # a sync under way: a full reload in small chunks, caught half-way
        panel = window.sync
        window.tabs.setCurrentWidget(panel)
        panel.refresh_status()
        wait_for(panel.status_loaded)
        panel.set_checked(["business_travel", "waste"])
        panel.load_type.setCurrentIndex(panel.load_type.findData("full"))
        panel.chunk_strategy.setCurrentIndex(panel.chunk_strategy.findData("id"))
        panel.chunk_size.setValue(50)
        panel.sync_button.click()
        job = window.jobs.job("sample-erp")
        wait_for(window.jobs.changed, until=lambda j: j.figures.chunks_done >= 20)
        panel._show_figures()
        shot("sync.png")
        wait_for(window.jobs.ended)
        settle(300)

        history = window.history
        window.tabs.setCurrentWidget(history)
        wait_for(history.loaded)
        history.runs_view.setCurrentIndex(history.runs_model.index(0, 0))
        wait_for(history.chunks_loaded)
        shot("history.png")

        audit = window.audit
        window.tabs.setCurrentWidget(audit)
        wait_for(audit.loaded)
        audit.verify_button.click()
        wait_for(audit.verified)
        audit.view.setCurrentIndex(audit.model.index(0, 0))
        shot("audit.png")
        assert job.result is not None

        mapping_screens(window, out, shot)
        about_screen(window, out)
        schedule_screens(window, out, shot)
        health_screen(window, out, shot)
        failed_chunks_screen(window, out, shot)
        schedule_chains_screen(window, out, shot)
        organization_screen(out)

        window.close()
        window.pool.shutdown()
        window.deleteLater()
        settle()
    return 0


# --- the Mapping and KPIs tabs (esg_workbench/gui/mapping/, esg_workbench/gui/kpi_panel.py) ---------------

def mapping_screens(window, out: Path, shot) -> None:
    """mapping.png, kpis.png and kpi-drill-down.png from the sample mapping the sample data
    applied. The connectors list is folded away so the canvas gets the window's width."""

    panel, kpis = window.mapping, window.kpis
    sizes = window.splitter.sizes()
    window.splitter.setSizes([0, sum(sizes)])
    window.tabs.setCurrentWidget(panel)
    if panel.document.mapping is None:
        wait_for(panel.loaded)
    settle(300)
    scene = panel.scene
    panel.view.fit_width()
    # the selected edge: its transforms in the editor, its output in the preview grid
    scene.select_item(scene.edge_item("electricity-energy"))
    panel.preview.schedule()
    wait_for(panel.preview.updated)
    # a column being dragged: the fields it fits are lit, the others greyed out
    row = scene.rows["electricity"]
    column, field = row.source.columns["reading_date"], row.entity.fields["period"]
    drag = scene.start_edge_drag(column, column.sceneBoundingRect().center())
    drag.move(field.sceneBoundingRect().center())
    shot("mapping.png")
    scene.cancel_interaction()

    window.tabs.setCurrentWidget(kpis)
    if not kpis.values:
        wait_for(kpis.loaded)
    settle(300)
    index = kpis.index_of("energy_total", "2023-01", "DE-MUC")
    kpis.table.setCurrentIndex(index)
    shot("kpis.png")

    kpis.drill_down(kpis.model.cell(index)["id"])
    wait_for(kpis.drilled)
    dialog = kpis.drill_dialog
    dialog.tabs.setCurrentIndex(1)  # the staging rows behind the value
    settle()
    shot_over_window(window, dialog, out / "kpi-drill-down.png")
    dialog.close()
    window.splitter.setSizes(sizes)


def organization_screen(out: Path) -> None:
    """organization-dialog.png (esg_workbench/gui/organization_dialog.py): what a role in two
    organizations of a shared PostgreSQL workspace is asked at sign-in."""
    from esg_workbench.gui.organization_dialog import NeedsOrganization, OrganizationDialog
    from esg_workbench.workspace.organizations import Organization

    dialog = OrganizationDialog(NeedsOrganization(
        "postgresql://alice@db.example.com/esg", "alice",
        [Organization("acme", "Acme Ltd"), Organization("acme-uk", "Acme UK")]))
    dialog.resize(440, 260)
    dialog.show()
    settle()
    dialog.grab().save(str(out / "organization-dialog.png"))
    print(f"wrote {out / 'organization-dialog.png'}")
    dialog.close()


def about_screen(window, out: Path) -> None:
    """about.png: the About dialog (esg_workbench/gui/about_dialog.py) alone."""
    from esg_workbench.gui.about_dialog import AboutDialog

    window._about()
    dialog = window.findChild(AboutDialog)
    settle()
    dialog.grab().save(str(out / "about.png"))
    print(f"wrote {out / 'about.png'}")
    dialog.close()


def schedule_screens(window, out: Path, shot) -> None:
    """schedules.png and schedule-dialog.png (esg_workbench/gui/schedules_panel.py,
    schedule_dialog.py): schedules of the sample connector; the nightly one was due, so
    the in-app scheduler runs it before the shot."""
    import datetime as dt

    import sqlalchemy as sa

    from esg_workbench.sync import scheduler
    from esg_workbench.workspace.database import utcnow
    from esg_workbench.workspace.schema import scheduled_jobs

    ws = window.workspace
    zone = "Europe/Berlin"
    scheduler.add_job(ws, "nightly-erp", "0 2 * * *", "sample-erp", timezone=zone)
    scheduler.add_job(ws, "weekday-retries", "30 7 * * 1-5", "sample-erp", action="retry_failed", timezone=zone)
    scheduler.add_job(ws, "weekly-discovery", "0 6 * * 1", "sample-erp", action="discover", timezone=zone,
                      enabled=False)
    with ws.transaction() as conn:  # as if the app had been closed over its last slot
        conn.execute(sa.update(scheduled_jobs).where(scheduled_jobs.c.name == "nightly-erp")
                     .values(next_run_at=utcnow() - dt.timedelta(hours=3)))
    panel = window.schedules
    window.tabs.setCurrentWidget(panel)
    window.scheduler.check_now()
    wait_for(window.scheduler.outcome_recorded)
    wait_for(panel.loaded)
    panel.select("nightly-erp")
    shot("schedules.png")

    dialog = panel.edit_schedule()
    settle()
    shot_over_window(window, dialog, out / "schedule-dialog.png")
    dialog.reject()


def health_screen(window, out: Path, shot) -> None:
    """health.png: the Health tab after syncs that partly failed (a source table renamed
    away in the sample database), with the notice they raised; a connector never synced."""
    from esg_workbench.sync import operations

    source = Path(window.connectors.overview("sample-erp").config["path"])
    operations.add_connector(window.workspace, "erp-archive", "sqlite", {"path": str(source)})
    window.refresh_connectors(select="sample-erp")
    wait_for(window.connectors_loaded)
    panel = window.sync
    window.tabs.setCurrentWidget(panel)
    panel.refresh_status()
    wait_for(panel.status_loaded)
    panel.set_checked(["business_travel", "waste"])
    panel.sync_button.click()
    wait_for(window.jobs.ended)
    with sqlite3.connect(source) as con:
        con.execute("ALTER TABLE waste RENAME TO waste_archived")
    try:
        for _ in range(2):
            settle(300)
            panel.refresh_status()
            wait_for(panel.status_loaded)
            panel.sync_button.click()
            wait_for(window.notifier.notified)
        window.tabs.setCurrentWidget(window.health)
        wait_for(window.health.loaded)
        window.health.select("sample-erp")
        shot("health.png")
    finally:
        with sqlite3.connect(source) as con:
            con.execute("ALTER TABLE waste_archived RENAME TO waste")
        window.info.dismiss()


class _DroppingConnector:
    """The sample connector, with a source that drops every read of the chunks starting
    inside `failing` (for failed-chunks.png: what a flaky ERP link does to a sync)."""

    def __init__(self, inner, failing: range):
        self.inner, self.failing = inner, failing

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self, stream, scope, chunk, cancel=None):
        from esg_workbench.core.errors import TransientSourceError

        lower = chunk.lower[0] if chunk.lower else None
        if isinstance(lower, int) and lower in self.failing:
            raise TransientSourceError("The connection to the ERP database was lost (server closed the connection).")
        return self.inner.read(stream, scope, chunk, cancel)


def failed_chunks_screen(window, out: Path, shot) -> None:
    """failed-chunks.png (esg_workbench/gui/failed_chunks_panel.py): a full reload of one
    sample table in id chunks while the source drops some reads; one chunk ignored."""
    from esg_workbench.connectors.registry import create_connector
    from esg_workbench.sync import review
    from esg_workbench.sync.engine import SyncEngine, SyncRequest

    ws = window.workspace
    engine = SyncEngine(ws, retry_delays=(0.01, 0.01),
                        connector_factory=lambda spec: _DroppingConnector(create_connector(spec), range(100, 250)))
    engine.run(SyncRequest("sample-erp", tables=["business_travel"], load_type="full", chunk_strategy="id",
                           chunk_size=50))
    failed = sorted(review.list_failed(ws), key=lambda c: c.id)
    review.ignore(ws, [failed[0].id], "Trips of the closed Leeds office: none expected for this range")
    panel = window.failed_chunks
    sizes = window.splitter.sizes()
    window.splitter.setSizes([0, sum(sizes)])
    window.tabs.setCurrentWidget(panel)
    wait_for(panel.loaded)
    panel.select_ids([failed[-1].id])
    shot("failed-chunks.png")
    window.splitter.setSizes(sizes)


def schedule_chains_screen(window, out: Path, shot) -> None:
    """schedule-chains.png (esg_workbench/gui/schedules_panel.py): sites before meters
    before a rediscovery; the first two are due, meters waits for sites."""
    import datetime as dt

    import sqlalchemy as sa

    from esg_workbench.sync import scheduler
    from esg_workbench.workspace.database import utcnow
    from esg_workbench.workspace.schema import scheduled_jobs

    ws = window.workspace
    window.scheduler.stop()  # the shot shows the waits; nothing starts meanwhile
    zone = "Europe/Berlin"
    scheduler.add_job(ws, "erp-sites", "0 1 * * *", "sample-erp", timezone=zone, priority=10,
                      options={"tables": ["sites"]}, retry_attempts=2, retry_backoff_seconds=600)
    scheduler.add_job(ws, "erp-meters", "0 1 * * *", "sample-erp", timezone=zone, depends_on=["erp-sites"],
                      options={"tables": ["electricity_readings"]}, retry_attempts=1)
    scheduler.add_job(ws, "kpi-refresh", "30 1 * * *", "sample-erp", timezone=zone,
                      depends_on=["erp-meters"], dependency_accepts_partial=True, action="discover")
    with ws.transaction() as conn:  # due a few minutes ago
        conn.execute(sa.update(scheduled_jobs).where(scheduled_jobs.c.name.in_(["erp-sites", "erp-meters"]))
                     .values(next_run_at=utcnow() - dt.timedelta(minutes=4)))
    scheduler.set_limits(ws, workspace=2, per_host=1)
    panel = window.schedules
    sizes = window.splitter.sizes()
    window.splitter.setSizes([0, sum(sizes)])  # the connectors list folded away: room for every column
    window.tabs.setCurrentWidget(panel)
    panel.refresh()
    wait_for(panel.loaded)
    panel.select("erp-meters")
    shot("schedule-chains.png")
    window.splitter.setSizes(sizes)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"))
