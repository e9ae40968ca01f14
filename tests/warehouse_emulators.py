"""Emulators of the cloud warehouses, started by the tests on a free localhost port and
stopped after them:

* fakesnow (Snowflake) in server mode, from the project's environment (the `test`
  extra installs `fakesnow[server]`; it uses the same DuckDB 2.0 as the project).
* minilake (Databricks SQL Statement Execution API), from its own virtual environment
  `.venv-minilake` at the repository root (it pins another DuckDB); `.ci/run` creates
  it, or: `python -m venv .venv-minilake && .venv-minilake/bin/pip install minilake`.
  ESG_MINILAKE overrides the path of the `minilake` executable.

A missing emulator skips the tests, or fails them with ESG_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, port_open, service_missing

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Emulator:
    host: str
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _start(argv: list[str], name: str, env: dict | None = None, cwd: str | None = None,
           wait: float = 60.0) -> Emulator:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix=f"esg-{name}-", suffix=".log")[1])
    with open(log, "wb") as out:
        process = subprocess.Popen([*argv, "--host", "127.0.0.1", "--port" if name == "minilake" else "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if port_open("127.0.0.1", port):
            return Emulator("127.0.0.1", port, process, log)
        time.sleep(0.2)
    _stop(process)
    tail = log.read_text(errors="replace")[-2000:]
    service_missing(f"{name} (it did not start on port {port}: {tail.strip() or 'no output'})")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _executable(name: str, *candidates: Path) -> str | None:
    for path in candidates:
        if path and path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


@pytest.fixture(scope="session")
def fakesnow_server():
    """fakesnow in server mode; yields the Emulator (connect with account="fakesnow",
    host, port, protocol="http")."""
    try:
        import fakesnow  # noqa: F401
        import snowflake.connector  # noqa: F401
    except ImportError as exc:
        service_missing(f"fakesnow ({exc}; install the test extra)")
    exe = _executable("fakesnow", Path(sys.executable).parent / "fakesnow")
    if exe is None:
        service_missing("the fakesnow executable")
    emulator = _start([exe, "-s"], "fakesnow")
    yield emulator
    _stop(emulator.process)


@pytest.fixture(scope="session")
def minilake_server(tmp_path_factory):
    """minilake from its own environment; yields the Emulator."""
    exe = os.environ.get("ESG_MINILAKE") or _executable("minilake", ROOT / ".venv-minilake" / "bin" / "minilake")
    if exe is None:
        service_missing("minilake (create .venv-minilake: python -m venv .venv-minilake && "
                        ".venv-minilake/bin/pip install minilake)")
    data = tmp_path_factory.mktemp("minilake")
    env = {
        "MINILAKE_DATA_DIR": str(data),
        "MINILAKE_SERVICES": "sql_statements,sql_warehouses,unity_catalog",
        "MINILAKE_PERSIST": "0",
        "MINILAKE_MCP": "0",
        "MINILAKE_NOTEBOOK": "0",
    }
    emulator = _start([exe], "minilake", env=env, cwd=str(data))
    yield emulator
    _stop(emulator.process)
