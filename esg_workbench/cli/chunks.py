"""`esg-workbench chunks list|retry|ignore|reopen`: failed chunks as a review queue
(sync/review.py)."""

from __future__ import annotations

from esg_workbench.cli.output import Output, command_group, table
from esg_workbench.cli.runs import cancel_on_ctrl_c, progress_printer, retry_delays, sync_exit


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "?"


def _rows(chunks) -> str:
    return table([[c.id, c.connector, c.stream, c.range_text, c.attempts, _when(c.first_failed_at),
                   _when(c.last_failed_at), "ignored: " + (c.review_reason or "") if c.ignored else "unreviewed",
                   (c.error or "").splitlines()[0][:70] if c.error else ""] for c in chunks],
                 ["id", "connector", "table", "range", "attempts", "first failure", "last failure", "review", "error"])


def cmd_chunks_list(ws, args, out: Output) -> int:
    from esg_workbench.sync import review

    chunks = review.list_failed(ws, connector=args.connector, unreviewed_only=args.unreviewed)
    text = _rows(chunks) if chunks else ("No unreviewed failed chunks." if args.unreviewed else "No failed chunks.")
    if chunks:
        text += ("\nRetry: esg-workbench chunks retry ID [ID ...]   "
                 "Ignore: esg-workbench chunks ignore ID [ID ...] --reason TEXT")
    out.emit([c.to_json() for c in chunks], text)
    return 0


def cmd_chunks_retry(ws, args, out: Output) -> int:
    from esg_workbench.sync import review

    with cancel_on_ctrl_c(out) as cancel:
        results = review.retry(ws, args.ids, retry_delays=retry_delays(), on_progress=progress_printer(out),
                               cancel=cancel)
    from esg_workbench.sync.scheduler import alert_for_result

    for result in results:  # a retry that fails alerts like any sync
        problem = alert_for_result(ws, result.connector, result)
        if problem:
            out.info(f"The alert could not be sent: {problem}")
    left = {c.id for c in review.list_failed(ws, ids=args.ids)}
    landed = [i for i in args.ids if i not in left]
    lines = [f"Run {r.run_id} of '{r.connector}': {r.status.value}, {r.rows_written:,} rows landed." for r in results]
    lines.append(f"Landed: {', '.join(map(str, landed)) or 'none'}."
                 + (f" Still failed: {', '.join(map(str, sorted(left)))}." if left else ""))
    out.emit({"runs": [{"run_id": r.run_id, "connector": r.connector, "status": r.status.value,
                        "rows_written": r.rows_written, "error": r.error} for r in results],
              "landed": landed, "still_failed": sorted(left)}, "\n".join(lines))
    worst = max(results, key=lambda r: sync_exit(r)) if results else None
    return 0 if not left else (sync_exit(worst) or 3)


def cmd_chunks_ignore(ws, args, out: Output) -> int:
    from esg_workbench.sync import review

    chunks = review.ignore(ws, args.ids, args.reason)
    out.emit([c.to_json() for c in chunks],
             f"Ignored {len(chunks)} chunk{'s' if len(chunks) != 1 else ''} ({args.reason.strip()}). "
             "Their rows stay missing, and the KPIs they feed stay flagged incomplete, until they land.")
    return 0


def cmd_chunks_reopen(ws, args, out: Output) -> int:
    from esg_workbench.sync import review

    chunks = review.reopen(ws, args.ids)
    out.emit([c.to_json() for c in chunks], f"{len(chunks)} chunk{'s' if len(chunks) != 1 else ''} unreviewed again.")
    return 0


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("chunks",)


def add_commands(sub, common) -> None:
    action = command_group(sub, "chunks", "failed chunks: list, retry, ignore with a reason", common)
    p = action("list", cmd_chunks_list, "failed chunks with their range, error, attempts and review")
    p.add_argument("--connector", help="only this connector's")
    p.add_argument("--unreviewed", action="store_true", help="only those nobody ignored yet")
    p = action("retry", cmd_chunks_retry, "retry the given failed chunks now")
    p.add_argument("ids", nargs="+", type=int, metavar="ID", help="ids of failed chunks to retry (see: esg-workbench chunks list)")
    p = action("ignore", cmd_chunks_ignore, "mark failed chunks ignored, with a reason (audited)")
    p.add_argument("ids", nargs="+", type=int, metavar="ID", help="ids of failed chunks to ignore (see: esg-workbench chunks list)")
    p.add_argument("--reason", required=True, help="why their rows may stay missing")
    p = action("reopen", cmd_chunks_reopen, "take back an ignore")
    p.add_argument("ids", nargs="+", type=int, metavar="ID", help="ids of ignored chunks to mark unreviewed again")
