"""The installable desktop app.

The fast tests (the normal suite) start the app from source the way the packaging test
starts the built binary: offscreen, with ESG_WORKBENCH_EXIT_AFTER_OPEN=1. The tests marked
`packaging` build the one-folder bundle with the documented command
(`python packaging/build.py`, about two minutes) and run the binary; they are deselected by
default: `scripts/test.sh -m packaging tests/test_packaging.py`.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from esg_workbench import __version__
from esg_workbench.connectors.registry import connector_types

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "dist" / "esg-workbench"
BINARY = APP_DIR / ("esg-workbench.exe" if sys.platform == "win32" else "esg-workbench")


def app_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Offscreen Qt, and the user's folders (settings, data, logs) inside tmp_path."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), **extra}
    env.pop("ESG_WORKBENCH_WORKSPACE", None)
    return env


def start_gui_and_exit(command: list[str], tmp_path: Path, workspace: str, timeout: float = 120):
    return subprocess.run([*command, "--workspace", workspace], env=app_env(tmp_path, ESG_WORKBENCH_EXIT_AFTER_OPEN="1"),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_opened(result, workspace: Path) -> None:
    assert result.returncode == 0, result.stderr
    assert f"ESG Workbench {__version__} opened duckdb:///{workspace}" in result.stdout.splitlines()
    assert workspace.is_file()
    import duckdb

    from esg_workbench.workspace.schema import SCHEMA_VERSION

    # the app made a complete workspace, not just a file (read without the app's code, which would make one)
    with duckdb.connect(str(workspace), read_only=True) as conn:
        version = conn.execute("SELECT value FROM workspace_meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)


# --- from source (fast, in the normal suite) -------------------------------------------------

def test_the_app_from_source_opens_a_workspace_and_exits_when_asked(tmp_path):
    workspace = tmp_path / "ws.duckdb"
    result = start_gui_and_exit([sys.executable, "-m", "esg_workbench"], tmp_path, str(workspace))
    assert_opened(result, workspace)
    # it remembered the workspace in its settings, under the user's config folder
    settings = tmp_path / "config" / "ESG Workbench" / "ESG Workbench.conf"
    assert str(workspace) in settings.read_text(encoding="utf-8")


def test_a_workspace_that_cannot_open_exits_1_with_the_reason(tmp_path):
    result = start_gui_and_exit([sys.executable, "-m", "esg_workbench"], tmp_path, "mysql://nowhere/db")
    assert result.returncode == 1
    assert f"ESG Workbench {__version__} could not open the workspace:" in result.stderr
    assert "opened" not in result.stdout


def test_the_icon_renders_at_every_size(qapp, tmp_path):  # qapp: a QApplication, so later widget tests can run
    sys.path.insert(0, str(ROOT / "packaging"))
    try:
        from make_icons import PNG_SIZES, render_pngs
    finally:
        sys.path.remove(str(ROOT / "packaging"))
    from PySide6.QtGui import QImage

    pngs = render_pngs(tmp_path, PNG_SIZES)
    for size, path in pngs.items():
        image = QImage(str(path))
        assert (image.width(), image.height()) == (size, size)
        assert image.pixelColor(size // 2, size // 2).alpha() == 255  # the tile, not a blank canvas
        assert image.pixelColor(0, 0).alpha() == 0  # rounded corners


# --- the built app (slow: `-m packaging`) ------------------------------------------------------

@pytest.fixture(scope="module")
def built_app():
    """Build with the documented command, once for this module."""
    result = subprocess.run([sys.executable, str(ROOT / "packaging" / "build.py")], cwd=ROOT,
                            capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert BINARY.is_file() and os.access(BINARY, os.X_OK)
    print(result.stdout.splitlines()[-1])  # "built dist/esg-workbench in N s: M MB in K files"
    return BINARY


@pytest.mark.packaging
@pytest.mark.timeout(1800)
def test_the_built_app_opens_a_workspace_offscreen_and_exits_cleanly(built_app, tmp_path):
    workspace = tmp_path / "ws.duckdb"
    result = start_gui_and_exit([str(built_app)], tmp_path, str(workspace), timeout=120)
    assert_opened(result, workspace)


@pytest.mark.packaging
def test_the_built_app_reports_its_version_and_loads_every_connector_type(built_app, tmp_path):
    result = subprocess.run([str(built_app), "--version"], capture_output=True, text=True, timeout=60,
                            env=app_env(tmp_path))
    assert result.returncode == 0 and result.stdout.strip() == f"esg-workbench {__version__}"

    result = subprocess.run([str(built_app), "connector", "add", "--help"], capture_output=True, text=True,
                            timeout=60, env=app_env(tmp_path))
    assert result.returncode == 0, result.stderr
    for type_name in connector_types():
        assert type_name in result.stdout

    # every connector module, SQL dialect, keyring backend and shipped resource loads in the bundle
    result = subprocess.run([str(built_app), "--self-check"], capture_output=True, text=True, timeout=120,
                            env=app_env(tmp_path))
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {} and result.returncode == 0
    assert {f"connector:{t}" for t in connector_types()} <= set(report["checked"])
    assert {"dialect:duckdb", "dialect:postgresql+psycopg", "keyring", "resources", "units"} <= set(report["checked"])


@pytest.mark.packaging
def test_the_built_app_runs_the_demo_headless(built_app, tmp_path):
    workspace = tmp_path / "demo.duckdb"
    result = subprocess.run([str(built_app), "--workspace", str(workspace), "demo"], capture_output=True,
                            text=True, timeout=300, env=app_env(tmp_path), stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    result = subprocess.run([str(built_app), "--workspace", str(workspace), "kpi", "report", "--format", "json"],
                            capture_output=True, text=True, timeout=120, env=app_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)
    periods = {row["period"] for row in rows}
    assert {"2023-01", "2024-12"} <= periods  # two years of sample data, mapped through the shipped factors
    assert all(row["ghg_scope2_location"] is not None for row in rows if row["site"] == "DE-MUC")


@pytest.mark.packaging
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the .desktop entry is for Linux desktops")
def test_the_linux_desktop_entry_installs_for_the_user(built_app, tmp_path):
    desktop = APP_DIR / "share" / "applications" / "esg-workbench.desktop"
    validator = shutil.which("desktop-file-validate")
    if validator:
        result = subprocess.run([validator, str(desktop)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    elif os.environ.get("ESG_REQUIRE_SERVICES") == "1":
        pytest.fail("desktop-file-validate is missing: apt-get install desktop-file-utils")
    for size in (16, 32, 48, 256, 512):
        assert (APP_DIR / "share" / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "esg-workbench.png").is_file()

    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share")}
    result = subprocess.run(["bash", str(APP_DIR / "install.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    installed = home / ".local" / "share" / "applications" / "esg-workbench.desktop"
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(installed, encoding="utf-8")
    section = entry["Desktop Entry"]
    assert section["Exec"] == f'"{APP_DIR}/esg-workbench"'
    assert (section["Name"], section["Icon"], section["Terminal"]) == ("ESG Workbench", "esg-workbench", "false")
    assert section["Categories"] == "Office;Science;" and section["StartupWMClass"] == "esg-workbench"
    assert (home / ".local" / "share" / "icons" / "hicolor" / "256x256" / "apps" / "esg-workbench.png").is_file()
    assert (home / ".local" / "bin" / "esg-workbench").resolve() == BINARY.resolve()

    result = subprocess.run(["bash", str(APP_DIR / "install.sh"), "--uninstall"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0 and not installed.exists()
    assert not (home / ".local" / "bin" / "esg-workbench").exists()
