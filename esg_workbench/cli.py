"""esg-workbench: the desktop app (no arguments) and the same operations headless.

Every command takes --json for machine-readable output and exits non-zero on failure
(1: failed, 2: bad usage, 3: a sync ended partial_success, 4: cancelled).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import sys
from decimal import Decimal
from typing import Any

EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_CANCELLED = 1, 2, 3, 4


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "__dict__"):
        return value.__dict__
    return str(value)


class Output:
    def __init__(self, as_json: bool):
        self.as_json = as_json

    def emit(self, data: Any, text: str) -> None:
        if self.as_json:
            print(json.dumps(data, default=_json_default, indent=2, ensure_ascii=False))
        else:
            print(text)

    def info(self, text: str) -> None:
        if not self.as_json:
            print(text, file=sys.stderr, flush=True)


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    from esg_workbench.core.errors import ConfigError

    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"'{pair}' is not key=value.", hint="Write options as --option host=db.example.com")
        if key.strip() == "password":
            raise ConfigError("Passwords are not accepted as options (they would show in shell history).",
                              hint="Use --password-stdin, e.g.: printf %s \"$PW\" | esg-workbench connector add ... --password-stdin")
        options[key.strip()] = value
    return options


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


# --- commands ------------------------------------------------------------------------------

def cmd_connector_add(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    options = _parse_options(args.option)
    password = sys.stdin.read().rstrip("\r\n") if args.password_stdin else None
    record = operations.add_connector(ws, args.name, args.type, options, password)
    out.emit({"id": record.id, "name": record.name, "type": record.type, "config": record.config},
             f"Added connector '{record.name}' ({record.type})." + (" Password stored in the keyring." if password else ""))
    return 0


def cmd_connector_list(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    records = operations.list_connectors(ws)
    out.emit([{"id": r.id, "name": r.name, "type": r.type, "status": r.status, "config": r.config} for r in records],
             _table([[r.name, r.type, r.status, r.load_type] for r in records], ["name", "type", "status", "load"])
             if records else "No connectors yet. Add one with: esg-workbench connector add NAME --type postgres ...")
    return 0


def cmd_connector_validate(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    message = operations.validate_connector(ws, args.name)
    out.emit({"ok": True, "message": message}, message)
    return 0


def cmd_connector_remove(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    operations.remove_connector(ws, args.name)
    out.emit({"removed": args.name}, f"Removed connector '{args.name}' and its keyring entry.")
    return 0


def cmd_connector_discover(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    result = operations.discover_connector(ws, args.name, tables=args.table, sample_rows=args.sample_rows,
                                           progress=out.info)
    data = {
        "tables": [{
            "schema": t.stream.schema, "table": t.stream.table, "row_estimate": t.row_estimate,
            "primary_key": t.primary_key,
            "columns": [c.to_json() for c in t.columns],
            "foreign_keys": [f.__dict__ for f in t.foreign_keys],
            "sample_rows": t.sample_rows,
        } for t in result.tables],
        "drift": {k: v.__dict__ for k, v in result.drift.items()},
    }
    lines = [_table([[t.stream.qualified, len(t.columns), ",".join(t.primary_key), t.row_estimate,
                      "" if t.sample_rows is None else len(t.sample_rows)] for t in result.tables],
                    ["table", "columns", "primary key", "rows (est.)", "samples"])]
    for stream, drift in result.drift.items():
        lines.append(f"Drift in {stream}: {drift.describe()}")
    out.emit(data, "\n".join(lines))
    return 0


def _progress_printer(out: Output):
    def show(event) -> None:
        eta = event.eta_seconds
        out.info(f"  {event.stream}: chunks {event.chunks_done}/{event.chunks_planned}"
                 + (f" ({event.chunks_failed} failed)" if event.chunks_failed else "")
                 + f", rows {event.rows_written:,}, {event.rows_per_second:,.0f} rows/s"
                 + (f", ETA {eta:.0f} s" if eta else ""))
    return show


def _describe_sync(result) -> str:
    lines = [f"Sync of '{result.connector}' {result.status.value} in {result.seconds:.1f} s "
             f"(run {result.run_id}): {result.rows_written:,} rows landed."]
    for s in result.streams:
        line = f"  {s.stream} -> {s.raw_table}: {s.rows_written:,} rows, chunks {s.chunks_done}/{s.chunks_planned}"
        if s.chunks_failed:
            line += f", {s.chunks_failed} failed"
        if s.drift:
            line += f"; schema drift: {s.drift}"
        if s.error:
            line += f"\n    error: {s.error}"
        for w in s.warnings:
            line += f"\n    note: {w}"
        lines.append(line)
    lines += [f"  mapped: {note}" for note in result.mapped]
    if result.error and result.status.value != "success":
        lines.append(result.error)
    return "\n".join(lines)


def _sync_exit(result) -> int:
    return {"success": 0, "partial_success": EXIT_PARTIAL, "cancelled": EXIT_CANCELLED}.get(result.status.value, EXIT_FAILED)


@contextlib.contextmanager
def cancel_on_ctrl_c(out: Output):
    """A CancelToken that the first Ctrl+C sets (the sync stops after the current chunk);
    a second Ctrl+C stops at once."""
    from esg_workbench.core.specs import CancelToken

    cancel = CancelToken()

    def on_sigint(signum, frame):
        if cancel.cancelled:
            raise KeyboardInterrupt
        out.info("Cancelling after the current chunk... (Ctrl+C again to stop at once)")
        cancel.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_sync(ws, args, out: Output) -> int:
    from esg_workbench.sync.engine import SyncEngine, SyncRequest

    with cancel_on_ctrl_c(out) as cancel:
        engine = SyncEngine(ws, cancel=cancel, on_progress=_progress_printer(out), retry_delays=_retry_delays())
        result = engine.run(SyncRequest(
            connector=args.name, tables=args.table, load_type=args.load_type, chunk_size=args.chunk_size,
            chunk_strategy=args.chunk_strategy, window=args.window, resume=args.resume,
            retry_failed=args.retry_failed))
    out.emit({"run_id": result.run_id, "status": result.status.value, "seconds": result.seconds,
              "rows_written": result.rows_written, "error": result.error, "mapped": result.mapped,
              "streams": [s.__dict__ for s in result.streams]}, _describe_sync(result))
    return _sync_exit(result)


def _retry_delays() -> tuple[float, ...]:
    """Backoff between retries; ESG_WORKBENCH_RETRY_DELAYS="0.1,0.2,0.4" shortens it (tests)."""
    text = os.environ.get("ESG_WORKBENCH_RETRY_DELAYS")
    if not text:
        from esg_workbench.sync.engine import DEFAULT_RETRY_DELAYS

        return DEFAULT_RETRY_DELAYS
    return tuple(float(x) for x in text.split(","))


def cmd_status(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    status = operations.connector_status(ws, args.name)
    lines = [f"{status['connector']} ({status['type']}): {status['status']}"]
    if status["status_message"]:
        lines.append(f"  {status['status_message']}")
    lines.append("Streams:")
    for s in status["streams"]:
        lines.append(f"  {s['stream']} -> {s['raw_table']}: checkpoint {s['last_cursor']} / {s['last_row_id']}"
                     + (f", sync {s['sync_under_way']} unfinished" if s["sync_under_way"] else ""))
    lines.append("Chunks: " + (", ".join(f"{k} {v}" for k, v in sorted(status["chunks"].items())) or "none"))
    for c in status["failed_chunks"]:
        lines.append(f"  failed: {c['stream']} chunk {c['seq'] + 1} {c['range']}: {c['error']}")
    lines.append("Last runs:")
    for r in status["runs"]:
        lines.append(f"  #{r['id']} {r['status']} {r['mode']} {r['started_at']:%Y-%m-%d %H:%M:%S} "
                     f"read {r['items_read']:,} written {r['items_written']:,}" + (f" — {r['error']}" if r["error"] else ""))
    out.emit(status, "\n".join(lines))
    return 0


def cmd_logs(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations
    from esg_workbench.workspace import sync_records

    connector_id = operations.get_connector(ws, args.connector).id if args.connector else None
    names = {r.id: r.name for r in operations.list_connectors(ws)}
    with ws.read() as conn:
        runs = sync_records.runs(ws, conn, connector_id, args.limit)
    for r in runs:
        r["connector"] = names.get(r["connector_id"], r["connector_id"])
        r["details"] = json.loads(r["details"]) if r.get("details") else None
    out.emit(runs, _table([[r["id"], r["connector"], r["status"], r["mode"], f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
                            r["finished_at"] and f"{r['finished_at']:%H:%M:%S}", r["items_read"], r["items_written"],
                            (r["error"] or "").splitlines()[0][:80] if r["error"] else ""] for r in runs],
                          ["run", "connector", "status", "mode", "started", "finished", "read", "written", "error"])
             if runs else "No sync runs yet.")
    return 0


def cmd_audit_verify(ws, args, out: Output) -> int:
    from esg_workbench.audit import chain

    result = chain.verify(ws)
    out.emit(result.__dict__, result.describe())
    return 0 if result.ok else EXIT_FAILED


def cmd_demo(ws, args, out: Output) -> int:
    from esg_workbench import demo

    summary = demo.run_demo(ws, progress=out.info)
    out.emit(summary, demo.describe(summary))
    return 0 if summary["status"] == "success" else EXIT_FAILED


# --- mappings, factors and KPIs (esg_workbench/mapping) ---------------------------------------

def cmd_mapping_list(ws, args, out: Output) -> int:
    from esg_workbench.mapping import store

    rows = store.list_mappings(ws)
    out.emit(rows, _table([[r["name"], r["version"], r["author"], f"{r['created_at']:%Y-%m-%d %H:%M}", r["connector"],
                            len(r["tables"])] for r in rows], ["name", "version", "author", "saved", "connector", "tables"])
             if rows else "No mappings yet. Apply the shipped sample with: esg-workbench mapping apply sample_erp")
    return 0


def _mapping_for(ws, name: str, version: int | None = None):
    """A saved mapping; a shipped one (resources/mappings) is saved as version 1 on first use."""
    from esg_workbench.core.errors import NotFound
    from esg_workbench.mapping import store

    try:
        return store.load_mapping(ws, name, version)
    except NotFound:
        if version:
            raise
        try:
            shipped = store.shipped_mapping(name)
        except NotFound:
            raise NotFound(f"There is no mapping named '{name}' in this workspace.",
                           hint="List mappings with: esg-workbench mapping list") from None
        return store.save_mapping(ws, shipped, comment="shipped mapping")


def cmd_mapping_show(ws, args, out: Output) -> int:
    from esg_workbench.mapping import apply, store

    mapping = _mapping_for(ws, args.name, args.version)
    problems = apply.validate_in_workspace(ws, mapping)
    data = {**mapping.to_json(), "version": mapping.version, "author": mapping.author,
            "saved_at": mapping.created_at, "history": store.history(ws, mapping.name),
            "problems": [p.to_json() for p in problems]}
    lines = [f"{mapping.name} v{mapping.version} (connector {mapping.connector}), saved by {mapping.author} "
             f"at {mapping.created_at:%Y-%m-%d %H:%M}"]
    for t in mapping.tables:
        lines.append(f"  {t.stream} → {t.entity}" + (f"  [where {t.filter}]" if t.filter else ""))
        for e in t.edges:
            steps = " | ".join(x.describe() for x in e.transforms)
            lines.append(f"      {e.source or '(constant)':<22} → {e.target:<20} {steps}")
    lines.append("Problems:" if problems else "No problems.")
    lines += [f"  {p.severity}: {p.message}" for p in problems]
    out.emit(data, "\n".join(lines))
    return 0


def cmd_mapping_apply(ws, args, out: Output) -> int:
    from esg_workbench.mapping import aggregate, apply

    mapping = _mapping_for(ws, args.name, args.version)
    result = apply.apply_mapping(ws, mapping, incremental=args.incremental, progress=out.info)
    data = {"mapping": result.mapping, "version": result.version, "seconds": round(result.seconds, 3),
            "source_rows": result.source_rows, "staging_rows": result.staging_rows,
            "tables": [t.__dict__ for t in result.tables]}
    lines = [f"Applied '{result.mapping}' v{result.version}: {result.source_rows:,} landed rows -> "
             f"{result.staging_rows:,} staging rows in {result.seconds:.1f} s."]
    lines += [f"  {t.stream} → {t.entity}: {t.source_rows:,} rows -> {t.staging_rows:,}"
              + (f"  flags: {t.quality}" if t.quality else "") for t in result.tables]
    if not args.no_aggregate:
        agg = aggregate.aggregate(ws)
        data["kpis"] = {"values": agg.values, "lineage_rows": agg.lineage_rows, "flags": agg.flags}
        lines.append(f"Aggregated {agg.values:,} KPI values in {agg.seconds:.1f} s. See: esg-workbench kpi report")
    out.emit(data, "\n".join(lines))
    return 0


def cmd_kpi_aggregate(ws, args, out: Output) -> int:
    from esg_workbench.mapping import aggregate

    agg = aggregate.aggregate(ws, fiscal_start=args.fiscal_year_start)
    out.emit(agg.__dict__, f"Aggregated {agg.values:,} KPI values ({agg.lineage_rows:,} lineage links) "
                           f"in {agg.seconds:.1f} s. Flags: {agg.flags or 'none'}")
    return 0


def cmd_kpi_report(ws, args, out: Output) -> int:
    from esg_workbench.mapping import report

    kpis = args.kpi or None
    rows = report.report_rows(ws, period=args.period, kpis=kpis)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps(rows, default=_json_default, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        sys.stdout.write(report.format_csv(rows, kpis))
    else:
        print(report.format_table(rows, kpis) if rows else
              "No KPI values. Apply a mapping first: esg-workbench mapping apply NAME")
    return 0


def cmd_kpi_show(ws, args, out: Output) -> int:
    from esg_workbench.core.errors import NotFound
    from esg_workbench.mapping import aggregate

    value = aggregate.find_value(ws, args.kpi, args.period, args.site)
    if value is None:
        raise NotFound(f"No value of {args.kpi} for {args.period} at {args.site or 'the organization'}.",
                       hint="See what exists with: esg-workbench kpi report")
    found = aggregate.drill_down(ws, value["id"], limit=args.limit)
    lines = [f"{args.kpi} {args.period} {args.site or '(all sites)'}: {value['value']} {value['unit']} "
             f"({value['rule']}; flags: {', '.join(value['quality']) or 'none'}; hash {value['result_hash'][:16]})",
             f"computed from {len(found['parts'])} value(s) and {found['staging_row_count']:,} staging rows:"]
    for r in found["staging_rows"][:args.limit]:
        lines.append(f"  {r['source_table']}#{r['source_key']} {r['period']} {r['site']} {r['field']} "
                     f"{r['value']} {r['unit'] or ''} -> {r['normalized_value']} {r['normalized_unit']}"
                     + (f" (factor {r['factor_id']})" if r["factor_id"] else ""))
    out.emit(found, "\n".join(lines))
    return 0


def cmd_factors_import(ws, args, out: Output) -> int:
    from esg_workbench.mapping import factors

    fs = factors.import_factor_set(ws, args.file, name=args.name, version=args.version)
    out.emit({"name": fs.name, "version": fs.version, "factors": len(fs.factors), "sha256": fs.sha256},
             f"Imported {len(fs.factors):,} factors as {fs.label}. Use it in a mapping with \"factor_set\": \"{fs.name}\".")
    return 0


def cmd_factors_list(ws, args, out: Output) -> int:
    from esg_workbench.mapping import factors

    sets = factors.list_factor_sets(ws)
    out.emit(sets, _table([[s["name"], s["version"], s["factors"], "shipped" if s["builtin"] else "imported"]
                           for s in sets], ["name", "version", "factors", "origin"]))
    return 0


def add_mapping_commands(sub, common) -> None:
    mp = sub.add_parser("mapping", help="list, show and apply mappings (landed data -> ESG records)")
    msub = mp.add_subparsers(dest="mapping_command", metavar="ACTION", required=True)
    p = msub.add_parser("list", parents=[common], help="saved mappings (newest versions)")
    p.set_defaults(func=cmd_mapping_list)
    p = msub.add_parser("show", parents=[common], help="a mapping's tables, edges, versions and problems")
    p.add_argument("name")
    p.add_argument("--version", type=int)
    p.set_defaults(func=cmd_mapping_show)
    p = msub.add_parser("apply", parents=[common], help="map landed rows into staging rows and aggregate KPIs")
    p.add_argument("name", help="a saved mapping, or a shipped one such as sample_erp")
    p.add_argument("--version", type=int)
    p.add_argument("--incremental", action="store_true", help="only rows landed since the last apply")
    p.add_argument("--no-aggregate", action="store_true", help="do not recompute the KPIs afterwards")
    p.set_defaults(func=cmd_mapping_apply)

    kp = sub.add_parser("kpi", help="aggregate, report and trace KPIs")
    ksub = kp.add_subparsers(dest="kpi_command", metavar="ACTION", required=True)
    p = ksub.add_parser("aggregate", parents=[common], help="recompute every KPI from the staging rows")
    p.add_argument("--fiscal-year-start", type=int, default=1, metavar="MONTH")
    p.set_defaults(func=cmd_kpi_aggregate)
    p = ksub.add_parser("report", parents=[common], help="KPIs by site and month (or one period)")
    p.add_argument("--period", help="2024-03, 2024-Q1 or 2024 (default: every month)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--kpi", action="append", help="a KPI id (repeatable; default: the headline KPIs)")
    p.set_defaults(func=cmd_kpi_report)
    p = ksub.add_parser("show", parents=[common], help="one KPI value and the staging rows and source keys behind it")
    p.add_argument("kpi")
    p.add_argument("--period", required=True)
    p.add_argument("--site", help="default: the whole organization")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_kpi_show)

    fp = sub.add_parser("factors", help="emission factor sets")
    fsub = fp.add_subparsers(dest="factors_command", metavar="ACTION", required=True)
    p = fsub.add_parser("import", parents=[common], help="import a factor set (CSV or XLSX, DESNZ columns)")
    p.add_argument("file")
    p.add_argument("--name")
    p.add_argument("--version")
    p.set_defaults(func=cmd_factors_import)
    p = fsub.add_parser("list", parents=[common], help="the shipped and imported factor sets")
    p.set_defaults(func=cmd_factors_list)

# --- end of mappings, factors and KPIs -------------------------------------------------------


# --- the parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from esg_workbench import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = argparse.ArgumentParser(
        prog="esg-workbench",
        description="ESG Workbench: pull ESG activity data out of company systems into auditable KPIs. "
                    "Without a command, the desktop app opens.",
        parents=[common])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--workspace", metavar="URL",
                        help="a DuckDB file or postgresql:// URL (default: $ESG_WORKBENCH_WORKSPACE, "
                             "else workspace.duckdb in your data directory)")
    parser.add_argument("--organization", metavar="ORG",
                        help="the organization to work in on a shared PostgreSQL workspace "
                             "(default: $ESG_WORKBENCH_ORGANIZATION, else the only one your role belongs to)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="load the bundled sample ERP data into the workspace")
    p.set_defaults(func=cmd_demo)

    con = sub.add_parser("connector", help="add, list, validate, discover or remove connectors")
    csub = con.add_subparsers(dest="connector_command", metavar="ACTION", required=True)
    p = csub.add_parser("add", parents=[common], help="add a connector")
    p.add_argument("name")
    from esg_workbench.connectors.registry import connector_types

    p.add_argument("--type", required=True, metavar="TYPE",
                   help="one of: " + ", ".join(connector_types()))
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="host, port, database, schema, username, path; load_type, cursor_field, "
                        "chunk_strategy (time|id|auto), window (day|week|month), chunk_size, lookback")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input into the keyring")
    p.set_defaults(func=cmd_connector_add)
    p = csub.add_parser("list", parents=[common], help="list connectors")
    p.set_defaults(func=cmd_connector_list)
    p = csub.add_parser("validate", parents=[common], help="test the connection")
    p.add_argument("name")
    p.set_defaults(func=cmd_connector_validate)
    p = csub.add_parser("discover", parents=[common], help="discover tables, columns, keys and samples")
    p.add_argument("name")
    p.add_argument("--table", action="append", help="only this table (repeatable); samples load for these")
    p.add_argument("--sample-rows", type=int, default=100, metavar="N",
                   help="sample rows per table (default 100; 0 for none). For more than 50 tables, samples "
                        "load only for the tables named with --table, or later on demand")
    p.set_defaults(func=cmd_connector_discover)
    p = csub.add_parser("remove", parents=[common], help="remove a connector and its keyring entry")
    p.add_argument("name")
    p.set_defaults(func=cmd_connector_remove)

    p = sub.add_parser("sync", parents=[common], help="land a connector's tables in the workspace")
    p.add_argument("name")
    p.add_argument("--table", action="append", help="only this table (repeatable)")
    p.add_argument("--load-type", choices=["full", "delta"])
    p.add_argument("--chunk-size", type=int)
    p.add_argument("--chunk-strategy", choices=["time", "id", "auto"])
    p.add_argument("--window", choices=["day", "week", "month"])
    p.add_argument("--resume", action="store_true", help="continue the last unfinished sync")
    p.add_argument("--retry-failed", action="store_true", help="retry only the chunks that failed")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("status", parents=[common], help="checkpoints, chunk ledger and last runs of a connector")
    p.add_argument("name")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", parents=[common], help="sync runs")
    p.add_argument("--connector")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_logs)

    aud = sub.add_parser("audit", help="the audit chain")
    asub = aud.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = asub.add_parser("verify", parents=[common], help="recompute every hash; name the first broken entry")
    p.set_defaults(func=cmd_audit_verify)

    add_mapping_commands(sub, common)
    from esg_workbench.cli_schedule import add_commands as add_schedule_commands

    add_schedule_commands(sub, common)
    from esg_workbench.cli_health import add_commands as add_health_commands

    add_health_commands(sub, common)
    from esg_workbench.cli_workspace import add_commands as add_workspace_commands

    add_workspace_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.organization:  # for every workspace this process opens (the app, schedule run-due)
        from esg_workbench.workspace.database import ENV_ORGANIZATION

        os.environ[ENV_ORGANIZATION] = args.organization
    if not args.command:
        from esg_workbench.gui.app import run_app  # the desktop app

        return run_app(args.workspace)
    out = Output(args.json)
    from esg_workbench.core.errors import EsgError
    from esg_workbench.workspace import open_workspace

    try:
        if getattr(args, "opens_workspace", False):  # schedule run-due: a workspace the app holds is no error
            return args.func(args.workspace, args, out)
        workspace = open_workspace(args.workspace, organization_id=args.organization)
        try:
            return args.func(workspace, args, out)
        finally:
            workspace.close()
    except EsgError as exc:
        if args.json:
            print(json.dumps({"error": exc.message, "hint": exc.hint, "code": exc.code, "kind": type(exc).__name__}))
        else:
            print(f"Error: {exc.describe()}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # a bug: say so plainly, keep the traceback for the report
        log = _write_crash_log()
        message = f"Unexpected error ({type(exc).__name__}). Details were written to {log}; please report them."
        if args.json:
            print(json.dumps({"error": message, "kind": "InternalError"}))
        else:
            print(f"Error: {message}", file=sys.stderr)
        return EXIT_FAILED


def _write_crash_log() -> str:
    import traceback

    import platformdirs

    directory = platformdirs.user_log_path("esg-workbench", appauthor=False)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "crash.log"
    with path.open("a", encoding="utf-8") as f:
        f.write(f"--- {dt.datetime.now().isoformat()} esg-workbench {' '.join(sys.argv[1:])}\n")
        f.write(traceback.format_exc())
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
