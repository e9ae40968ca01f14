"""Crash recovery: while a mapping has unsaved edits, its state is kept in a swap file
(like orange-canvas-core's swap of the undo stack) until a clean save or a discard. The
next time the mapping is opened on that workspace the canvas offers to restore it.

DuckDB workspace: next to the workspace file, in `.esg-mapping-swap/`. PostgreSQL: in the
user's state directory, per workspace URL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from esg_workbench.mapping.model import Mapping


def swap_dir(workspace) -> Path:
    if workspace.is_duckdb and workspace.engine.url.database not in (None, "", ":memory:"):
        return Path(workspace.engine.url.database).parent / ".esg-mapping-swap"
    import platformdirs

    key = hashlib.sha256(workspace.display_url.encode()).hexdigest()[:16]
    return Path(platformdirs.user_state_dir("esg-workbench", appauthor=False)) / "mapping-swap" / key


def swap_path(workspace, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100]
    return swap_dir(workspace) / f"{safe}.json"


def write(workspace, mapping: Mapping) -> Path:
    path = swap_path(workspace, mapping.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"base_version": mapping.version, "kept_at": dt.datetime.now().isoformat(timespec="seconds"),
            "mapping": mapping.to_json()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


def read(workspace, name: str) -> dict[str, Any] | None:
    path = swap_path(workspace, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["mapping"] = Mapping.from_json(data["mapping"])
        return data
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove(workspace, name: str) -> None:
    try:
        swap_path(workspace, name).unlink()
    except OSError:
        pass
