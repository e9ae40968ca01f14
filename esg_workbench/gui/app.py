"""Starting the desktop app: `esg-workbench` with no command calls run_app()."""

from __future__ import annotations

import logging
import os
import sys

#: set to 1, the app quits once its window is shown and the workspace is open (exit 0, one
#: line on stdout naming the version and workspace) or could not be opened (exit 1): how
#: the packaging test checks that a built binary really starts
EXIT_AFTER_OPEN = "ESG_WORKBENCH_EXIT_AFTER_OPEN"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)


def app_icon():
    """The app's icon (resources/icons/esg-workbench.svg), drawn by QtSvg at the sizes a
    window manager asks for; no image plugin needed, so the same in a frozen build."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QIcon, QPainter, QPixmap
    from PySide6.QtSvg import QSvgRenderer

    from esg_workbench.mapping.resources import resources_dir

    renderer = QSvgRenderer(str(resources_dir() / "icons" / "esg-workbench.svg"))
    icon = QIcon()
    for size in ICON_SIZES if renderer.isValid() else ():
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        renderer.render(painter)
        painter.end()
        icon.addPixmap(pixmap)
    return icon


def create_app(argv: list[str] | None = None):
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    app.setOrganizationName("ESG Workbench")
    app.setOrganizationDomain("esg-workbench.local")
    app.setApplicationName("ESG Workbench")
    app.setDesktopFileName("esg-workbench")  # packaging/linux/esg-workbench.desktop (Wayland matches by it)
    app.setWindowIcon(app_icon())
    return app


def _log_to_file() -> None:
    """Unexpected errors go to a log file the user can send, never to a dialog."""
    import platformdirs
    from pathlib import Path

    folder = Path(platformdirs.user_log_dir("esg-workbench", appauthor=False))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(filename=folder / "esg-workbench.log", level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    except OSError:
        logging.basicConfig(level=logging.WARNING)


def _exit_after_open(app, window) -> None:
    from esg_workbench import __version__

    def opened(_overviews) -> None:
        if window.isVisible():
            print(f"ESG Workbench {__version__} opened {window.workspace.display_url}", flush=True)
            window.close()  # the last window: the app quits with 0

    def failed(message: str) -> None:
        print(f"ESG Workbench {__version__} could not open the workspace: {message}", file=sys.stderr, flush=True)
        window.close()  # waits for the worker threads: none may outlive the app
        app.exit(1)

    window.connectors_loaded.connect(opened)
    window.workspace_failed.connect(failed)


def run_app(workspace_url: str | None = None) -> int:
    """Open the main window on `workspace_url` (or the last / default workspace)."""
    _log_to_file()
    app = create_app()
    from esg_workbench.gui.main_window import MainWindow

    window = MainWindow(workspace_url)
    if os.environ.get(EXIT_AFTER_OPEN) == "1":
        _exit_after_open(app, window)
    window.show()
    return app.exec()
