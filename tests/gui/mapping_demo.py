"""The real demo data for the mapping canvas and KPI tests: `run_demo` into a DuckDB
workspace once per test session (the sync takes a while), then a copy of that workspace
per test, so every test starts from the landed sample tables, the shipped mapping
(version 1) and its KPI values."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

_template: Path | None = None


def demo_template(tmp_path_factory) -> Path:
    global _template
    if _template is None:
        from esg_workbench import demo
        from esg_workbench.workspace import open_workspace

        folder = tmp_path_factory.mktemp("demo-template")
        workspace = open_workspace(str(folder / "ws.duckdb"))
        try:
            summary = demo.run_demo(workspace)
            assert summary["status"] == "success", summary
        finally:
            workspace.close()
        _template = folder
    return _template


def copy_demo(tmp_path_factory, target: Path) -> Path:
    """A fresh copy of the demo workspace file at `target`."""
    shutil.copyfile(demo_template(tmp_path_factory) / "ws.duckdb", target)
    return target


def wait_idle(qtbot, pool, timeout: int = 60000) -> None:
    qtbot.waitUntil(lambda: not pool.busy, timeout=timeout)


@pytest.fixture
def ws(tmp_path_factory, tmp_path):
    """A copy of the demo workspace, open for one test (import it as a fixture)."""
    from esg_workbench.workspace import open_workspace

    workspace = open_workspace(str(copy_demo(tmp_path_factory, tmp_path / "ws.duckdb")))
    yield workspace
    workspace.close()


def show_loaded(qtbot, panel, workspace) -> None:
    """Show a panel at screenshot size and wait until it has loaded `workspace`."""
    qtbot.addWidget(panel)
    panel.resize(1280, 800)
    panel.show()
    qtbot.waitExposed(panel)
    with qtbot.waitSignal(panel.loaded, timeout=30000):
        panel.set_workspace(workspace)


@pytest.fixture
def panel(qtbot, ws):
    """A Mapping tab on a copy of the demo workspace, shown and loaded (import it as a
    fixture, with `ws`)."""
    from esg_workbench.gui.mapping.panel import MappingPanel
    from esg_workbench.gui.workers import WorkerPool

    pool = WorkerPool()
    panel = MappingPanel(pool)
    show_loaded(qtbot, panel, ws)
    yield panel
    wait_idle(qtbot, pool)
    assert pool.shutdown(10000)

