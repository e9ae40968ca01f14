"""`esg-workbench audit verify`."""

from __future__ import annotations

from esg_workbench.cli.output import EXIT_FAILED, Output


def cmd_audit_verify(ws, args, out: Output) -> int:
    from esg_workbench.audit import chain

    result = chain.verify(ws)
    out.emit(result.__dict__, result.describe())
    return 0 if result.ok else EXIT_FAILED


def add_commands(sub, common) -> None:
    aud = sub.add_parser("audit", help="the audit chain")
    asub = aud.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = asub.add_parser("verify", parents=[common], help="recompute every hash; name the first broken entry")
    p.set_defaults(func=cmd_audit_verify)
