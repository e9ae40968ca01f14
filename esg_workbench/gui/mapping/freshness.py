"""A newer saved version of the open mapping, made in another window or process.

The main window's watch reads the newest version of every mapping every few seconds and
hands it to the Mapping tab. When the open mapping has a version this window has not
seen, the info bar says so and offers to reload it: with no unsaved edits it opens the
newer version; with unsaved edits it opens the newer version and re-applies the edits on
top (table by table; where both sides changed the same table mapping, the analyst's edit
wins and is named). Nothing is overwritten or discarded without being asked: Save checks
the newest version first and asks before a save would replace someone else's changes.

`rebase` is plain Python (no Qt), so it is tested on its own.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject

from esg_workbench.gui import dialogs
from esg_workbench.mapping.model import Mapping


def rebase(base: Mapping, mine: Mapping, theirs: Mapping) -> tuple[Mapping, list[str]]:
    """`mine`'s changes against `base`, re-applied on `theirs`: (the result, with theirs'
    version; what both changed, where mine was kept). Granularity: the mapping's own
    settings, and each table mapping as a whole (by its id)."""
    b, m, t = base.to_json(), mine.to_json(), theirs.to_json()
    out: dict[str, Any] = dict(t)
    conflicts: list[str] = []
    for key in sorted((set(b) | set(m) | set(t)) - {"tables"}):
        if m.get(key) != b.get(key):
            if t.get(key) not in (b.get(key), m.get(key)):
                conflicts.append(f"the setting '{key}'")
            out[key] = m.get(key)

    def by_id(d: dict) -> dict[str, dict]:
        return {x["id"]: x for x in d.get("tables", [])}

    bt, mt, tt = by_id(b), by_id(m), by_id(t)

    def label(x: dict) -> str:
        return f"{x.get('stream')} → {x.get('entity')}"

    tables = []
    for tid, theirs_table in tt.items():
        if tid not in bt:  # added by them
            tables.append(theirs_table)
        elif tid not in mt:  # removed by me
            if theirs_table != bt[tid]:
                conflicts.append(f"{label(theirs_table)} (you removed it, it was changed: kept)")
                tables.append(theirs_table)
        elif mt[tid] == bt[tid]:
            tables.append(theirs_table)
        else:
            if theirs_table not in (bt[tid], mt[tid]):
                conflicts.append(label(mt[tid]))
            tables.append(mt[tid])
    for tid, mine_table in mt.items():
        if tid in tt:
            continue
        if tid not in bt:  # added by me
            tables.append(mine_table)
        elif mine_table != bt[tid]:  # removed by them, changed by me: keep my edit
            conflicts.append(f"{label(mine_table)} (removed in the newer version, kept with your edits)")
            tables.append(mine_table)
    out["tables"] = tables
    merged = Mapping.from_json(out)
    merged.version, merged.author, merged.created_at, merged.mapping_id = \
        theirs.version, theirs.author, theirs.created_at, theirs.mapping_id
    merged.catalog_version = theirs.catalog_version
    return merged, conflicts


def _load_pair(workspace, name: str, base_version: int):
    """(the version the edits were made on, the newest opened with its context)."""
    from esg_workbench.gui.mapping import tasks
    from esg_workbench.mapping import store

    return store.load_mapping(workspace, name, base_version), tasks.open_mapping(workspace, name)


def _newest(workspace, name: str) -> int | None:
    from esg_workbench.gui import catalog

    return catalog.mapping_versions(workspace).get(name)


class Freshness(QObject):
    """Follows the newest saved versions for a MappingPanel (see the module's docstring)."""

    def __init__(self, panel):
        super().__init__(panel)
        self.panel = panel
        self.offered: tuple[str, int] | None = None  # (mapping, version) the info bar offers

    def known(self) -> int | None:
        """The newest version of the open mapping this window knows of (opened or saved here)."""
        p = self.panel
        m = p.document.mapping
        if m is None:
            return None
        versions = [v["version"] for v in p.versions if v.get("version") is not None]
        return max(versions + ([m.version] if m.version else []), default=None)

    def seen(self, newest: dict[str, int]) -> None:
        p = self.panel
        listed = {r["name"]: r["version"] for r in p.listed}
        if newest != listed and not p.applying:
            p._refresh_list()  # a mapping saved, added or removed elsewhere: the combo follows
        m = p.document.mapping
        known = self.known()
        if m is None or known is None or m.name not in newest or newest[m.name] <= known:
            return
        if self.offered == (m.name, newest[m.name]):
            return
        self.offered = (m.name, newest[m.name])
        self._offer(m.name, newest[m.name], m.version)

    def _offer(self, name: str, newest: int, mine: int | None) -> None:
        p = self.panel
        if p.document.modified:
            p.info.show_notice(
                f"'{name}' was saved as v{newest} in another window or process while you edited v{mine}. "
                "Reload it to go on from v{0}: your unsaved edits are re-applied on top.".format(newest),
                "warn", [(f"Reload v{newest} with my edits", self.reload_keeping_edits),
                         ("Keep editing", p.info.dismiss)], topic="newer")
        else:
            p.info.show_notice(
                f"'{name}' was saved as v{newest} in another window or process; the canvas shows v{mine}.",
                "warn", [(f"Reload v{newest}", lambda: self.reload(name)), (f"Keep v{mine}", p.info.dismiss)],
                topic="newer")
        p.message.emit(f"'{name}' has a newer version v{newest}, saved elsewhere.")

    def reload(self, name: str) -> None:
        p = self.panel
        p.info.dismiss()
        if p.document.modified:  # edited since the offer: keep the edits
            self.reload_keeping_edits()
            return
        p.open_mapping(name)

    def reload_keeping_edits(self) -> None:
        p = self.panel
        mine = p.document.mapping
        if mine is None or p.workspace is None:
            return
        p.info.dismiss()
        if mine.version is None:
            return
        edited = mine.copy()

        def done(found) -> None:
            base, opened = found
            if p.document.mapping is not mine:
                return  # another mapping was opened meanwhile
            merged, conflicts = rebase(base, edited, opened.mapping)
            changed = merged.definition_hash() != opened.mapping.definition_hash()
            p.versions = opened.history
            p.document.set_mapping(merged, opened.context, modified=changed)
            p._fill_combo()
            p._update_actions()
            text = (f"Reloaded '{merged.name}' v{merged.version}"
                    + (" with your unsaved edits re-applied on top (save to keep them)." if changed else "."))
            if conflicts:
                text += " Changed in both, your edit kept: " + "; ".join(conflicts) + "."
            p.info.show_notice(text, "warn" if conflicts else "ok", topic="newer")
            p.hint.setText(text)
            p.message.emit(text)
            p.loaded.emit(merged)

        p.pool.run(_load_pair, p.workspace, mine.name, mine.version, on_done=done, on_error=p._error, owner=p)

    def before_save(self, mapping: Mapping, save: Callable[[], None], cancelled: Callable[[], None]) -> None:
        """Save unless a newer version was saved elsewhere since this one was opened; then
        ask first (saving would replace that version's changes)."""
        p = self.panel
        known = self.known()
        if mapping.version is None or known is None:
            save()
            return

        def done(newest: int | None) -> None:
            if newest is None or newest <= known:
                save()
                return
            if dialogs.ask(p, "Newer version saved elsewhere",
                           f"'{mapping.name}' was saved as v{newest} in another window or process after you "
                           f"opened v{mapping.version}. Saving makes your mapping v{newest + 1} and replaces the "
                           f"changes of v{newest}.\n\nReload v{newest} instead to re-apply your edits on top of it.",
                           yes="Save anyway", no="Cancel"):
                save()
            else:
                self.offered = None
                self.seen({**{r['name']: r['version'] for r in p.listed}, mapping.name: newest})
                cancelled()

        p.pool.run(_newest, p.workspace, mapping.name, on_done=done, on_error=p._error, owner=p)
