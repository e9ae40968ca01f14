"""`esg-workbench schedule ...`: scheduled jobs from the command line, and `run-due` for
OS schedulers (cron, Windows Task Scheduler, launchd) on machines where the app is not open."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from esg_workbench.cli.output import EXIT_CANCELLED, EXIT_FAILED, EXIT_PARTIAL, Output, table
from esg_workbench.cli.runs import cancel_on_ctrl_c, progress_printer, retry_delays

APP_RUNS_DUE_JOBS = ("The workspace is open in ESG Workbench, which runs due jobs itself; "
                     "nothing was run by this command.")


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z") if moment else ""


def _job_data(job, upcoming: int = 0) -> dict[str, Any]:
    data = {
        "name": job.name, "connector": job.connector, "action": job.action, "cron": job.cron,
        "description": job.description, "timezone": job.timezone, "enabled": job.enabled,
        "options": job.options, "next_run_at": job.next_run_local, "next_run_at_utc": job.next_run_at,
        "last_run_at_utc": job.last_run_at, "last_status": job.last_status, "last_message": job.last_message,
        "last_run_id": job.last_run_id, "priority": job.priority, "runs_after": job.depends_on,
        "dependency_window_minutes": job.dependency_window_minutes,
        "dependency_accepts_partial": job.dependency_accepts_partial,
        "retry_attempts": job.retry_attempts, "retry_backoff_seconds": job.retry_backoff_seconds,
        "retry_due_at_utc": job.retry_due_at, "retry_attempt": job.retry_attempt,
    }
    if upcoming:
        data["next_runs"] = job.upcoming(upcoming) if job.enabled else []
    return data


def _options(args, current: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Job options from --table / --load-type; None when neither was given (keep as is)."""
    if not args.table and not args.load_type:
        return None
    options = dict(current or {})
    if args.table:
        options["tables"] = args.table
    if args.load_type:
        options["load_type"] = args.load_type
    return options


def _policy(args) -> dict[str, Any]:
    """Dependency, retry and priority settings given on the command line (None: as is)."""
    after = None
    if getattr(args, "no_after", False):
        after = []
    elif args.after:
        after = args.after
    return {"priority": args.priority, "depends_on": after, "dependency_window_minutes": args.after_window,
            "dependency_accepts_partial": args.accept_partial, "retry_attempts": args.retries,
            "retry_backoff_seconds": args.retry_backoff}


def cmd_schedule_add(ws, args, out: Output) -> int:
    from esg_workbench.sync import scheduler

    job = scheduler.add_job(ws, args.name, args.cron, args.connector, args.action, timezone=args.timezone,
                            enabled=not args.disabled, options=_options(args), **_policy(args))
    text = f"Added scheduled job '{job.name}': {scheduler.ACTION_WORDS[job.action]} of '{job.connector}', " \
           f"{job.description} ({job.timezone})."
    text += f" Next run: {_when(job.next_run_local)}." if job.enabled else " It is disabled."
    out.emit(_job_data(job), text)
    return 0


def cmd_schedule_list(ws, args, out: Output) -> int:
    from esg_workbench.sync import scheduler

    overview = scheduler.overview(ws)
    jobs = overview.jobs
    rows = [[j.name, j.connector, j.action, f"{j.cron}  ({j.description})",
             _when(j.next_run_local) if j.enabled else "disabled", j.last_status or "never run",
             ", ".join(j.depends_on), j.priority or "", overview.state.get(j.name, "")] for j in jobs]
    text = (table(rows, ["name", "connector", "action", "schedule", "next run", "last run", "after", "priority",
                         "now"]) if jobs else
            "No scheduled jobs yet. Add one with: esg-workbench schedule add NAME --connector C --cron \"0 2 * * *\"")
    if overview.chains:
        text += "\nChains: " + "; ".join(" -> ".join(c) for c in overview.chains)
    if jobs:
        text += "\nLimits: " + overview.limits.describe() + "."
    out.emit([{**_job_data(j), "now": overview.state.get(j.name, "")} for j in jobs], text)
    return 0


def cmd_schedule_limits(ws, args, out: Output) -> int:
    from esg_workbench.sync import scheduler
    from esg_workbench.workspace import schedule_slots

    if args.workspace_limit is None and args.per_host is None:
        limits = schedule_slots.get_limits(ws)
    else:
        current = schedule_slots.get_limits(ws)
        limits = scheduler.set_limits(
            ws, workspace=current.workspace if args.workspace_limit is None else args.workspace_limit,
            per_host=current.per_host if args.per_host is None else args.per_host)
    out.emit({"workspace": limits.workspace, "per_host": limits.per_host}, "Limits: " + limits.describe() + ".")
    return 0


def cmd_schedule_show(ws, args, out: Output) -> int:
    from esg_workbench.sync import scheduler

    job = scheduler.get_job(ws, args.name)
    data = _job_data(job, upcoming=5)
    lines = [f"{job.name}: {scheduler.ACTION_WORDS[job.action]} of '{job.connector}'"
             + ("" if job.enabled else " (disabled)"),
             f"  schedule: {job.cron} — {job.description}, time zone {job.timezone}"]
    if job.options:
        lines.append("  options: " + ", ".join(f"{k}={v}" for k, v in sorted(job.options.items())))
    if job.depends_on:
        lines.append(f"  runs after: {', '.join(job.depends_on)} (their "
                     + ("success or partial success" if job.dependency_accepts_partial else "success")
                     + f", within {job.dependency_window_minutes or 120} minutes of its time)")
    if job.priority:
        lines.append(f"  priority: {job.priority}")
    if job.retry_attempts:
        lines.append(f"  retries: {job.retry_attempts} after a failed or partial run, first after "
                     f"{job.retry_backoff_seconds} s, then doubling")
    if job.retry_due_at:
        lines.append(f"  retry pending: attempt {job.retry_attempt} at {job.retry_due_at:%Y-%m-%d %H:%M} UTC")
    if job.enabled:
        lines.append("  next runs:")
        lines += [f"    {_when(t)}" for t in data["next_runs"]]
    if job.last_status:
        lines.append(f"  last run: {job.last_status} at {job.last_run_at:%Y-%m-%d %H:%M} UTC"
                     + (f" (sync run {job.last_run_id})" if job.last_run_id else ""))
        if job.last_message:
            lines.append(f"    {job.last_message}")
    else:
        lines.append("  last run: never")
    out.emit(data, "\n".join(lines))
    return 0


def cmd_schedule_edit(ws, args, out: Output) -> int:
    from esg_workbench.sync import scheduler

    current = scheduler.get_job(ws, args.name)
    job = scheduler.update_job(ws, args.name, new_name=args.new_name, cron=args.cron, timezone=args.timezone,
                               connector=args.connector, action=args.action,
                               options=_options(args, current.options), **_policy(args))
    text = f"Updated '{job.name}': {scheduler.ACTION_WORDS[job.action]} of '{job.connector}', " \
           f"{job.description} ({job.timezone})."
    if job.enabled:
        text += f" Next run: {_when(job.next_run_local)}."
    out.emit(_job_data(job), text)
    return 0


def _cmd_set_enabled(enabled: bool):
    def command(ws, args, out: Output) -> int:
        from esg_workbench.sync import scheduler

        job = scheduler.set_enabled(ws, args.name, enabled)
        out.emit(_job_data(job), f"Enabled '{job.name}'. Next run: {_when(job.next_run_local)}." if enabled
                 else f"Disabled '{job.name}'. It will not run until it is enabled again.")
        return 0
    return command


def cmd_schedule_remove(ws, args, out: Output) -> int:
    from esg_workbench.sync import scheduler

    scheduler.remove_job(ws, args.name)
    out.emit({"removed": args.name}, f"Removed scheduled job '{args.name}'.")
    return 0


def _run_due_exit(outcomes) -> int:
    statuses = {o.status for o in outcomes}
    if "failed" in statuses:
        return EXIT_FAILED
    if "partial_success" in statuses:
        return EXIT_PARTIAL
    if "cancelled" in statuses:
        return EXIT_CANCELLED
    return 0


def _outcome_data(o) -> dict[str, Any]:
    return {"job": o.job_name, "connector": o.connector, "action": o.action, "status": o.status,
            "message": o.message, "run_id": o.run_id, "attempt": o.attempt or 1, "retry_of": o.first_run_id}


def cmd_schedule_run_due(workspace_url, args, out: Output) -> int:
    """Opens the workspace itself: a DuckDB file the app holds is not an error here."""
    from esg_workbench.core.errors import WorkspaceError
    from esg_workbench.workspace import open_workspace

    try:
        ws = open_workspace(workspace_url)
    except WorkspaceError as exc:
        if "lock" not in str(exc.__cause__ or "").lower():
            raise
        out.emit({"outcomes": [], "skipped": APP_RUNS_DUE_JOBS}, APP_RUNS_DUE_JOBS)
        return 0
    try:
        return _run_due(ws, args, out)
    finally:
        ws.close()


def _run_due(ws, args, out: Output) -> int:
    from esg_workbench.sync import scheduler

    if args.dry_run:
        due = scheduler.due_jobs(ws)
        out.emit({"due": [_job_data(j) for j in due]},
                 "\n".join(f"due: {j.name} ({scheduler.ACTION_WORDS[j.action]} of '{j.connector}'), "
                           f"slot {_when(j.next_run_local)}" for j in due) or "No job is due.")
        return 0
    with cancel_on_ctrl_c(out) as cancel:
        outcomes = scheduler.run_due(ws, cancel=cancel, on_progress=progress_printer(out),
                                     retry_delays=retry_delays(),
                                     on_waiting=lambda d: out.info(f"{d.job.name}: {d.reason}"))
    out.emit({"outcomes": [_outcome_data(o) for o in outcomes]},
             "\n".join(o.describe() for o in outcomes) or "No job is due.")
    return _run_due_exit(outcomes)


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("schedule",)


def add_commands(sub, common) -> None:
    from esg_workbench.sync.schedule_plan import ACTIONS  # not scheduler: --help stays free of SQLAlchemy

    sp = sub.add_parser("schedule", help="scheduled syncs: add, list, show, edit, enable, disable, remove, run-due")
    ssub = sp.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)

    def job_options(p, *, editing: bool) -> None:
        p.add_argument("--connector", required=not editing, help="the connector the job works on")
        p.add_argument("--cron", required=not editing, metavar="EXPR",
                       help='five fields: minute hour day-of-month month day-of-week, e.g. "0 2 * * *" '
                            "(every day at 02:00); or @hourly, @daily (@midnight), @weekly, @monthly, @yearly (@annually)")
        p.add_argument("--action", choices=ACTIONS, default=None if editing else "sync",
                       help="sync (default), retry_failed (only the failed chunks) or discover")
        p.add_argument("--timezone", metavar="ZONE",
                       help="IANA zone the times are read in, e.g. Europe/Berlin"
                            + ("" if editing else " (default: this machine's)"))
        p.add_argument("--table", action="append", help="only this table (repeatable)")
        p.add_argument("--load-type", choices=["full", "delta"], help="override the connector's load type")
        p.add_argument("--after", action="append", metavar="JOB",
                       help="run only after this job succeeded (repeatable); a cycle is refused")
        if editing:
            p.add_argument("--no-after", action="store_true", help="run after no other job")
        p.add_argument("--after-window", type=int, metavar="MINUTES",
                       help="how long before its time a predecessor's run counts, and how long it waits "
                            "for one after (default 120)")
        p.add_argument("--accept-partial", action=argparse.BooleanOptionalAction, default=None,
                       help="also run after a predecessor's partial success")
        p.add_argument("--priority", type=int, metavar="N",
                       help="-100..100 (default 0): among jobs due at once, higher runs first")
        p.add_argument("--retries", type=int, metavar="N",
                       help="run again up to N times after a failed or partial run (default 0)")
        p.add_argument("--retry-backoff", type=int, metavar="SECONDS",
                       help="wait before the first retry (default 300), doubled for each next one")

    p = ssub.add_parser("add", parents=[common], help="add a scheduled job")
    p.add_argument("name", help="the job's name")
    job_options(p, editing=False)
    p.add_argument("--disabled", action="store_true", help="add it switched off")
    p.set_defaults(func=cmd_schedule_add)
    p = ssub.add_parser("list", parents=[common], help="jobs with their schedule, next run and last outcome")
    p.set_defaults(func=cmd_schedule_list)
    p = ssub.add_parser("show", parents=[common], help="one job, with its next five run times")
    p.add_argument("name", help="the job's name")
    p.set_defaults(func=cmd_schedule_show)
    p = ssub.add_parser("edit", parents=[common], help="change a job (only what is given)")
    p.add_argument("name", help="the job's name")
    p.add_argument("--name", dest="new_name", metavar="NEW_NAME", help="rename the job")
    job_options(p, editing=True)
    p.set_defaults(func=cmd_schedule_edit)
    for verb, enabled in (("enable", True), ("disable", False)):
        p = ssub.add_parser(verb, parents=[common], help=f"{verb} a job")
        p.add_argument("name", help="the job's name")
        p.set_defaults(func=_cmd_set_enabled(enabled))
    p = ssub.add_parser("remove", parents=[common], help="remove a job")
    p.add_argument("name", help="the job's name")
    p.set_defaults(func=cmd_schedule_remove)
    p = ssub.add_parser("limits", parents=[common],
                        help="show or set how many scheduled syncs run at once (per workspace, per source host)")
    p.add_argument("--workspace-limit", type=int, metavar="N", help="at once in this workspace (0: no limit)")
    p.add_argument("--per-host", type=int, metavar="N", help="at once per source host (0: no limit)")
    p.set_defaults(func=cmd_schedule_limits)
    p = ssub.add_parser("run-due", parents=[common],
                        help="run the jobs that are due, then exit (for cron, Task Scheduler, launchd)")
    p.add_argument("--dry-run", action="store_true", help="only list the jobs that are due")
    p.set_defaults(func=cmd_schedule_run_due, opens_workspace=True)
