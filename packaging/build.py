"""Build the installable desktop app: one command, from the repository root,

    .venv/bin/python packaging/build.py

installs the `packaging` extra (PyInstaller, Pillow: versions pinned in pyproject.toml)
into the running Python, renders the icons from resources/icons/esg-workbench.svg into
build/icons, and runs PyInstaller on packaging/esg_workbench.spec: the app lands in
dist/esg-workbench/ (dist/ESG Workbench.app on macOS), PyInstaller's work files in
build/pyinstaller/. On Linux the folder also gets share/applications/esg-workbench.desktop
and the hicolor icons, which packaging/linux/install.sh copies into place.

--no-install skips the pip step (offline, or the extra is installed already).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SPEC = ROOT / "packaging" / "esg_workbench.spec"
BUILD = ROOT / "build"
DIST = ROOT / "dist"
APP_DIR = DIST / "esg-workbench"
DESKTOP_FILE = ROOT / "packaging" / "linux" / "esg-workbench.desktop"


def packaging_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return project["project"]["optional-dependencies"]["packaging"]


def install_requirements() -> None:
    requirements = packaging_requirements()
    uv = Path(sys.executable).with_name("uv")  # the project's venv has uv (.ci/run installs it)
    if uv.exists():
        command = [str(uv), "pip", "install", "-q", "--python", sys.executable, *requirements]
    else:
        command = [sys.executable, "-m", "pip", "install", "-q", *requirements]
    print("installing:", " ".join(requirements), flush=True)
    subprocess.run(command, check=True)


def add_linux_desktop_files(app_dir: Path, icons: dict[str, Path]) -> None:
    """The .desktop entry and the icon theme sizes, laid out as under ~/.local/share."""
    share = app_dir / "share"
    (share / "applications").mkdir(parents=True, exist_ok=True)
    shutil.copy2(DESKTOP_FILE, share / "applications" / DESKTOP_FILE.name)
    for key, path in icons.items():
        if key.startswith("png") and key != "png":
            size = key[3:]
            target = share / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "esg-workbench.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    scalable = share / "icons" / "hicolor" / "scalable" / "apps" / "esg-workbench.svg"
    scalable.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "resources" / "icons" / "esg-workbench.svg", scalable)
    shutil.copy2(ROOT / "packaging" / "linux" / "install.sh", app_dir / "install.sh")


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def build(install: bool = True) -> Path:
    started = time.monotonic()
    if install:
        install_requirements()
    # make_icons imports Qt and Pillow: after the install step
    sys.path.insert(0, str(ROOT / "packaging"))
    from make_icons import make_icons

    icons = make_icons(BUILD / "icons")
    env = {**os.environ, "ESG_WORKBENCH_ICONS": str(BUILD / "icons"), "QT_QPA_PLATFORM": "offscreen"}
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
                    "--distpath", str(DIST), "--workpath", str(BUILD / "pyinstaller"), str(SPEC)],
                   check=True, cwd=ROOT, env=env)
    if sys.platform.startswith("linux"):
        add_linux_desktop_files(APP_DIR, icons)
    seconds = time.monotonic() - started
    size = folder_size(APP_DIR)
    print(f"built {APP_DIR} in {seconds:.0f} s: {size / 1e6:.0f} MB in {sum(1 for _ in APP_DIR.rglob('*'))} files")
    return APP_DIR


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-install", action="store_true", help="do not pip-install the packaging extra")
    args = parser.parse_args()
    build(install=not args.no_install)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
