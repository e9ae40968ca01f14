"""Where the shipped resources (catalog, factor sets, sample mappings) live."""

from __future__ import annotations

from pathlib import Path

import esg_workbench


def resources_dir() -> Path:
    """The top-level `resources/` folder of the source checkout or editable install."""
    return Path(esg_workbench.__file__).resolve().parent.parent / "resources"
