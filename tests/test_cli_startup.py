"""The CLI starts fast: building its parser (what `esg-workbench --help` and every command
pay first) imports none of the heavy libraries the commands use. Checked on the modules
a fresh interpreter holds, not on time (the machine's load would make that a coin toss)."""

from __future__ import annotations

import json
import subprocess
import sys

# Imported by the commands that need them, not by the parser: SQLAlchemy (and through it
# the workspace), the keyring, the databases' drivers, Arrow and Qt.
HEAVY = ("sqlalchemy", "keyring", "duckdb", "pyarrow", "psycopg", "adbc_driver_postgresql", "PySide6")

PROBE = """
import json, sys
from esg_workbench.cli.entry import build_parser
parser = build_parser()
{action}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_modules_after(action: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(action=action, heavy=HEAVY)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_building_the_parser_imports_no_heavy_library():
    assert heavy_modules_after("") == []


def test_parsing_a_sync_command_imports_no_heavy_library():
    # parsing (and rejecting) arguments happens before any workspace is opened
    assert heavy_modules_after("parser.parse_args(['sync', 'erp', '--table', 't', '--json'])") == []


def test_help_lists_the_schedule_actions_without_the_scheduler():
    done = subprocess.run([sys.executable, "-m", "esg_workbench", "schedule", "add", "--help"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "{sync,retry_failed,discover}" in done.stdout
    from esg_workbench.sync import schedule_plan, scheduler

    assert scheduler.ACTIONS == schedule_plan.ACTIONS == ("sync", "retry_failed", "discover")


def test_each_group_names_the_commands_it_adds():
    # a command's parser is built with its group only, found by these names
    import argparse

    from esg_workbench.cli.entry import COMMAND_GROUPS

    for group in COMMAND_GROUPS:
        sub = argparse.ArgumentParser().add_subparsers(dest="command")
        group.add_commands(sub, argparse.ArgumentParser(add_help=False))
        assert tuple(sub.choices) == group.COMMANDS, group.__name__


def test_a_command_is_parsed_as_the_whole_parser_parses_it(capsys):
    import pytest

    from esg_workbench.cli.entry import build_parser, parse_arguments

    whole = build_parser()
    for argv in (["--json", "--workspace", "w.duckdb", "sync", "erp", "--table", "t", "--json"],
                 ["--workspace=w.duckdb", "instruments", "list"], ["--organization", "acme", "status", "erp"],
                 ["mapping", "list"], ["alerts", "show"], ["--create", "demo"]):
        assert parse_arguments(argv) == whole.parse_args(argv), argv
    # what the group's parser cannot parse, the whole parser reports, as always
    for argv in (["sync"], ["bogus"], ["--workspace", "status", "sync"], ["sync", "erp", "--load-type", "odd"]):
        with pytest.raises(SystemExit) as exited:
            parse_arguments(argv)
        assert exited.value.code == 2
        mine = capsys.readouterr().err
        with pytest.raises(SystemExit):
            whole.parse_args(argv)
        assert mine == capsys.readouterr().err, argv


def test_a_command_word_is_found_past_the_top_level_options():
    from esg_workbench.cli.entry import _command_word

    assert _command_word(["--json", "--workspace", "sync", "--organization", "o", "status", "x"]) == "status"
    assert _command_word(["--workspace=w", "sync"]) == "sync"
    assert _command_word(["--help", "sync"]) is None  # the top-level help lists every command
    assert _command_word(["--json"]) is None
