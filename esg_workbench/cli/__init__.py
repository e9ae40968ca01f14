"""esg-workbench: the desktop app (no arguments) and the same operations headless.

Every command takes --json (before or after the command) for machine-readable output and
exits non-zero on failure (1: failed, 2: bad usage, 3: a sync ended partial_success,
4: cancelled).

    output.py     exit codes, Output (text or JSON), tables: what every group shares
    runs.py       running syncs in a terminal: progress lines, Ctrl+C, retry backoff
    entry.py      the parser that joins the groups, main() and its error handling
    connector.py, sync.py, audit.py, mapping.py, schedule.py, health.py, workspace.py:
                  one command group each, with add_commands(sub, common)

A command module imports only output.py and runs.py from this package, never another
command module.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The console script `esg-workbench` (imports the command groups on first use)."""
    from esg_workbench.cli.entry import main as run

    return run(argv)
