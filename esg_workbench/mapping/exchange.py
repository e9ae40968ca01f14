"""Mappings as files, to share one with a colleague or keep it in version control.

The file is the mapping's JSON definition (model.Mapping.to_json, which carries its
"format" number) plus an "exported" note saying which saved version it was. Importing
checks the file before anything is stored and saves it as a new version of the mapping
(the audit chain records it like any save); a file that is not a mapping, is incomplete
or was written by a newer ESG Workbench is refused with a message that says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from esg_workbench.core.errors import ConfigError
from esg_workbench.mapping.model import FORMAT, Mapping

SUFFIX = ".esgmap.json"


class MappingFileError(ConfigError):
    hint = "Choose a file exported by ESG Workbench (Mapping > Export…)."


def export_mapping(workspace, name: str, path: str | Path, version: int | None = None) -> Path:
    """Write a saved mapping (its newest version unless `version`) to `path`."""
    from esg_workbench import __version__
    from esg_workbench.mapping import store

    mapping = store.load_mapping(workspace, name, version)
    data: dict[str, Any] = mapping.to_json()
    data["exported"] = {"version": mapping.version, "author": mapping.author,
                        "saved_at": mapping.created_at.isoformat() if mapping.created_at else None,
                        "esg_workbench": __version__}
    path = Path(path)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_mapping(path: str | Path) -> Mapping:
    """A mapping from a file, or MappingFileError saying why the file is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingFileError(f"{path.name}: there is no such file.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise MappingFileError(f"{path.name} is not a mapping file: it is not JSON{where}.") from None
    if not isinstance(data, dict) or "tables" not in data or "format" not in data:
        raise MappingFileError(f"{path.name} is JSON, but not an ESG Workbench mapping.")
    if not isinstance(data["format"], int) or data["format"] > FORMAT:
        raise MappingFileError(f"{path.name} was written in mapping format {data['format']}; this version of "
                               f"ESG Workbench reads format {FORMAT} and older.",
                               hint="Update ESG Workbench, or export the mapping again from the version you use.")
    try:
        return Mapping.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MappingFileError(f"{path.name} is an incomplete mapping ({type(exc).__name__}: {exc}).") from None


def import_mapping(workspace, path: str | Path, name: str | None = None) -> Mapping:
    """Save a mapping file as the next version of its mapping (or of `name`)."""
    from esg_workbench.mapping import store

    mapping = read_mapping(path)
    if name:
        mapping.name = name
    return store.save_mapping(workspace, mapping, comment=f"imported from {Path(path).name}")
