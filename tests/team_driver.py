"""One analyst's session, for tests/test_team_concurrency.py: a real process that waits at
a barrier, then runs its steps one after the other and prints what each returned.

    python tests/team_driver.py BARRIER_FILE STEPS_JSON

Steps (a JSON list):
    ["cli", "--workspace", URL, "sync", "erp"]   esg_workbench.cli.main with these arguments
    ["save", URL, MAPPING_FILE, COMMENT]          store.save_mapping of a mapping file

The driver imports everything first, writes BARRIER_FILE.ready-<pid>, then waits for
BARRIER_FILE itself: the test creates it when every driver is ready, so the processes
start their work within a few milliseconds of each other. Output: one JSON list of
{"step", "rc", "stdout", "stderr", "seconds"} on standard output.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

from esg_workbench import cli
from esg_workbench.mapping import store
from esg_workbench.workspace import open_workspace


def run_step(step: list[str]) -> dict:
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if step[0] == "cli":
            rc = cli.main(step[1:])
        elif step[0] == "save":
            _, url, path, comment = step
            ws = open_workspace(url)
            try:
                saved = store.save_mapping(ws, store.read_mapping_file(path), comment=comment)
                print(json.dumps({"version": saved.version}))
                rc = 0
            finally:
                ws.close()
        else:
            raise SystemExit(f"unknown step {step[0]!r}")
    return {"step": step, "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(),
            "seconds": round(time.monotonic() - started, 2)}


def main() -> int:
    barrier, steps = Path(sys.argv[1]), json.loads(sys.argv[2])
    Path(f"{barrier}.ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while not barrier.exists():
        if time.monotonic() > deadline:
            print(json.dumps([{"step": ["barrier"], "rc": 99, "stdout": "", "stderr": "barrier never opened"}]))
            return 99
        time.sleep(0.002)
    print(json.dumps([run_step(step) for step in steps]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
