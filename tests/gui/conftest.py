"""pytest-qt fixtures for the desktop app: offscreen Qt, isolated settings, a main
window on a fresh DuckDB workspace, a PostgreSQL source, and checks at teardown that
no window leaked and every worker thread ended."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("ESG_WORKBENCH_RETRY_DELAYS", "0.05,0.1,0.2")

import pytest  # noqa: E402

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QCoreApplication, QEvent, QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialogButtonBox  # noqa: E402

from tests.conftest import PG_HOST, PG_PORT, PG_USER  # noqa: E402

SOURCE_ROWS = 60_000


def flush_deletes() -> None:
    for _ in range(3):
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        QCoreApplication.processEvents()


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def answers(monkeypatch):
    """Answers for dialogs.ask, in order; records the questions asked."""
    from esg_workbench.gui import dialogs

    state = {"answers": [], "asked": []}

    def ask(parent, title, text, yes="Yes", no="No"):
        state["asked"].append((title, text))
        return state["answers"].pop(0) if state["answers"] else False

    monkeypatch.setattr(dialogs, "ask", ask)
    return state


@pytest.fixture
def make_window(qtbot, settings, workspace_url, answers):
    """Open main windows (on the test's DuckDB workspace unless told otherwise); at
    teardown cancel their syncs, close them and check nothing leaked."""
    from esg_workbench.gui.main_window import MainWindow

    before = {id(w) for w in QApplication.topLevelWidgets()}
    windows: list[MainWindow] = []

    def make(url: str | None = workspace_url, wait: bool = True) -> MainWindow:
        window = MainWindow(url, settings=settings)
        windows.append(window)
        window.show()
        if wait:
            with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
                pass
        return window

    yield make

    for window in windows:
        try:
            window.isVisible()
        except RuntimeError:
            continue  # already deleted
        window.jobs.cancel_all()
        qtbot.waitUntil(lambda: window.jobs.running_count() == 0, timeout=60000)
        window.close()
        qtbot.waitUntil(lambda: not window.pool.busy, timeout=30000)
        assert window.pool.shutdown(10000)
        window.deleteLater()
    flush_deletes()
    leaked = [w for w in QApplication.topLevelWidgets()
              if id(w) not in before and w.isVisible()]
    assert not leaked, f"top-level widgets left open: {leaked}"


@pytest.fixture
def window(make_window):
    return make_window()


@pytest.fixture
def source(pg_conn, pg_database):
    """A small ERP-like source: sites, energy_use (60,000 rows with odd values)."""
    pg_conn.execute("""
        CREATE TABLE sites (id int PRIMARY KEY, name text NOT NULL, country char(2));
        INSERT INTO sites VALUES (1, 'Lyon plant', 'FR'), (2, 'Gdańsk depot', 'PL'), (3, 'Ōsaka office', 'JP');
        CREATE TABLE energy_use (
            id bigint PRIMARY KEY,
            site_id int REFERENCES sites(id),
            kwh numeric(14,3),
            updated_at timestamptz NOT NULL,
            note text,
            payload jsonb,
            raw bytea
        );
    """)
    pg_conn.execute(f"""
        INSERT INTO energy_use
        SELECT g, 1 + g % 3, g * 1.5, timestamp '2024-01-01' + g * interval '7 minutes',
               CASE WHEN g % 7 = 0 THEN NULL ELSE 'line ' || g || E'\\nsecond line' END,
               jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g % 5)),
               decode(lpad(to_hex(g), 8, '0'), 'hex')
        FROM generate_series(1, {SOURCE_ROWS}) g;
        ANALYZE;
    """)
    return {"database": pg_database, "host": PG_HOST, "port": PG_PORT, "user": PG_USER}


def ok_button(dialog):
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)


def fill_connector_dialog(qtbot, dialog, name: str, source: dict, database: str | None = None) -> None:
    """Type a PostgreSQL connector's settings into the dialog like a user would."""
    qtbot.keyClicks(dialog.name, name)
    dialog.type.setCurrentText("postgres")
    fields = dialog._fields
    qtbot.keyClicks(fields["host"], source["host"])
    fields["port"].clear()
    qtbot.keyClicks(fields["port"], str(source["port"]))
    qtbot.keyClicks(fields["database"], database or source["database"])
    qtbot.keyClicks(fields["schema"], "public")
    qtbot.keyClicks(fields["username"], source["user"])


def open_dialog(qtbot, window, action):
    from esg_workbench.gui.connector_dialog import ConnectorDialog

    before = set(window.findChildren(ConnectorDialog))
    action.trigger()
    found = [d for d in window.findChildren(ConnectorDialog) if d not in before]
    assert found, "the connector dialog did not open"
    dialog = found[0]
    qtbot.waitExposed(dialog)
    return dialog


def add_connector(qtbot, window, source, name: str = "erp", **settings) -> None:
    """Add a connector through the dialog and wait until it is listed."""
    dialog = open_dialog(qtbot, window, window.act_add)
    fill_connector_dialog(qtbot, dialog, name, source)
    if "chunk_size" in settings:
        dialog.chunk_size.setValue(settings["chunk_size"])
    if "chunk_strategy" in settings:
        dialog.chunk_strategy.setCurrentIndex(dialog.chunk_strategy.findData(settings["chunk_strategy"]))
    assert ok_button(dialog).isEnabled(), dialog.problems.text()
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    assert name in window.connectors.names()
    window.connectors.select(name)
