"""`esg-workbench sync`, `status` and `logs`: landing a connector's tables and what the
runs did."""

from __future__ import annotations

import json

from esg_workbench.cli.output import Output, plain, table
from esg_workbench.cli.runs import cancel_on_ctrl_c, progress_printer, retry_delays, sync_exit


def _describe_sync(result) -> str:
    lines = [f"Sync of '{result.connector}' {result.status.value} in {result.seconds:.1f} s "
             f"(run {result.run_id}): {result.rows_written:,} rows landed."]
    for s in result.streams:
        line = f"  {s.stream} -> {s.raw_table}: {s.rows_written:,} rows, chunks {s.chunks_done}/{s.chunks_planned}"
        if s.chunks_failed:
            line += f", {s.chunks_failed} failed"
        if s.rows_deleted:
            line += f", {s.rows_deleted:,} deleted in the source"
        if s.drift:
            line += f"; schema drift: {plain(s.drift)}"
        if s.error:
            line += f"\n    error: {s.error}"
        for w in s.warnings:
            line += f"\n    note: {w}"
        lines.append(line)
    lines += [f"  mapped: {note}" for note in result.mapped]
    if result.error and result.status.value != "success":
        lines.append(result.error)
    return "\n".join(lines)



def cmd_sync(ws, args, out: Output) -> int:
    from esg_workbench.sync.engine import SyncEngine, SyncRequest

    with cancel_on_ctrl_c(out) as cancel:
        engine = SyncEngine(ws, cancel=cancel, on_progress=progress_printer(out), retry_delays=retry_delays())
        result = engine.run(SyncRequest(
            connector=args.name, tables=args.table, load_type=args.load_type, chunk_size=args.chunk_size,
            chunk_strategy=args.chunk_strategy, window=args.window, resume=args.resume,
            retry_failed=args.retry_failed, detect_deletes=args.detect_deletes))
    if result.status.alerted:  # (importing the scheduler costs a sync that needs no alert 0.01-0.02 s)
        from esg_workbench.sync.scheduler import alert_for_result

        problem = alert_for_result(ws, result.connector, result)  # as the app and schedule run-due do
        if problem:
            out.info(f"The alert could not be sent: {problem}")
    out.emit({"run_id": result.run_id, "status": result.status.value, "seconds": result.seconds,
              "rows_written": result.rows_written, "rows_deleted": sum(s.rows_deleted for s in result.streams),
              "error": result.error, "mapped": result.mapped,
              "streams": [s.__dict__ for s in result.streams]}, _describe_sync(result))
    return sync_exit(result)


def cmd_status(ws, args, out: Output) -> int:
    from esg_workbench.sync import operations

    status = operations.connector_status(ws, args.name)
    lines = [f"{status['connector']} ({status['type']}): {status['status']}"]
    if status["status_message"]:
        lines.append(f"  {status['status_message']}")
    lines.append("Streams:")
    for s in status["streams"]:
        lines.append(f"  {s['stream']} -> {s['raw_table']}: checkpoint {_checkpoint(s)}"
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


def _checkpoint(stream: dict) -> str:
    if stream["last_cursor"] is None and stream["last_row_id"] is None:
        return "none yet"
    parts = []
    if stream["last_cursor"] is not None:
        parts.append(f"cursor {plain(stream['last_cursor'])}")
    if stream["last_row_id"] is not None:
        parts.append(f"key {plain(stream['last_row_id'])}")
    return ", ".join(parts)


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
    out.emit(runs, table([[r["id"], r["connector"], r["status"],
                           r["mode"] + (f", retry of {r['retry_of']}" if r.get("retry_of") else ""), f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
                            r["finished_at"] and f"{r['finished_at']:%H:%M:%S}", r["items_read"], r["items_written"],
                            (r["error"] or "").splitlines()[0][:80] if r["error"] else ""] for r in runs],
                          ["run", "connector", "status", "mode", "started", "finished", "read", "written", "error"])
             if runs else "No sync runs yet.")
    return 0


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("sync", "status", "logs")


def add_commands(sub, common) -> None:
    p = sub.add_parser("sync", parents=[common], help="land a connector's tables in the workspace")
    p.add_argument("name", help="the connector's name (see: esg-workbench connector list)")
    p.add_argument("--table", action="append", help="only this table (repeatable)")
    p.add_argument("--load-type", choices=["full", "delta"], help="override the connector's load type for this run")
    p.add_argument("--chunk-size", type=int, metavar="ROWS", help="rows per chunk for this run (default: the connector's)")
    p.add_argument("--chunk-strategy", choices=["time", "id", "auto"],
                   help="cut the tables by time windows, id ranges, or choose by table size")
    p.add_argument("--window", choices=["day", "week", "month"], help="size of a time window (time strategy)")
    p.add_argument("--resume", action="store_true", help="continue the last unfinished sync")
    p.add_argument("--retry-failed", action="store_true", help="retry only the chunks that failed")
    p.add_argument("--detect-deletes", action="store_true",
                   help="after each delta load, look for rows deleted in the source now (keys only) and mark "
                        "them with _esg_deleted_at")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("status", parents=[common], help="checkpoints, chunk ledger and last runs of a connector")
    p.add_argument("name", help="the connector's name (see: esg-workbench connector list)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", parents=[common], help="sync runs")
    p.add_argument("--connector", metavar="NAME", help="only this connector's runs")
    p.add_argument("--limit", type=int, default=20, help="how many runs, newest first (default 20)")
    p.set_defaults(func=cmd_logs)
