"""`esg-workbench audit verify [--anchor ENTRIES:HASH]` and `esg-workbench audit anchor`."""

from __future__ import annotations

from esg_workbench.cli.output import EXIT_FAILED, Output


def _head(head) -> dict | None:
    return None if head is None else {"entries": head.entries, "last_hash": head.last_hash, "anchor": str(head)}


def cmd_audit_verify(ws, args, out: Output) -> int:
    from esg_workbench.audit import chain

    anchor = chain.Head.parse(args.anchor) if args.anchor else None  # a bad anchor: refused before reading
    result = chain.verify(ws, anchor=anchor)
    out.emit({"ok": result.ok, "entries": result.entries, "first_bad_id": result.first_bad_id,
              "reason": result.reason, "head": _head(result.head), "anchor": _head(result.anchor),
              "organization": ws.organization_id}, result.describe())
    return 0 if result.ok else EXIT_FAILED


def cmd_audit_anchor(ws, args, out: Output) -> int:
    from esg_workbench.audit import chain

    head = chain.anchor(ws)
    out.emit({**_head(head), "organization": ws.organization_id},
             f"{head}\n(the audit chain's head: {head.entries} entries, last hash {head.last_hash[:12]}...; "
             f"write it down, then check later with: esg-workbench audit verify --anchor {head})")
    return 0


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("audit",)


def add_commands(sub, common) -> None:
    aud = sub.add_parser("audit", help="the audit chain")
    asub = aud.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = asub.add_parser("verify", parents=[common],
                        help="recompute every hash; name the first broken entry; compare with the recorded head")
    p.add_argument("--anchor", metavar="ENTRIES:HASH",
                   help="a head written down earlier (audit anchor, or a KPI export's audit_chain_head): "
                        "the chain must still continue it")
    p.set_defaults(func=cmd_audit_verify)
    p = asub.add_parser("anchor", parents=[common],
                        help="print the chain's head (ENTRIES:HASH) to write down for a later verify --anchor")
    p.set_defaults(func=cmd_audit_anchor)
