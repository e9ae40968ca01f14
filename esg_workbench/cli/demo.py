"""`esg-workbench demo`: the bundled sample ERP data, landed, mapped and aggregated."""

from __future__ import annotations

from esg_workbench.cli.output import EXIT_FAILED, Output


def cmd_demo(ws, args, out: Output) -> int:
    from esg_workbench import demo

    summary = demo.run_demo(ws, progress=out.info)
    out.emit(summary, demo.describe(summary))
    return 0 if summary["status"] == "success" else EXIT_FAILED


def add_commands(sub, common) -> None:
    p = sub.add_parser("demo", parents=[common], help="load the bundled sample ERP data into the workspace")
    p.set_defaults(func=cmd_demo)
