"""The parser that joins the command groups, and main(): open the workspace, run the
command, turn errors into a message and an exit code."""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import sys

from esg_workbench.cli import (COMMAND_GC_THRESHOLD, INTERPRETER_GC_THRESHOLD, audit, chunks, connector, demo, health,
                               instruments, mapping, schedule, sites, sync, tables, workspace)
from esg_workbench.cli.output import EXIT_CANCELLED, EXIT_FAILED, EXIT_USAGE, Output, UsageError

# Each module adds its commands (its COMMANDS) to the parser with add_commands(sub,
# common); the order is the order of `esg-workbench --help`.
COMMAND_GROUPS = (demo, connector, tables, sync, chunks, audit, mapping, sites, instruments, schedule, health,
                  workspace)

# the top-level options that take a value (build_parser)
_VALUE_OPTIONS = ("--workspace", "--organization")


class _NotThisParser(Exception):
    """A parser of one command group met arguments it cannot parse: the whole parser
    parses them again, and reports what is wrong as it always has."""


class _GroupParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _NotThisParser(message)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `command`, of that command's group only, if it
    names a command (building the whole parser, about 70 parsers, costs a command
    0.02-0.04 s, a no-op sync about 5% of its CPU). Such a parser raises _NotThisParser
    where the whole one would exit with a usage error."""
    from esg_workbench import __version__

    groups = [g for g in COMMAND_GROUPS if command in g.COMMANDS] if command else []
    parser_class = _GroupParser if groups else argparse.ArgumentParser

    # --json works before the command (esg-workbench --json sync erp) and after it; the
    # command's copy has no default, so it cannot reset a --json given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    parser = parser_class(
        prog="esg-workbench",
        description="ESG Workbench: pull ESG activity data out of company systems into auditable KPIs. "
                    "Without a command, the desktop app opens.")
    parser.add_argument("--json", action="store_true", help="machine-readable output (for every command)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--workspace", metavar="URL",
                        help="a DuckDB file or postgresql:// URL (default: $ESG_WORKBENCH_WORKSPACE, "
                             "else workspace.duckdb in your data directory)")
    parser.add_argument("--organization", metavar="ORG",
                        help="the organization to work in on a shared PostgreSQL workspace "
                             "(default: $ESG_WORKBENCH_ORGANIZATION, else the only one your role belongs to)")
    parser.add_argument("--create", action="store_true",
                        help="make a new DuckDB workspace (and its folder) if --workspace names none yet; "
                             "without it, a --workspace in a folder that does not exist is refused")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in groups or COMMAND_GROUPS:
        group.add_commands(sub, common)
    return parser


def _command_word(argv: list[str]) -> str | None:
    """The word in `argv` that names the command, when argv is well formed (None when
    help is asked for first or there is no command). A wrong guess costs only time:
    build_parser builds the whole parser for a word that names no command, and main()
    parses again with it what the group's parser could not."""
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help"):
            return None  # the top-level help lists every command
        if word in _VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line as the whole parser does, building only the command's group."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_word(argv))
    if isinstance(parser, _GroupParser):
        try:
            return parser.parse_args(argv)
        except _NotThisParser:
            parser = build_parser()
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    from esg_workbench.workspace.database import ENV_WORKSPACE

    try:
        _check_workspace_location(args.workspace or os.environ.get(ENV_WORKSPACE), args.create)
    except UsageError as exc:
        _report(args, exc)
        return EXIT_USAGE
    if args.organization:  # for every workspace this process opens (the app, schedule run-due)
        from esg_workbench.workspace.database import ENV_ORGANIZATION

        os.environ[ENV_ORGANIZATION] = args.organization
    if not args.command:
        from esg_workbench.gui.app import run_app  # the desktop app

        gc.set_threshold(*INTERPRETER_GC_THRESHOLD)  # it keeps its own tuning (gui/)
        return run_app(args.workspace)
    gc.set_threshold(*COMMAND_GC_THRESHOLD)  # (main() of the package set it already)
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
        _report(args, exc)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # `esg-workbench ... | head`: the reader has all it wants
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python flushes stdout at exit)
        return 0
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named: treat as a bug
            return _unexpected(args, exc)
        _report(args, EsgError(f"{exc.filename}: {_FILE_PROBLEMS.get(type(exc), exc.strerror or 'cannot be read')}.",
                               hint="Check the path (relative paths start in the current folder)."))
        return EXIT_FAILED
    except Exception as exc:  # a bug: say so plainly, keep the traceback for the report
        return _unexpected(args, exc)


#: plain words for the file errors a user causes by naming a wrong path
_FILE_PROBLEMS = {FileNotFoundError: "no such file or folder", IsADirectoryError: "is a folder, not a file",
                  NotADirectoryError: "a part of the path is not a folder", PermissionError: "permission denied"}


def _report(args, exc) -> None:
    if args.json:
        print(json.dumps({"error": exc.message, "hint": exc.hint, "code": exc.code, "kind": type(exc).__name__}))
    else:
        print(f"Error: {exc.describe()}", file=sys.stderr)


def _unexpected(args, exc: Exception) -> int:
    log = _write_crash_log()
    message = f"Unexpected error ({type(exc).__name__}). Details were written to {log}; please report them."
    if args.json:
        print(json.dumps({"error": message, "kind": "InternalError"}))
    else:
        print(f"Error: {message}", file=sys.stderr)
    return EXIT_FAILED


def _check_workspace_location(url: str | None, create: bool) -> None:
    """A DuckDB path in a folder that does not exist is most likely a typo: refuse it
    (instead of silently starting an empty workspace) unless --create asks for one."""
    from pathlib import Path

    if not url or ("://" in url and not url.startswith("duckdb:///")):
        return  # the default workspace, or a server URL
    path = Path(url.removeprefix("duckdb:///")).expanduser()
    if create or path.parent.is_dir():
        return
    raise UsageError(f"There is no folder {path.parent}, so there is no workspace {path.name} in it.",
                     hint="Check the --workspace path, or add --create to make a new workspace there.")


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
