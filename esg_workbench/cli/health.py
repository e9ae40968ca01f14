"""CLI: `esg-workbench health` and `esg-workbench alerts set-webhook|clear-webhook|show|test`.

Registered in cli/entry.py (COMMAND_GROUPS). The webhook URL usually embeds a token:
`set-webhook` reads it from standard input when no URL is given (kept out of the shell
history), and nothing here ever prints more of it than its scheme and host.
"""

from __future__ import annotations

import sys

from esg_workbench.cli.output import EXIT_FAILED, Output, table


def cmd_health(ws, args, out: Output) -> int:
    from esg_workbench.sync.health import connector_health

    health = connector_health(ws)
    rows = []
    for h in health:
        rows.append([
            h.name, h.type,
            f"{h.last_success_at:%Y-%m-%d %H:%M}" if h.last_success_at else "never",
            h.lag_text, h.last_run_status or "-",
            f"{h.failure_streak} failed in a row" if h.failure_streak else "0",
            h.failed_chunks_waiting,
            " ".join(_spark(h)) or "-",
        ])
    text = (table(rows, ["connector", "type", "last success", "lag", "last run", "failures",
                          "failed chunks", "rows per sync (oldest first)"])
            if rows else "No connectors yet. Add one with: esg-workbench connector add NAME --type postgres ...")
    attention = [h for h in health if h.needs_attention]
    for h in attention:
        if h.last_error:
            text += f"\n{h.name}: {h.last_error.splitlines()[0]}"
        if h.failed_chunks_waiting:
            text += f"\n{h.name}: retry the failed chunks with: esg-workbench sync {h.name} --retry-failed"
            text += " (or review them one by one: esg-workbench chunks list)"
        if h.secret_overdue:
            text += (f"\n{h.name}: the secret is due for rotation ({h.secret_text}): "
                     f"esg-workbench connector set-password {h.name} --password-stdin")
    secrets = [h for h in health if h.has_secret]
    if secrets:
        text += "\nSecrets: " + "; ".join(f"{h.name} {h.secret_text}" for h in secrets)
    out.emit([h.to_json() for h in health], text)
    return 0


def _spark(h) -> list[str]:
    """The last few runs as compact row counts; a failed run shows '!'."""
    marks = []
    for point in h.rows_per_sync[-8:]:
        mark = f"{point.rows_written:,}"
        if point.status in ("failed", "partial_success"):
            mark += "!"
        marks.append(mark)
    return marks


def cmd_alerts_set_webhook(ws, args, out: Output) -> int:
    from esg_workbench import alerts

    url = args.url
    if url in (None, "-"):
        out.info("Paste the webhook URL, then press Enter:")
        url = sys.stdin.readline().strip()
    alerts.set_webhook_url(ws, url)
    where = alerts.describe_url(url)
    out.emit({"webhook": where}, f"Webhook set to {where} (the full URL is kept in the keyring). "
                                 f"Send a test alert with: esg-workbench alerts test")
    return 0


def cmd_alerts_clear_webhook(ws, args, out: Output) -> int:
    from esg_workbench import alerts

    alerts.set_webhook_url(ws, None)
    out.emit({"webhook": None}, "Webhook removed: failed syncs no longer post alerts for this workspace.")
    return 0


def cmd_alerts_show(ws, args, out: Output) -> int:
    from esg_workbench import alerts

    from esg_workbench.core.errors import KeyringUnavailable

    try:
        url = alerts.webhook_url(ws)
    except KeyringUnavailable as exc:
        if not alerts.webhook_was_set(ws):  # nothing to read: the keyring's state does not matter
            url = None
        else:
            raise KeyringUnavailable("A webhook was set for this workspace, but it cannot be read: " + exc.message,
                                     hint=exc.hint) from None
    where = alerts.describe_url(url) if url else None
    out.emit({"webhook": where, "organization": ws.organization_id, "workspace": ws.display_url},
             f"Webhook: {where} (path and token hidden)" if where
             else "No webhook set. Set one with: esg-workbench alerts set-webhook  (then paste the URL)")
    return 0


def cmd_alerts_test(ws, args, out: Output) -> int:
    from esg_workbench import alerts

    url = alerts.webhook_url(ws)
    if not url:
        out.emit({"delivered": False, "error": "no webhook set"},
                 "No webhook set. Set one with: esg-workbench alerts set-webhook")
        return EXIT_FAILED
    where = alerts.describe_url(url)
    out.info(f"Sending a test alert to {where} ...")
    error = alerts.dispatch(ws, alerts.sample_alert(ws))
    if error:
        out.emit({"delivered": False, "webhook": where, "error": error}, f"Not delivered: {error}")
        return EXIT_FAILED
    out.emit({"delivered": True, "webhook": where}, f"Test alert delivered to {where}.")
    return 0


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("health", "alerts")


def add_commands(sub, common) -> None:
    p = sub.add_parser("health", parents=[common],
                       help="every connector: last success, data lag, failure streak, failed chunks, rows per sync")
    p.set_defaults(func=cmd_health)

    al = sub.add_parser("alerts", help="the webhook that failed and partial syncs post to")
    asub = al.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    p = asub.add_parser("set-webhook", parents=[common],
                        help="set the webhook URL (http/https) of this workspace; without URL (or '-') it is "
                             "read from standard input, out of the shell history")
    p.add_argument("url", nargs="?", metavar="URL", help="the webhook URL; without it (or with -) it is read from standard input")
    p.set_defaults(func=cmd_alerts_set_webhook)
    p = asub.add_parser("clear-webhook", parents=[common], help="remove the webhook")
    p.set_defaults(func=cmd_alerts_clear_webhook)
    p = asub.add_parser("show", parents=[common], help="the webhook's scheme and host (never its token)")
    p.set_defaults(func=cmd_alerts_show)
    p = asub.add_parser("test", parents=[common], help="send a sample alert and report the delivery")
    p.set_defaults(func=cmd_alerts_test)
