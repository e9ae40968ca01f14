"""Starting the desktop app: `esg-workbench` with no command calls run_app()."""

from __future__ import annotations

import logging
import sys


def create_app(argv: list[str] | None = None):
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    app.setOrganizationName("ESG Workbench")
    app.setOrganizationDomain("esg-workbench.local")
    app.setApplicationName("ESG Workbench")
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


def run_app(workspace_url: str | None = None) -> int:
    """Open the main window on `workspace_url` (or the last / default workspace)."""
    _log_to_file()
    app = create_app()
    from esg_workbench.gui.main_window import MainWindow

    window = MainWindow(workspace_url)
    window.show()
    return app.exec()
