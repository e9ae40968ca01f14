"""Saving, versioning and loading mappings in the workspace.

Every save is a new version (1, 2, 3, ...) with its author, time and an audit entry
whose output hash is the hash of the definition. Old versions stay readable; staging
rows record the version that produced them. Two analysts saving the same mapping at
once both land, as consecutive versions: the second save waits for the first (a lock
per organization and mapping name) and then numbers itself after it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.core.errors import NotFound
from esg_workbench.mapping.catalog import Catalog, load_catalog
from esg_workbench.mapping.model import Mapping
from esg_workbench.mapping.resources import resources_dir
from esg_workbench.workspace import concurrency
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import mappings as table


def _connector_id(workspace: Workspace, conn, connector: str) -> str | None:
    from esg_workbench.workspace import connectors_store

    try:
        return connectors_store.get(workspace, conn, connector).id
    except NotFound:
        return None


def save_mapping(workspace: Workspace, mapping: Mapping, *, author: str | None = None, comment: str = "",
                 catalog: Catalog | None = None) -> Mapping:
    """Store `mapping` as its next version; returns it with version, author and time set."""
    catalog = catalog or load_catalog()
    author = author or chain.default_actor()
    mapping.catalog_version = catalog.version
    definition = mapping.to_json()
    digest = mapping.definition_hash()
    now = utcnow()
    saved = concurrency.retrying(
        lambda: _insert_version(workspace, mapping, author, comment, catalog, definition, digest, now),
        what=f"Saving the mapping '{mapping.name}'",
        # a version number taken meanwhile (by an app without the lock) is simply retaken
        codes=concurrency.RETRYABLE | {concurrency.UNIQUE_VIOLATION})
    mapping.version, mapping.author, mapping.created_at, mapping.mapping_id = saved[0], author, now, saved[1]
    return mapping


def _insert_version(workspace: Workspace, mapping: Mapping, author: str, comment: str, catalog: Catalog,
                    definition: dict, digest: str, now) -> tuple[int, int]:
    """One save's transaction: (version, mappings.id)."""
    with workspace.transaction() as conn:
        # a concurrent save of this name commits first; max(version) below then sees it
        concurrency.lock_mapping_save(workspace, conn, mapping.name)
        version = (conn.execute(sa.select(sa.func.max(table.c.version)).where(
            table.c.organization_id == workspace.organization_id, table.c.name == mapping.name)).scalar() or 0) + 1
        single = mapping.tables[0] if len(mapping.tables) == 1 else None
        mapping_id = conn.execute(sa.insert(table).values(
            organization_id=workspace.organization_id, name=mapping.name, version=version,
            connector_id=_connector_id(workspace, conn, mapping.connector),
            source_stream=single.stream if single else None, entity=single.entity if single else None,
            definition=json.dumps(definition, sort_keys=True), definition_hash=digest,
            catalog_version=catalog.version, description=mapping.description, comment=comment or None,
            author=author, created_at=now).returning(table.c.id)).scalar_one()
        chain.append(workspace, conn, "mapping.save", output_hash=digest, actor=author, metadata={
            "mapping": mapping.name, "version": version, "mapping_id": mapping_id, "tables": len(mapping.tables),
            "edges": sum(len(t.edges) for t in mapping.tables), "comment": comment, "catalog_version": catalog.version})
    return version, mapping_id


def _from_row(row) -> Mapping:
    mapping = Mapping.from_json(json.loads(row.definition))
    mapping.version, mapping.author, mapping.created_at, mapping.mapping_id = row.version, row.author, row.created_at, row.id
    return mapping


def load_mapping(workspace: Workspace, name: str, version: int | None = None) -> Mapping:
    """A stored mapping: the newest version unless `version` is given."""
    with workspace.read() as conn:
        query = sa.select(table).where(table.c.organization_id == workspace.organization_id, table.c.name == name)
        query = query.where(table.c.version == version) if version else query.order_by(table.c.version.desc()).limit(1)
        row = conn.execute(query).first()
    if row is None:
        what = f"version {version} of the mapping '{name}'" if version else f"a mapping named '{name}'"
        raise NotFound(f"There is no {what} in this workspace.",
                       hint="List mappings with: esg-workbench mapping list")
    return _from_row(row)


def list_mappings(workspace: Workspace) -> list[dict[str, Any]]:
    """The newest version of every mapping."""
    with workspace.read() as conn:
        newest = (sa.select(table.c.name, sa.func.max(table.c.version).label("version"))
                  .where(table.c.organization_id == workspace.organization_id).group_by(table.c.name).subquery())
        rows = conn.execute(sa.select(table).join(newest, sa.and_(table.c.name == newest.c.name,
                                                                 table.c.version == newest.c.version))
                            .where(table.c.organization_id == workspace.organization_id).order_by(table.c.name)).all()
    out = []
    for r in rows:
        m = _from_row(r)
        out.append({"name": r.name, "version": r.version, "author": r.author, "created_at": r.created_at,
                    "connector": m.connector, "tables": [f"{t.stream} → {t.entity}" for t in m.tables],
                    "description": r.description, "definition_hash": r.definition_hash})
    return out


def history(workspace: Workspace, name: str) -> list[dict[str, Any]]:
    """Every version of a mapping, newest first."""
    with workspace.read() as conn:
        rows = conn.execute(sa.select(table.c.id, table.c.version, table.c.author, table.c.created_at, table.c.comment,
                                      table.c.definition_hash)
                            .where(table.c.organization_id == workspace.organization_id, table.c.name == name)
                            .order_by(table.c.version.desc())).all()
    return [dict(r._mapping) for r in rows]


def read_mapping_file(path: Path | str) -> Mapping:
    return Mapping.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def write_mapping_file(mapping: Mapping, path: Path | str) -> None:
    Path(path).write_text(json.dumps(mapping.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def shipped_mapping(name: str) -> Mapping:
    """A mapping shipped in resources/mappings (e.g. 'sample_erp')."""
    path = resources_dir() / "mappings" / f"{name}.json"
    if not path.exists():
        raise NotFound(f"No shipped mapping named '{name}'.")
    return read_mapping_file(path)
