"""The mapping canvas's background work: plain functions the WorkerPool runs off the GUI
thread (listing and opening mappings, the columns of the landed tables, saving, preview,
apply + aggregate). Nothing here touches Qt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import sqlalchemy as sa

from esg_workbench.mapping.model import Mapping


@dataclass
class SourceContext:
    """What the canvas knows about a connector's landed tables."""

    connector: str
    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # stream -> {column: value type}
    keys: dict[str, list[str]] = field(default_factory=dict)  # stream -> primary key columns
    connectors: list[str] = field(default_factory=list)  # every connector of the workspace

    @property
    def streams(self) -> list[str]:
        return sorted(self.columns)


@dataclass
class Opened:
    mapping: Mapping
    context: SourceContext
    history: list[dict[str, Any]] = field(default_factory=list)


def warm_units() -> None:
    """Build the unit registry (pint: 0.5-0.7 s of Python, once per process) here, in the
    worker. The canvas validates its mapping on the GUI thread after these tasks, and
    validating converts units: the first validation built the registry there and froze the
    window for 0.7-1 s, at the start of an apply (tests/benchmarks/test_bench_gui_lag.py)."""
    from esg_workbench.mapping import units

    units.registry()


def connector_names(workspace) -> list[str]:
    from esg_workbench.workspace import connectors_store

    with workspace.read() as conn:
        return sorted(r.name for r in connectors_store.list_all(workspace, conn))


def source_context(workspace, connector: str) -> SourceContext:
    """Columns and keys of every landed table of `connector` (its sync states say which)."""
    from esg_workbench.core.errors import EsgError
    from esg_workbench.mapping.apply import resolve_connector_id, source_info
    from esg_workbench.workspace.schema import connector_sync_state as state

    warm_units()
    context = SourceContext(connector, connectors=connector_names(workspace))
    with workspace.read() as conn:
        try:
            connector_id = resolve_connector_id(workspace, conn, connector)
        except EsgError:
            return context
        streams = [r[0] for r in conn.execute(sa.select(state.c.stream).where(
            state.c.organization_id == workspace.organization_id, state.c.connector_id == connector_id))]
        for stream in streams:
            info = source_info(workspace, conn, connector_id, stream)
            if info is None:
                continue
            context.columns[info.stream] = {n: t for n, t in info.columns.items() if not n.startswith("_esg_")}
            context.keys[info.stream] = list(info.primary_key)
    return context


def list_mappings(workspace) -> list[dict[str, Any]]:
    from esg_workbench.mapping import store

    warm_units()  # (the first task of the canvas)
    return store.list_mappings(workspace)


def open_mapping(workspace, name: str, version: int | None = None) -> Opened:
    from esg_workbench.mapping import store

    mapping = store.load_mapping(workspace, name, version)
    return Opened(mapping, source_context(workspace, mapping.connector), store.history(workspace, name))


def history(workspace, name: str) -> list[dict[str, Any]]:
    from esg_workbench.mapping import store

    return store.history(workspace, name)


def save(workspace, mapping: Mapping, comment: str = "", author: str | None = None) -> Mapping:
    """Store a copy of `mapping` as its next version; returns the stored copy."""
    from esg_workbench.mapping import store

    return store.save_mapping(workspace, mapping.copy(), author=author, comment=comment)


def preview(workspace, mapping: Mapping, table_id: str, limit: int) -> list[dict[str, Any]]:
    from esg_workbench.mapping import apply

    return apply.preview(workspace, mapping, table_id, limit=limit)


def apply_and_aggregate(workspace, name: str, version: int | None = None,
                        progress: Callable[[str], None] | None = None, cancel=None) -> dict[str, Any]:
    """Apply a saved mapping version to the landed rows, then recompute every KPI.
    `cancel` (a CancelToken) stops either step, which then changes nothing
    (mapping.cancel.MappingCancelled)."""
    from esg_workbench.mapping import aggregate, apply, store

    say = progress or (lambda text: None)
    mapping = store.load_mapping(workspace, name, version)
    say(f"Applying '{mapping.name}' v{mapping.version}…")
    applied = apply.apply_mapping(workspace, mapping, progress=say, cancel=cancel)
    say(f"Mapped {applied.source_rows:,} landed rows into {applied.staging_rows:,} staging rows; aggregating KPIs…")
    result = aggregate.aggregate(workspace, progress=say, cancel=cancel)
    return {"mapping": mapping.name, "version": mapping.version, "source_rows": applied.source_rows,
            "staging_rows": applied.staging_rows, "apply_seconds": applied.seconds, "kpi_values": result.values,
            "aggregate_seconds": result.seconds, "flags": result.flags, "tables": applied.tables}
