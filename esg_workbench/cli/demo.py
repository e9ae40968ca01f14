"""`esg-workbench demo`: the bundled sample ERP data, landed, mapped and aggregated."""

from __future__ import annotations

import sys

from esg_workbench.cli.output import EXIT_FAILED, Output


def cmd_demo(ws, args, out: Output) -> int:
    from esg_workbench import demo

    # in a terminal every step shows; in a log or pipe only the headlines (the indented
    # per-chunk lines would be some 200 lines that say nothing afterwards)
    progress = out.info if sys.stderr.isatty() else _headlines(out.info)
    summary = demo.run_demo(ws, progress=progress)
    out.emit(summary, demo.describe(summary))
    return 0 if summary["status"] == "success" else EXIT_FAILED


def _headlines(say):
    def show(text: str) -> None:
        if not text.startswith(" "):
            say(text)
    return show


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("demo",)


def add_commands(sub, common) -> None:
    p = sub.add_parser("demo", parents=[common], help="load the bundled sample ERP data into the workspace")
    p.set_defaults(func=cmd_demo)
