"""`esg-workbench demo`: a workspace filled from the bundled sample ERP data, no server needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from esg_workbench.core.errors import NotFound
from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace.database import Workspace, default_workspace_path

DEMO_CONNECTOR = "sample-erp"
SAMPLE_MAPPING = "sample_erp"


def sample_directory(workspace: Workspace) -> Path:
    """Next to a DuckDB workspace file; else in the user's data directory."""
    if workspace.is_duckdb:
        return Path(workspace.engine.url.database).parent
    return default_workspace_path().parent


def run_demo(workspace: Workspace, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from esg_workbench.sample_data import ensure_sample_erp

    say = progress or (lambda text: None)
    path = ensure_sample_erp(sample_directory(workspace))
    say(f"Sample ERP database: {path}")
    try:
        operations.get_connector(workspace, DEMO_CONNECTOR)
    except NotFound:
        operations.add_connector(workspace, DEMO_CONNECTOR, "sqlite", {
            "path": str(path), "load_type": "delta", "cursor_field": "updated_at"})
        say(f"Added connector '{DEMO_CONNECTOR}'.")
    discovered = operations.discover_connector(workspace, DEMO_CONNECTOR, sample_rows=20)
    say(f"Discovered {len(discovered.tables)} tables.")
    result = SyncEngine(workspace, on_progress=lambda e: say(
        f"  {e.stream}: chunk {e.chunks_done}/{e.chunks_planned}, {e.rows_written:,} rows")).run(
        SyncRequest(connector=DEMO_CONNECTOR))
    landed = []
    prep = workspace.engine.dialect.identifier_preparer
    with workspace.read() as conn:
        for s in result.streams:
            rows = None
            if s.raw_table:
                rows = conn.execute(sa.text(f"SELECT count(*) FROM {prep.quote(s.raw_table)}")).scalar()
            landed.append({"table": s.stream, "raw_table": s.raw_table, "rows_in_workspace": rows,
                           "rows_this_sync": s.rows_written, "error": s.error})
    summary = {"connector": DEMO_CONNECTOR, "source": str(path), "run_id": result.run_id,
               "status": result.status.value, "seconds": round(result.seconds, 2), "tables": landed,
               "error": result.error}
    if result.status.value == "success":
        summary["kpis"] = map_and_aggregate(workspace, say)
    return summary


def map_and_aggregate(workspace: Workspace, say: Callable[[str], None]) -> dict[str, Any]:
    """Apply the shipped sample mapping (saved as a new version when it changed) and
    aggregate the KPIs; returns what was done and the KPI table by site and month."""
    from esg_workbench.mapping import aggregate, apply, report, store

    shipped = store.shipped_mapping(SAMPLE_MAPPING)
    try:
        saved = store.load_mapping(workspace, SAMPLE_MAPPING)
        shipped.catalog_version = saved.catalog_version
        if saved.definition_hash() != shipped.definition_hash():
            saved = store.save_mapping(workspace, shipped, author="esg-workbench demo", comment="shipped sample mapping")
    except NotFound:
        saved = store.save_mapping(workspace, shipped, author="esg-workbench demo", comment="shipped sample mapping")
    applied = apply.apply_mapping(workspace, saved, progress=lambda text: say(f"  {text}"))
    say(f"Mapped {applied.source_rows:,} landed rows into {applied.staging_rows:,} staging rows "
        f"(mapping '{saved.name}' v{saved.version}) in {applied.seconds:.1f} s.")
    result = aggregate.aggregate(workspace)
    say(f"Aggregated {result.values:,} KPI values ({result.lineage_rows:,} lineage links) in {result.seconds:.1f} s.")
    return {"mapping": saved.name, "mapping_version": saved.version, "source_rows": applied.source_rows,
            "staging_rows": applied.staging_rows, "kpi_values": result.values, "flags": result.flags,
            "table": report.report_rows(workspace)}


def describe(summary: dict[str, Any]) -> str:
    lines = [f"Demo sync {summary['status']} in {summary['seconds']} s (run {summary['run_id']}).",
             "", f"{'source table':<24} {'workspace table':<40} {'rows':>8}"]
    for t in summary["tables"]:
        lines.append(f"{t['table']:<24} {t['raw_table'] or '-':<40} {t['rows_in_workspace'] or 0:>8,}")
        if t["error"]:
            lines.append(f"    error: {t['error']}")
    if summary["error"]:
        lines.append(summary["error"])
    if summary.get("kpis"):
        from esg_workbench.mapping.report import format_table

        k = summary["kpis"]
        lines += ["", f"KPIs by site and month (mapping '{k['mapping']}' v{k['mapping_version']}, "
                      f"{k['staging_rows']:,} staging rows, {k['kpi_values']:,} KPI values):", "",
                  format_table(k["table"])]
    return "\n".join(lines)
