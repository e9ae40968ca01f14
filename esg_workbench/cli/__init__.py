"""esg-workbench: the desktop app (no arguments) and the same operations headless.

Every command takes --json (before or after the command) for machine-readable output and
exits non-zero on failure (1: failed, 2: bad usage, 3: a sync ended partial_success,
4: cancelled).

    output.py     exit codes, Output (text or JSON), tables: what every group shares
    runs.py       running syncs in a terminal: progress lines, Ctrl+C, retry backoff
    entry.py      the parser that joins the groups, main() and its error handling
    connector.py, sync.py, audit.py, mapping.py, schedule.py, health.py, workspace.py:
                  one command group each, with add_commands(sub, common) and the names
                  of the commands it adds (COMMANDS: a command builds its group's parser only)

A command module imports only output.py and runs.py from this package, never another
command module.
"""

from __future__ import annotations

import atexit
import gc

# Python's cyclic collector runs after every 700 new container objects: the imports of a
# command (SQLAlchemy, the drivers, DuckDB, Arrow) made about 160 collections, and
# importing the command groups and building the parser alone about 90 (20-30 ms of a
# no-op sync's 0.7 s of CPU). Every 10,000 is still often for a long command. The desktop
# app keeps the interpreter's setting and its own tuning (gui/).
COMMAND_GC_THRESHOLD = (10_000, 20, 100)
INTERPRETER_GC_THRESHOLD = gc.get_threshold()


def main(argv: list[str] | None = None) -> int:
    """The console script `esg-workbench` (imports the command groups on first use)."""
    _freeze_at_exit()
    gc.set_threshold(*COMMAND_GC_THRESHOLD)  # before the parser: entry.main restores it for the app
    from esg_workbench.cli.entry import main as run

    return run(argv)


def _freeze_at_exit() -> None:
    """When the process ends, nothing it holds needs collecting: the interpreter's final
    collections walk every object the libraries made (0.15-0.45 s after a sync, measured),
    so they are moved out of the collector's sight first (gc.freeze). Registered with
    atexit, so a process that calls main() more than once (tests) frees as usual until
    its own end."""
    if not getattr(_freeze_at_exit, "registered", False):
        atexit.register(gc.freeze)
        _freeze_at_exit.registered = True
